"""The archive's appends written by a process of their own (storage/writer_process.py): the same
results as the writer thread, one failed batch fails only itself, a process that dies is
replaced, and close() lets it finish."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from stockade.storage import Storage, StorageError

HOST = "example.com"


@pytest.fixture
async def storage(tmp_path: Path):
    opened = await Storage.open(f"sqlite:///{tmp_path / 'stockade.db'}", archive_process=True)
    try:
        yield opened
    finally:
        await opened.close()


def _process(storage: Storage):
    proc = storage._archive_process._proc
    assert proc is not None and proc.returncode is None
    return proc


async def test_appends_are_written_by_another_process_and_read_back_here(storage: Storage) -> None:
    archive = storage.archive("mam")
    items = await asyncio.gather(*[archive.append(HOST, f"user{n % 7}", f"<message>{n}</message>",
                                                  with_jid="bob@example.com", when=1000.0 + n) for n in range(3000)])
    assert _process(storage).pid != os.getpid()
    assert [i.id for i in items] == sorted(i.id for i in items) and len({i.id for i in items}) == 3000
    assert await archive.count(HOST, "user3") == len(range(3, 3000, 7))
    page = await archive.query(HOST, "user0", limit=2)
    assert [i.value for i in page] == ["<message>0</message>", "<message>7</message>"]
    # The owners the process created are known here now: later rows carry their ids.
    assert storage._archive_writer.owner_ids("mam")[(HOST, "user0")] > 0
    more = await archive.append(HOST, "user0", "<message>more</message>")
    assert more.id > items[-1].id
    assert storage.archive_batches_committed >= 2


async def test_a_batch_the_process_cannot_write_fails_alone(storage: Storage, tmp_path: Path) -> None:
    archive = storage.archive("mam")
    await archive.append(HOST, "alice", "<message>before</message>")
    with sqlite3.connect(tmp_path / "stockade.db") as conn:    # the database refuses one value
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON archive WHEN NEW.value = '<bad/>' "
                     "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END")
    with pytest.raises(StorageError, match="refused by the test trigger"):
        await archive.append(HOST, "alice", "<bad/>")
    after = await archive.append(HOST, "alice", "<message>after</message>")
    assert [i.value for i in await archive.query(HOST, "alice", limit=10)] == [
        "<message>before</message>", "<message>after</message>"]
    assert after.id > 0


async def test_a_process_that_died_is_replaced_by_the_next_batch(storage: Storage) -> None:
    archive = storage.archive("mam")
    await archive.append(HOST, "alice", "<message>1</message>")
    first = _process(storage)
    first.kill()
    await first.wait()
    await archive.append(HOST, "alice", "<message>2</message>")
    assert _process(storage).pid != first.pid
    assert await archive.count(HOST, "alice") == 2


async def test_a_process_that_dies_mid_batch_fails_that_batch_and_the_next_one_works(storage: Storage) -> None:
    archive = storage.archive("mam")
    await archive.append(HOST, "alice", "<message>1</message>")
    proc = _process(storage)
    os.kill(proc.pid, signal.SIGSTOP)              # it cannot answer...
    lost = asyncio.ensure_future(archive.append(HOST, "alice", "<message>2</message>"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not lost.done()
    proc.kill()                                    # ... and dies with the batch in flight
    with pytest.raises(StorageError, match="may or may not have been stored"):
        await asyncio.wait_for(lost, 30)
    await archive.append(HOST, "alice", "<message>3</message>")
    assert [i.value for i in await archive.query(HOST, "alice", limit=10)] == [
        "<message>1</message>", "<message>3</message>"]


async def test_close_commits_what_is_queued_and_the_process_exits(tmp_path: Path) -> None:
    storage = await Storage.open(f"sqlite:///{tmp_path / 'stockade.db'}", archive_process=True)
    archive = storage.archive("mam")
    await archive.append(HOST, "alice", "<message>first</message>")
    proc = _process(storage)
    for n in range(500):
        archive.append_nowait(HOST, "alice", f"<message>{n}</message>")
    await storage.close()
    assert proc.returncode == 0
    reopened = await Storage.open(f"sqlite:///{tmp_path / 'stockade.db'}")
    try:
        assert await reopened.archive("mam").count(HOST, "alice") == 501
    finally:
        await reopened.close()


async def test_the_process_checkpoints_the_wal_beside_its_writes(storage: Storage, tmp_path: Path) -> None:
    from stockade.storage.engine import CHECKPOINT_AFTER_ROWS

    archive = storage.archive("mam")
    await archive.append(HOST, "alice", "<message/>")
    before = os.path.getsize(tmp_path / "stockade.db")
    await asyncio.gather(*[archive.append_nowait(HOST, "alice", "<message>%d</message>" % n)
                           for n in range(CHECKPOINT_AFTER_ROWS)])
    # The checkpoint runs in a thread of the process, after the batch's answer: wait for the
    # file to grow (it stays as it was without a checkpoint: the writer's own waits for 128 MiB).
    for _ in range(600):
        if os.path.getsize(tmp_path / "stockade.db") > before:
            break
        await asyncio.sleep(0.05)
    assert os.path.getsize(tmp_path / "stockade.db") > before


async def test_only_a_sqlite_file_gets_a_process() -> None:
    storage = await Storage.open("sqlite:///:memory:", archive_process=True)
    try:
        assert storage._archive_process is None
        await storage.archive("mam").append(HOST, "alice", "<message/>")
        assert await storage.archive("mam").count(HOST, "alice") == 1
    finally:
        await storage.close()
