"""The archive in several SQLite files (storage/archive_files.py): each archive in the file of its
account's slot, everything readable and deletable from any process, and moves between files when
the number changes, finished after a crash without losing or doubling an item."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stockade.storage import Storage, StorageError
from stockade.storage import archive_files as archive_files_module
from stockade.storage.archive_files import account_slot, file_path
from stockade.storage.crypto import Keyring
from stockade.storage.engine import Database

NOW = 1_700_000_000.0
HOST = "example.com"
USERS = [f"user{n}" for n in range(24)]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "stockade.db")


def raw_count(path: str, sql: str = "SELECT count(*) FROM archive") -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


async def fill(storage: Storage) -> dict[str, list[tuple]]:
    """Items in two stores for every user, several with the same time; what each user's mam
    archive must read back as."""
    mam, offline = storage.archive("mam"), storage.archive("offline")
    for n, user in enumerate(USERS):
        for m in range(5):
            await mam.append(HOST, user, f"<message>{user} {m}</message>", when=NOW + m // 2,
                             with_jid=f"peer{m}@{HOST}", key=f"k-{user}-{m}")
        if n % 3 == 0:
            await offline.append(HOST, user, f"<message>offline {user}</message>", when=NOW)
    return await contents(storage)


async def contents(storage: Storage) -> dict[str, list[tuple]]:
    mam = storage.archive("mam")
    return {user: [(i.key, i.when, i.with_jid, i.value) for i in await mam.query(HOST, user)]
            for user in USERS}


async def test_each_archive_is_in_the_file_of_its_account_and_every_process_reads_it(db_path: str) -> None:
    storage = await Storage.open(f"sqlite:///{db_path}", archive_files=3)
    try:
        expected = await fill(storage)
        assert all(len(items) == 5 for items in expected.values())
        assert storage.archive_files.count == 3
    finally:
        await storage.close()
    paths = [db_path, file_path(db_path, 1), file_path(db_path, 2)]
    assert paths[1].endswith("stockade.archive-1.db")
    for index, path in enumerate(paths):
        users = {u for u in USERS if account_slot(HOST, u, 3) == index}
        offline = {u for n, u in enumerate(USERS) if n % 3 == 0 and u in users}
        assert users, "the test needs accounts in every file"
        assert raw_count(path) == 5 * len(users) + len(offline)
    # Another process (the CLI) opens as many files as the database records.
    other = await Storage.open(f"sqlite:///{db_path}")
    try:
        assert other.archive_files.count == 3
        assert await contents(other) == expected
        assert await other.archive("offline").count(HOST, "user3") == 1
        item = await other.archive("mam").get_by_key(HOST, "user7", "k-user7-2")
        assert item is not None and item.value == "<message>user7 2</message>"
        assert [i.value for i in await other.archive("offline").pop_all(HOST, "user3")] == \
            ["<message>offline user3</message>"]
        assert await other.archive("mam").delete(HOST, "user4", before=NOW + 1) == 2
        assert await other.archive("mam").count(HOST, "user4") == 3
    finally:
        await other.close()


@pytest.mark.parametrize("counts", [(1, 2), (2, 3), (3, 1), (2, 1)])
async def test_a_new_number_of_files_moves_every_archive_in_order(db_path: str, counts: tuple[int, int]) -> None:
    before, after = counts
    storage = await Storage.open(f"sqlite:///{db_path}", archive_files=before)
    try:
        expected = await fill(storage)
    finally:
        await storage.close()
    storage = await Storage.open(f"sqlite:///{db_path}", archive_files=after)
    try:
        assert storage.archive_files.count == after
        assert await contents(storage) == expected
        assert await storage.archive("offline").count(HOST, "user0") == 1
        # Appends after the move go on after the moved items.
        await storage.archive("mam").append(HOST, "user5", "<message>later</message>", when=NOW + 9)
        assert [i.value for i in await storage.archive("mam").query(HOST, "user5")][-2:] == \
            ["<message>user5 4</message>", "<message>later</message>"]
    finally:
        await storage.close()
    for index in range(1, 4):
        assert Path(file_path(db_path, index)).exists() == (index < after)
    in_files = sum(raw_count(p) for p in [db_path] + [file_path(db_path, k) for k in range(1, after)])
    assert in_files == len(USERS) * 5 + 8 + 1          # nothing lost, nothing doubled


@pytest.mark.parametrize("failing", ["archive_files.copy", "archive_files.delete"])
async def test_a_move_a_crash_interrupted_is_finished_by_the_next_open(db_path: str, failing: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    storage = await Storage.open(f"sqlite:///{db_path}", archive_files=2)
    try:
        expected = await fill(storage)
    finally:
        await storage.close()
    # Small chunks, and the process "stops" at the second copy (an archive half copied) or at
    # the first delete (an archive copied and still in its old file).
    monkeypatch.setattr(archive_files_module, "MOVE_CHUNK", 2)
    calls = {"n": 0}
    write, execute = Database.write, Database.execute

    async def crash(name: str) -> None:
        if name == failing:
            calls["n"] += 1
            if calls["n"] == (2 if failing.endswith("copy") else 1):
                raise StorageError("the process stopped here")

    async def failing_write(self, name, fn, *args):
        await crash(name)
        return await write(self, name, fn, *args)

    async def failing_execute(self, name, stmt, params=None):
        await crash(name)
        return await execute(self, name, stmt, params)

    monkeypatch.setattr(Database, "write", failing_write)
    monkeypatch.setattr(Database, "execute", failing_execute)
    with pytest.raises(StorageError, match="stopped here"):
        await Storage.open(f"sqlite:///{db_path}", archive_files=3)
    monkeypatch.undo()
    # The record still says 2 files, with a move to 3 under way: any process finishes it.
    with sqlite3.connect(db_path) as conn:
        assert dict(conn.execute("SELECT name, value FROM storage_layout")) == \
            {"archive_files": 2, "archive_files_next": 3}
    storage = await Storage.open(f"sqlite:///{db_path}")
    try:
        assert storage.archive_files.count == 3
        assert await contents(storage) == expected
    finally:
        await storage.close()
    with sqlite3.connect(db_path) as conn:
        assert dict(conn.execute("SELECT name, value FROM storage_layout")) == {"archive_files": 3}
    assert sum(raw_count(p) for p in (db_path, file_path(db_path, 1), file_path(db_path, 2))) == \
        len(USERS) * 5 + 8


async def test_removing_an_account_deletes_its_archive_in_its_file(db_path: str) -> None:
    storage = await Storage.open(f"sqlite:///{db_path}", archive_files=2)
    try:
        gone = next(u for u in USERS if account_slot(HOST, u, 2) == 1)
        for user in USERS:
            await storage.accounts.create(HOST, user, [])
        expected = await fill(storage)
        assert await storage.accounts.remove(HOST, gone)
        assert await storage.archive("mam").count(HOST, gone) == 0
        expected[gone] = []
        assert await contents(storage) == expected
    finally:
        await storage.close()
    assert raw_count(file_path(db_path, 1), f"SELECT count(*) FROM archive WHERE key LIKE 'k-{gone}-%'") == 0


async def test_retention_purges_archives_in_every_file(db_path: str) -> None:
    storage = await Storage.open(f"sqlite:///{db_path}", archive_files=2)
    try:
        await fill(storage)
        retention = storage.retention()
        owners = await retention.archive_owners("mam")
        assert sorted(o.username for o in owners) == sorted(USERS)
        assert {o.file for o in owners} == {0, 1}
        assert all(o.file == account_slot(HOST, o.username, 2) for o in owners)
        cutoffs = {o: NOW + 1 for o in owners}            # the two items at NOW go
        assert await retention.purge_archive(cutoffs, dry_run=True) == 2 * len(USERS)
        assert await retention.purge_archive(cutoffs) == 2 * len(USERS)
        assert all(len(items) == 3 for items in (await contents(storage)).values())
    finally:
        await storage.close()


async def test_encrypted_archives_still_open_after_a_move(db_path: str) -> None:
    keyring = Keyring([bytes(range(32))], "a test keyring")
    storage = await Storage.open(f"sqlite:///{db_path}", keyring=keyring, archive_files=1)
    try:
        expected = await fill(storage)
    finally:
        await storage.close()
    assert raw_count(db_path, "SELECT count(*) FROM archive WHERE value LIKE '<message>%'") == 0
    storage = await Storage.open(f"sqlite:///{db_path}", keyring=keyring, archive_files=2)
    try:
        assert await contents(storage) == expected
    finally:
        await storage.close()


async def test_an_archive_file_of_another_version_is_refused(db_path: str) -> None:
    storage = await Storage.open(f"sqlite:///{db_path}", archive_files=2)
    await storage.close()
    with sqlite3.connect(file_path(db_path, 1)) as conn:
        conn.execute("PRAGMA user_version=7")
    with pytest.raises(StorageError, match=r"archive file .*stockade\.archive-1\.db has version 7"):
        await Storage.open(f"sqlite:///{db_path}")


async def test_postgresql_and_memory_keep_the_archive_in_the_database(storage_url: str) -> None:
    # (storage_url's SQLite file is what the tests above are about.)
    for url in ("sqlite:///:memory:", *([storage_url] if storage_url.startswith("postgresql") else [])):
        storage = await Storage.open(url, archive_files=2)
        try:
            assert storage.archive_files.count == 1
            await storage.archive("mam").append(HOST, "alice", "<message/>")
            assert await storage.archive("mam").count(HOST, "alice") == 1
        finally:
            await storage.close()
