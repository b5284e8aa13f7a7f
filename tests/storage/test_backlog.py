"""Backpressure: a group-commit writer that falls behind says so, and says when it caught up.

    archive appends queued > 2 batches  -> storage.backlog.congested (client input pauses)
    back to <= 1 batch                  -> not congested; every `when_clear` callback runs once
"""

from __future__ import annotations

import asyncio

import pytest

from stockade.storage import Storage
from stockade.storage.backlog import WriteBacklog

HOST = "example.com"


def test_the_backlog_clears_only_when_every_writer_is_back_under_its_mark() -> None:
    backlog = WriteBacklog()
    resumed: list[str] = []
    backlog.when_clear(lambda: resumed.append("at once"))      # nothing over: runs now
    assert resumed == ["at once"]

    backlog.over("archive", True)
    backlog.over("journal", True)
    backlog.over("archive", True)                             # repeated: no second pause
    backlog.when_clear(lambda: resumed.append("a"))
    backlog.when_clear(lambda: resumed.append("b"))
    assert backlog.congested and backlog.pauses == 1

    backlog.over("archive", False)
    assert backlog.congested and resumed == ["at once"]        # the journal is still behind
    backlog.over("journal", False)
    assert not backlog.congested and resumed == ["at once", "a", "b"]
    backlog.over("journal", False)                            # repeated: nothing runs twice
    assert resumed == ["at once", "a", "b"]


async def test_archive_appends_past_two_batches_congest_until_the_writer_catches_up(storage: Storage) -> None:
    writer = storage.archive_files.writers[0]
    writer._max_batch, writer._high = 10, 20
    gate = asyncio.Event()
    commit = writer._commit

    async def held_commit(batch):       # the database is slow: nothing commits until the gate opens
        await gate.wait()
        await commit(batch)

    writer._commit = held_commit
    archive = storage.archive("mam")
    resumed = asyncio.Event()
    futures = [archive.append_nowait(HOST, "alice", f"<message id='{n}'/>") for n in range(20)]
    assert not storage.backlog.congested                       # two batches queued: still fine
    futures.append(archive.append_nowait(HOST, "alice", "<message id='20'/>"))
    assert storage.backlog.congested                           # one more: over the mark
    storage.backlog.when_clear(resumed.set)

    gate.set()
    await asyncio.wait_for(resumed.wait(), 30)
    assert not storage.backlog.congested
    await asyncio.gather(*futures)
    assert await archive.count(HOST, "alice") == 21            # nothing was dropped


async def test_a_failing_batch_still_clears_the_backlog(storage: Storage) -> None:
    writer = storage.archive_files.writers[0]
    writer._max_batch, writer._high = 5, 10
    gate = asyncio.Event()

    async def failing_write(*_args, **_kwargs):
        await gate.wait()
        raise OSError("disk I/O error")

    writer._db.write = failing_write
    archive = storage.archive("mam")
    futures = [archive.append_nowait(HOST, "alice", "<message/>") for _ in range(11)]
    assert storage.backlog.congested
    gate.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)      # the callers are told
    assert not storage.backlog.congested                       # and input is not paused forever


async def test_the_wal_is_checkpointed_beside_the_writer_every_so_many_rows(tmp_path) -> None:
    """Once the writers committed CHECKPOINT_AFTER_ROWS rows since the last time, the WAL is
    copied into the database file by a reader thread (the writer's own automatic checkpoint
    waits for 128 MiB); not after every batch, which would copy the same pages again and again."""
    import os

    from stockade.storage.engine import CHECKPOINT_AFTER_ROWS

    storage = await Storage.open(f"sqlite:///{tmp_path}/a.db")
    try:
        archive = storage.archive("mam")
        half = CHECKPOINT_AFTER_ROWS // 2
        await asyncio.gather(*[archive.append_nowait(HOST, "alice", "<message>%d</message>" % n)
                               for n in range(half)])
        assert storage._db._checkpointing is None                  # not yet: left in the WAL
        before = os.path.getsize(tmp_path / "a.db")
        await asyncio.gather(*[archive.append_nowait(HOST, "alice", "<message>%d</message>" % n)
                               for n in range(half, CHECKPOINT_AFTER_ROWS)])
        checkpointing = storage._db._checkpointing
        assert checkpointing is not None
        await checkpointing
        assert os.path.getsize(tmp_path / "a.db") > before       # the rows reached the database file
    finally:
        await storage.close()


