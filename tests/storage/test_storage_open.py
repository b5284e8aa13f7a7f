"""Storage.open/close: URLs, durability across restarts, errors a person can act on, concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from stockade.protocol.sasl.scram import derive
from stockade.storage import Storage, StorageError

HOST = "example.com"


async def test_dialect_names_the_backend(storage: Storage, storage_url: str) -> None:
    assert storage.dialect == storage_url.split(":")[0]


async def test_committed_data_survives_close_and_reopen(storage_url: str) -> None:
    storage = await Storage.open(storage_url)
    cred = derive("pw", "sha256")
    await storage.accounts.create(HOST, "alice", [cred])
    await storage.keyval("vcard").set(HOST, "alice", {"fn": "Alice"})
    await storage.map("roster").set(HOST, "alice", "bob@example.com", {"name": "Bob"})
    item = await storage.archive("offline").append(HOST, "alice", "<message/>")
    await storage.close()

    reopened = await Storage.open(storage_url)
    try:
        assert await reopened.accounts.get_credentials(HOST, "alice") == {"sha256": cred}
        assert await reopened.keyval("vcard").get(HOST, "alice") == {"fn": "Alice"}
        assert await reopened.map("roster").get_all(HOST, "alice") == {"bob@example.com": {"name": "Bob"}}
        assert await reopened.archive("offline").query(HOST, "alice") == [item]
    finally:
        await reopened.close()


async def test_close_commits_queued_appends_first(storage_url: str) -> None:
    storage = await Storage.open(storage_url)
    futures = [storage.archive("offline").append_nowait(HOST, "alice", f"<m{n}/>") for n in range(50)]
    await storage.close()                         # nobody awaited the appends

    assert all(f.done() and f.exception() is None for f in futures)
    reopened = await Storage.open(storage_url)
    try:
        assert [i.value for i in await reopened.archive("offline").query(HOST, "alice")] == [
            f"<m{n}/>" for n in range(50)]
    finally:
        await reopened.close()


async def test_close_twice_is_harmless(storage_url: str) -> None:
    storage = await Storage.open(storage_url)
    await storage.close()
    await storage.close()


async def test_many_concurrent_writers_and_readers_never_hit_a_locked_database(
        storage: Storage) -> None:
    """SQLite has one write lock; tasks must queue for it instead of failing."""

    async def user_session(n: int) -> None:
        user = f"user{n}"
        await storage.accounts.create(HOST, user, [derive("pw", "sha1", iterations=1)])
        await storage.keyval("vcard").set(HOST, user, {"n": n})
        await storage.map("roster").set_many(HOST, user, {f"friend{k}": k for k in range(5)})
        await storage.archive("mam").append(HOST, user, f"<message n='{n}'/>")
        assert await storage.keyval("vcard").get(HOST, user) == {"n": n}
        assert len(await storage.map("roster").get_all(HOST, user)) == 5
        await storage.accounts.set_credentials(HOST, user, [derive("pw2", "sha256", iterations=1)])

    await asyncio.gather(*(user_session(n) for n in range(100)))

    assert await storage.accounts.count(HOST) == 100
    assert sum([await storage.archive("mam").count(HOST, f"user{n}") for n in range(100)]) == 100


async def test_two_storages_on_one_database_can_both_write(storage_url: str) -> None:
    """The server and the `stockade user` CLI may have the same database open at once."""
    server = await Storage.open(storage_url)
    cli = await Storage.open(storage_url)
    try:
        await asyncio.gather(
            *(server.archive("mam").append(HOST, "alice", f"<s{n}/>") for n in range(100)),
            *(cli.accounts.create(HOST, f"user{n}", []) for n in range(30)),
            *(server.keyval("vcard").set(HOST, f"user{n}", n) for n in range(30)))
        assert await server.accounts.count(HOST) == 30
        assert await cli.archive("mam").count(HOST, "alice") == 100
    finally:
        await cli.close()
        await server.close()


async def test_unsupported_url_scheme_is_explained() -> None:
    with pytest.raises(StorageError, match="unsupported database URL scheme 'mysql'.*sqlite:///"):
        await Storage.open("mysql://user@host/db")


async def test_unparseable_url_is_explained() -> None:
    with pytest.raises(StorageError, match="cannot parse the database URL"):
        await Storage.open("not a url")


async def test_unreachable_postgresql_is_explained_without_the_password() -> None:
    with pytest.raises(StorageError) as failed:
        # Port 1 on localhost: nothing listens there, the connection is refused at once.
        await Storage.open("postgresql://stockade:s3cret-pw@127.0.0.1:1/stockade")
    message = str(failed.value)
    assert "postgresql+asyncpg://stockade:***@127.0.0.1:1/stockade" in message
    assert "s3cret-pw" not in message


async def test_sqlite_creates_the_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "stockade.db"
    storage = await Storage.open(f"sqlite:///{path}")
    await storage.keyval("vcard").set(HOST, "alice", 1)
    await storage.close()
    assert path.is_file()


async def test_sqlite_uses_write_ahead_logging(tmp_path: Path) -> None:
    path = tmp_path / "stockade.db"
    await (await Storage.open(f"sqlite:///{path}")).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_write_another_process_locks_out_is_explained_and_the_next_one_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's BEGIN IMMEDIATE waits out another process's write lock for the busy
    timeout, then fails as a StorageError naming the operation; once the lock is gone, the same
    connection writes again."""
    monkeypatch.setattr("stockade.storage.engine.SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "stockade.db"
    storage = await Storage.open(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await storage.keyval("vcard").set(HOST, "alice", 1)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageError, match="database is locked") as caught:
            await storage.keyval("vcard").set(HOST, "alice", 2)
        assert "failed on" in str(caught.value)
        other.execute("ROLLBACK")
        await storage.keyval("vcard").set(HOST, "alice", 3)
        assert await storage.keyval("vcard").get(HOST, "alice") == 3
    finally:
        other.close()
        await storage.close()


async def test_sqlite_threads_carry_their_names_for_the_operating_system(tmp_path: Path) -> None:
    """`top -H` and /proc/PID/task/*/comm tell the database writer and readers from the event
    loop's thread (the benchmark reports CPU per thread by these names)."""
    storage = await Storage.open(f"sqlite:///{tmp_path / 'stockade.db'}")
    try:
        writer_tid = await storage._db.write("test.tid", lambda _conn: threading.get_native_id())
        reader_tid = await storage._db.read("test.tid", lambda _conn: threading.get_native_id())
        assert Path(f"/proc/self/task/{writer_tid}/comm").read_text().strip() == "sqlite-writer-0"
        assert Path(f"/proc/self/task/{reader_tid}/comm").read_text().strip().startswith("sqlite-reader-")
    finally:
        await storage.close()


async def test_sqlite_in_memory_database_works_for_tests() -> None:
    storage = await Storage.open("sqlite:///:memory:")
    try:
        await storage.accounts.create(HOST, "alice", [])
        items = await asyncio.gather(*(storage.archive("mam").append(HOST, "alice", "<m/>")
                                       for _ in range(20)))
        await storage.keyval("vcard").set(HOST, "alice", "x")
        assert await storage.archive("mam").count(HOST, "alice") == 20
        assert await storage.keyval("vcard").get(HOST, "alice") == "x"
        assert len({i.id for i in items}) == 20
    finally:
        await storage.close()


async def test_cancelling_a_call_at_any_point_leaves_the_storage_usable(storage: Storage) -> None:
    """A client disconnecting mid-write cancels its task; that must not wedge the database.

    The call is cancelled after 0, 1, 2, ... event-loop turns, so every stage of a transaction
    gets hit. The transaction is all-or-nothing, and the next calls work.
    """
    roster = storage.map("roster")
    vcard = storage.keyval("vcard")
    for turns in range(60):
        task = asyncio.ensure_future(roster.set_many(HOST, "alice", {f"k{i}": i for i in range(20)}))
        for _ in range(turns):
            await asyncio.sleep(0)                     # one event-loop turn, not a timed wait
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        await vcard.set(HOST, "alice", turns)
        assert await vcard.get(HOST, "alice") == turns
        assert len(await roster.get_all(HOST, "alice")) in (0, 20)
        await roster.delete_all(HOST, "alice")


async def test_a_point_read_on_a_sqlite_file_runs_in_the_event_loop_thread(tmp_path: Path) -> None:
    """Login reads (credentials, roster, stored values) run right where they are awaited: the
    awaitable finishes at its first step, without handing the work to a reader thread and
    waiting for it to come back (which costs more than the read on a busy server)."""
    storage = await Storage.open(f"sqlite:///{tmp_path / 'stockade.db'}")
    try:
        await storage.map("roster").set(HOST, "alice", "bob@example.com", {"name": "Bob"})
        read = storage.map("roster").get_all(HOST, "alice")
        with pytest.raises(StopIteration) as finished:
            read.send(None)                      # no wait: done at the first step
        assert finished.value.value == {"bob@example.com": {"name": "Bob"}}
        # ... and it sees each write as soon as it committed, like a reader thread would.
        await storage.map("roster").set(HOST, "alice", "carol@example.com", {})
        assert set(await storage.map("roster").get_all(HOST, "alice")) == {"bob@example.com", "carol@example.com"}
    finally:
        await storage.close()


class _FailingOnce:
    """A DBAPI connection whose next statement fails with `error`, then works as `real` does."""

    def __init__(self, real: object, error: sqlite3.Error) -> None:
        self.real, self.error = real, error

    @property
    def driver_connection(self) -> "_FailingOnce":
        return self

    def execute(self, *args: object) -> object:
        error, self.error = self.error, None
        if error is not None:
            raise error
        return self.real.driver_connection.execute(*args)

    def invalidate(self) -> None:
        self.real.invalidate()

    def close(self) -> None:
        self.real.close()


def _sqlite_error(cls: type[sqlite3.Error], message: str, code: int) -> sqlite3.Error:
    error = cls(message)
    error.sqlite_errorcode = code
    return error


async def test_a_point_read_that_would_wait_for_a_lock_goes_to_a_reader_thread(tmp_path: Path) -> None:
    """In WAL mode a reader waits for a lock only in rare moments (another process recovering
    the WAL index after a crash): the in-place read then fails at once with SQLITE_BUSY, since
    the event loop must not wait, and the read is done by a reader thread instead."""
    storage = await Storage.open(f"sqlite:///{tmp_path / 'stockade.db'}")
    try:
        vcard = storage.keyval("vcard")
        await vcard.set(HOST, "alice", {"fn": "Alice"})
        assert await vcard.get(HOST, "alice") == {"fn": "Alice"}          # opens the loop's connection
        db = storage._db
        db._inline = _FailingOnce(db._inline, _sqlite_error(sqlite3.OperationalError, "database is locked", 5))
        read = vcard.get(HOST, "alice")
        step = read.send(None)                   # not done at once: it waits for a reader thread
        assert isinstance(step, asyncio.Future)
        read.close()
        assert await vcard.get(HOST, "alice") == {"fn": "Alice"}
        db._inline = _FailingOnce(db._inline.real, _sqlite_error(sqlite3.OperationalError, "database is locked", 261))
        assert await vcard.get(HOST, "alice") == {"fn": "Alice"}          # SQLITE_BUSY_RECOVERY too
    finally:
        await storage.close()


async def test_a_failing_point_read_names_the_operation_and_the_next_one_reconnects(tmp_path: Path) -> None:
    storage = await Storage.open(f"sqlite:///{tmp_path / 'stockade.db'}")
    try:
        vcard = storage.keyval("vcard")
        await vcard.set(HOST, "alice", {"fn": "Alice"})
        assert await vcard.get(HOST, "alice") == {"fn": "Alice"}
        db = storage._db
        broken = db._inline
        db._inline = _FailingOnce(broken, _sqlite_error(sqlite3.DatabaseError, "database disk image is malformed", 11))
        with pytest.raises(StorageError, match="'keyval.get' failed .*malformed"):
            await vcard.get(HOST, "alice")
        assert db._inline is None                # dropped: the next read opens a new connection
        assert await vcard.get(HOST, "alice") == {"fn": "Alice"}
        assert db._inline is not None and db._inline is not broken
    finally:
        await storage.close()