async def test_a_large_wal_is_finished_by_the_writer_between_transactions(tmp_path, monkeypatch) -> None:
    """Once the WAL holds WAL_RESTART_BYTES, the background checkpoint is followed by a second
    one and a last one in the writer's thread, outside any transaction (SQLite refuses a
    checkpoint inside one), so that the WAL starts again; below the mark the writer is left alone."""
    from stockade.storage import engine

    storage = await Storage.open(f"sqlite:///{tmp_path}/a.db")
    db = storage._db
    runs: list[tuple[str, str, bool]] = []

    def spy(runner, who: str):
        original = runner.run

        async def run(fn, args, *, transaction: bool = True):
            runs.append((who, fn.__name__, transaction))
            return await original(fn, args, transaction=transaction)
        return run

    monkeypatch.setattr(db._reader, "run", spy(db._reader, "reader"))
    monkeypatch.setattr(db._writer, "run", spy(db._writer, "writer"))
    try:
        archive = storage.archive("mam")
        await archive.append(HOST, "alice", "<message>%s</message>" % ("x" * 2000))
        await db._checkpoint()                             # far below the default mark
        assert [r for r in runs if r[1] == "_passive_checkpoint"] == [("reader", "_passive_checkpoint", True)]

        runs.clear()
        monkeypatch.setattr(engine, "WAL_RESTART_BYTES", 1)
        await archive.append(HOST, "alice", "<message>more</message>")
        await db._checkpoint()
        assert [r for r in runs if r[1] == "_passive_checkpoint"] == [
            ("reader", "_passive_checkpoint", True), ("reader", "_passive_checkpoint", True),
            ("writer", "_passive_checkpoint", False)]
        await archive.append(HOST, "alice", "<message>after</message>")    # the writer still writes
        assert (await archive.count(HOST, "alice")) == 3
    finally:
        await storage.close()


async def test_the_writer_runs_a_checkpoint_only_outside_a_transaction(tmp_path) -> None:
    from stockade.storage.engine import _passive_checkpoint

    storage = await Storage.open(f"sqlite:///{tmp_path}/a.db")
    try:
        await storage.archive("mam").append(HOST, "alice", "<message/>")
        assert await storage._db._writer.run(_passive_checkpoint, (), transaction=False) >= 0
        try:
            await storage._db._writer.run(_passive_checkpoint, ())
        except Exception as exc:                               # SQLite: "database table is locked"
            assert "locked" in str(exc)
        else:
            raise AssertionError("a checkpoint inside the writer's transaction should fail")
    finally:
        await storage.close()


async def test_closing_waits_for_a_background_checkpoint_and_runs_nothing_after(tmp_path) -> None:
    """A checkpoint that starts as the storage closes (the last batch's) finishes before the
    database threads stop, and nothing restarts them afterwards: a transaction after close is
    refused, instead of starting threads that would take the stop signals meant for the old
    ones (close() then waited forever)."""
    import threading

    from stockade.storage import StorageError
    from stockade.storage.engine import CHECKPOINT_AFTER_ROWS

    storage = await Storage.open(f"sqlite:///{tmp_path}/a.db")
    db = storage._db
    await storage.archive("mam").append(HOST, "alice", "<message/>")
    db.checkpoint_soon(CHECKPOINT_AFTER_ROWS)           # starts one, as a full batch would
    checkpointing = db._checkpointing
    assert checkpointing is not None
    await asyncio.wait_for(storage.close(), timeout=60)
    assert checkpointing.done() and db._checkpointing is None
    with pytest.raises(StorageError, match="closed"):
        await db._reader.run(lambda conn: None, ())
    with pytest.raises(StorageError, match="closed"):
        await db._writer.run(lambda conn: None, ())
    assert not [t for t in threading.enumerate() if t.name.startswith("stockade-sqlite-") and t.is_alive()
                and getattr(t, "_target", None) is not None and t._target.__self__ in (db._reader, db._writer)]
