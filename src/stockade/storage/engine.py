"""The database connection: URL handling and every difference between SQLite and PostgreSQL.

The rest of `storage/` is written once against SQLAlchemy Core. What has to differ by dialect lives
here and nowhere else:

- URLs: `sqlite:///path.db` runs on Python's own sqlite3 in threads of ours (below);
  `postgresql://...` on the async driver asyncpg.
- How a transaction runs. Every transaction is one synchronous function `fn(conn)`. For SQLite,
  a few threads own the connections: ONE writer thread with the only write connection (SQLite
  has one write lock, so writes queue here in-process instead of failing with "database is
  locked") and a few reader threads whose connections WAL mode lets read beside the writer. A
  transaction is one hand-over to a thread and one back, however many statements it has; an
  async driver (aiosqlite) would hop threads for every cursor, execute, fetch and close.
  PostgreSQL uses one ordinary async pool.
- Point reads (`point_rows`: credentials, roster, stored values, a few per login). On a SQLite
  file they run right in the event loop's thread, on a connection of their own, when they can
  do so without waiting: a read of a few indexed rows from the page cache costs a few
  microseconds there, against the two thread hand-overs (and the interpreter-lock hand-overs
  between the threads) of a threaded read, which cost several times that on a busy server. A
  read that would wait for a lock (busy_timeout 0 on that connection, so SQLITE_BUSY at once)
  goes to a reader thread instead. What it cannot avoid is the rare read of a page that is in
  neither SQLite's cache nor the system's: the event loop then waits for the disk, as a
  single-threaded server does.
- Transactions. SQLite write transactions start with BEGIN IMMEDIATE, which takes the write lock up
  front; a deferred BEGIN that reads first and writes later can fail with SQLITE_BUSY when another
  process (the `stockade user` CLI) wrote in between. Reads run in autocommit on both dialects:
  each is one statement, and skipping BEGIN/COMMIT saves round trips on the hot path.
- Pragmas (SQLite): WAL, synchronous=NORMAL, foreign keys, busy timeout, query_only for readers;
  for the writer a larger page cache and fewer, larger checkpoints (see `_install_sqlite_hooks`).
- Upsert and insert-or-ignore (ON CONFLICT, spelled by each dialect's `insert`).
- Plain SQL for the group-commit writers' bulk inserts (`bulk_insert`, archive and journal):
  tuples straight to the DBAPI skip SQLAlchemy's per-row work. On SQLite a batch goes out as
  INSERTs of many rows each (`SQLITE_ROWS_PER_INSERT`, then the rest of the batch in statements
  of 512, 256, ... rows), not an executemany: Python's sqlite3
  gives up the interpreter lock around each statement's step and must take it back for the next,
  so an executemany in a writer thread waits for the busy event loop's thread once per row (up
  to the interpreter's switch interval, 5 ms, each time), while one statement of a thousand rows
  waits once. On PostgreSQL, asyncpg's executemany.
- Allocating archive ids in bulk for the group-commit writer, the lock that serialises
  migrations between processes, and for migrations the id high-water mark of a table and the
  renaming of a table with what PostgreSQL names after it (primary key, id sequence).

A transaction runs to its end even when the caller is cancelled: a SQLite one is in a thread
anyway, a PostgreSQL one in its own shielded task (a cancelled asyncpg call invalidates the
connection mid-transaction).

Every operation is named (`db.write("account.create")`) so that a failure says which one failed.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import sqlite3
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, Executable, Row, Table, column, create_engine, event, func, select
from sqlalchemy import table as lightweight_table
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState, QueuePool
from sqlalchemy.sql.dml import Insert

from .errors import StorageError

SQLITE_BUSY_TIMEOUT_MS = 5000      # how long to wait for another process's write lock
SQLITE_READERS = 4                 # reader threads, each with its own connection
SQLITE_MIN_VERSION = (3, 35, 0)    # DELETE ... RETURNING (pop_all) needs 3.35
# The writer's page cache (SQLite's default is 2 MiB). Each archive append updates the index
# page at the end of its owner's range; with thousands of active owners those pages must stay
# cached, or every append reads one back from the file.
SQLITE_WRITER_CACHE_KIB = 64 * 1024
# The page size of a new database file (SQLite's default is 4 KiB; an existing file keeps its
# own). Every archive append lands in its owner's part of the archive index, a different page per
# owner, and every page a batch changed is written to the WAL at commit: with bigger pages a batch
# of appends touches and writes fewer of them, in fewer B-tree levels. Measured with 1,000 owners
# and batches of 10,000 appends: 4.4 us of database CPU per append at 4 KiB, 3.7 at 16 KiB.
SQLITE_PAGE_SIZE = 16 * 1024
# Bytes in the WAL before the writer's own checkpoint copies its pages into the database
# (SQLite's default is 1000 pages, 4 MiB at 4 KiB). Under load the checkpoints beside the writer
# (CHECKPOINT_AFTER_ROWS) come first; this is the safety net for everything else. The WAL file
# grows to about this size before it is reused.
SQLITE_WAL_AUTOCHECKPOINT_BYTES = 128 * 1024 * 1024
# Rows committed by the group-commit writers (archive appends, journal records) after which the
# WAL is checkpointed beside the writer (Database.checkpoint_soon). A checkpoint copies a page once
# however often it changed since the last one, and every archive batch rewrites the same index
# pages (one per active owner): checkpointing every few batches rather than after each copies
# far less. Measured with bench/storage_append.py (1,000 owners, batches of 5,000): 8.2 us of
# CPU per append with a checkpoint after every batch, 7.3 with one per 30,000 rows.
CHECKPOINT_AFTER_ROWS = 30_000
# The WAL starts again from its beginning only after a checkpoint that copied all of it, and
# under a steady load only the writer can make one (new commits keep coming while a checkpoint
# beside it runs). Left to its automatic checkpoint (SQLITE_WAL_AUTOCHECKPOINT_BYTES), the writer
# copies everything since the last background checkpoint and syncs both files itself, about 85
# ms every few seconds in the 1:1 benchmark with the journal on, while client input waits behind
# it (backpressure). So once the WAL holds this much, a background checkpoint is followed by a
# second one (which copies only what was committed during the first) and then by one in the
# writer's thread between two transactions, which finds little left to copy and sync.
WAL_RESTART_BYTES = 96 * 1024 * 1024
# Rows per INSERT statement of a bulk insert on SQLite (see the module docstring), at most what
# the library's bound-parameter limit allows (SQLITE_LIMIT_VARIABLE_NUMBER, 32,766 by default).
SQLITE_ROWS_PER_INSERT = 1000
POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 10
POOL_TIMEOUT_S = 30                # a task waiting longer than this for a connection gets an error

# pg_advisory_xact_lock key that serialises migrations between processes ("Stockade" in ASCII).
_MIGRATION_LOCK_KEY = 0x53746F636B616465

_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_URL_HELP = "use sqlite:///path/to/file.db or postgresql://user:password@host:port/database"

_log = logging.getLogger(__name__)

T = TypeVar("T")
Params = dict[str, Any] | list[dict[str, Any]] | None   # one row of parameters, or many

_SQLITE_SEQUENCE = lightweight_table("sqlite_sequence", column("name"), column("seq"))
_REGCLASS = pg_dialect.REGCLASS()


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL for a Stockade database URL, with the driver filled in."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"cannot parse the database URL {url!r}; {_URL_HELP}") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StorageError(f"unsupported database URL scheme {parsed.drivername!r}; {_URL_HELP}")
    if driver.startswith("sqlite") and not parsed.database:
        raise StorageError(f"the SQLite URL {url!r} names no file; {_URL_HELP}")
    return parsed.set(drivername=driver)


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


def _describe(exc: BaseException) -> str:
    """The driver's own message when there is one: it is what a person can search for."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}".strip()
    return f"{type(exc).__name__}: {exc}".strip()


class _Runner(Protocol):
    """Runs transactions: `fn(conn, *args)` with a synchronous SQLAlchemy Connection; on a write
    runner in a transaction unless `transaction` is False (what SQLite cannot do inside one: a
    WAL checkpoint)."""

    async def run(self, fn: Callable[..., T], args: tuple, *, transaction: bool = True) -> T: ...

    async def close(self) -> None: ...


class _ThreadRunner:
    """Threads that run whole transactions on their own connections (SQLite).

    The caller's task waits on a future that the thread settles through the event loop; a
    cancelled caller stops waiting, and the transaction still ends normally in its thread.
    Threads start with the first transaction and stop, after what is queued, at close().
    """

    def __init__(self, engine: Engine, threads: int, name: str, *, write: bool) -> None:
        self._engine = engine
        self._count = threads
        self._name = name
        self._write = write
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    async def run(self, fn: Callable[..., T], args: tuple, *, transaction: bool = True) -> T:
        if self._closed:
            # Starting threads again would let them take the stop signals meant for the old
            # ones, and close() would wait forever for those.
            raise StorageError("the database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._threads:
            self._start()
        self._jobs.put((fn, args, future, loop, transaction))
        return await future

    def _start(self) -> None:
        for n in range(self._count):
            thread = threading.Thread(target=self._work, args=(f"{self._name}-{n}",),
                                      name=f"stockade-{self._name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self, os_name: str) -> None:
        _name_os_thread(os_name)
        # Each thread keeps its connection open: no pool checkout, reset and checkin per
        # transaction. A connection that an error left unusable is replaced.
        engine, write = self._engine, self._write
        conn: Connection | None = None
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                fn, args, future, loop, transaction = job
                try:
                    if conn is None or conn.invalidated:
                        if conn is not None:
                            conn.close()
                        conn = engine.connect()
                    if write and transaction:
                        with conn.begin():
                            result, error = fn(conn, *args), None
                    else:
                        try:
                            result, error = fn(conn, *args), None
                        finally:
                            conn.rollback()          # ends SQLAlchemy's autobegun transaction (no SQL)
                except BaseException as exc:         # handed to the caller, whatever it is
                    result, error = None, exc
                try:
                    loop.call_soon_threadsafe(_settle, future, result, error)
                except RuntimeError:                 # the loop is closed: nobody is waiting
                    if error is not None:
                        _log.warning("a storage operation failed after its event loop closed: %s", error)
        finally:
            if conn is not None:
                conn.close()

    async def close(self) -> None:
        self._closed = True
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)                 # after everything already queued
        if threads:
            await asyncio.to_thread(_join_all, threads)
        self._engine.dispose()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():                            # the caller was cancelled
        if error is not None:
            _log.warning("a storage operation failed after its caller was cancelled: %s", error)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


class _AsyncRunner:
    """Transactions on an async SQLAlchemy engine (asyncpg), each in its own shielded task."""

    def __init__(self, engine: AsyncEngine, *, write: bool) -> None:
        self._engine = engine
        self._write = write
        self._in_flight: set[asyncio.Task] = set()

    async def run(self, fn: Callable[..., T], args: tuple, *, transaction: bool = True) -> T:
        return await self._shielded(self._run(fn, args, transaction))

    async def _run(self, fn: Callable[..., T], args: tuple, transaction: bool) -> T:
        if self._write and transaction:
            async with self._engine.begin() as conn:
                return await conn.run_sync(fn, *args)
        async with self._engine.connect() as conn:
            return await conn.run_sync(fn, *args)

    async def _shielded(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run `operation` to its end even if the caller is cancelled: cancelling an async
        driver mid-statement invalidates the connection, mid-transaction."""
        task = asyncio.get_running_loop().create_task(operation)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_abandoned_failure)
            raise

    async def close(self) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        await self._engine.dispose()


class Database:
    """A connected database: named read and write transactions plus the dialect-specific SQL."""

    def __init__(self, url: URL, writer: _Runner, reader: _Runner, runners: Sequence[_Runner],
                 sa_dialect: Any, inline: Engine | None = None) -> None:
        self.dialect: str = url.get_backend_name()          # "sqlite" | "postgresql"
        self.display_url = url.render_as_string(hide_password=True)
        # The file of a SQLite database (None: PostgreSQL, or SQLite in memory).
        self.path: str | None = url.database if self.dialect == "sqlite" and not _is_memory(url) else None
        self._writer = writer
        self._reader = reader
        self._runners = tuple(runners)                       # what dispose() closes
        self._preparer = sa_dialect.identifier_preparer
        self._sa_dialect = sa_dialect
        self._compiled: dict[int, tuple[Any, str, tuple[str, ...]]] = {}    # see point_rows
        self._insert = sqlite_dialect.insert if self.dialect == "sqlite" else pg_dialect.insert
        # SQLite files: WAL checkpoints under load run in a reader thread (see checkpoint_soon).
        self._checkpoints = self.dialect == "sqlite" and reader is not writer
        self._checkpointing: asyncio.Future[None] | None = None
        self._uncheckpointed = 0                             # rows committed since (checkpoint_soon)
        # SQLite files: the event loop thread's connection for point reads (see point_rows).
        self._inline_engine = inline
        self._inline: Any = None                             # the pooled connection, once opened

    # -- engines ----------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str) -> Database:
        """Engines for `url`. Nothing is opened yet: the first transaction connects."""
        parsed = parse_url(url)
        if parsed.get_backend_name() == "sqlite":
            return cls._connect_sqlite(parsed)
        return cls._connect_postgresql(parsed)

    @classmethod
    def _connect_sqlite(cls, url: URL) -> Database:
        if sqlite3.sqlite_version_info < SQLITE_MIN_VERSION:
            raise StorageError(
                f"SQLite {sqlite3.sqlite_version} is too old; Stockade needs "
                f"{'.'.join(map(str, SQLITE_MIN_VERSION))} or newer (upgrade Python or the system SQLite)")
        memory = _is_memory(url)
        if not memory:
            path = Path(url.database).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the directory {path.parent} for the database: "
                                   f"{exc.strerror}; check the path and its permissions") from exc
        # Connections move between our threads (one at a time), hence check_same_thread=False.
        # One writer connection: SQLite has one write lock, so writers queue in its thread.
        # For ":memory:" that one connection IS the database, so reads must use it too.
        # pool_reset_on_return=None: see on_reset in _install_sqlite_hooks.
        args = {"check_same_thread": False}
        writer = create_engine(url, poolclass=QueuePool, pool_size=1, max_overflow=0,
                               pool_timeout=POOL_TIMEOUT_S, pool_reset_on_return=None,
                               connect_args=args)
        _install_sqlite_hooks(writer, is_writer=True, is_memory=memory)
        write_runner = _ThreadRunner(writer, 1, "sqlite-writer", write=True)
        if memory:
            return cls(url, write_runner, write_runner, [write_runner], writer.dialect)
        # Readers never open a transaction (autocommit, query_only), so there is never anything
        # to roll back.
        # One connection more than reader threads: the event loop's own, for point reads.
        reader = create_engine(url, poolclass=QueuePool, pool_size=SQLITE_READERS + 1, max_overflow=0,
                               pool_timeout=POOL_TIMEOUT_S, skip_autocommit_rollback=True,
                               connect_args=args)
        _install_sqlite_hooks(reader, is_writer=False, is_memory=False)
        read_runner = _ThreadRunner(reader, SQLITE_READERS, "sqlite-reader", write=False)
        return cls(url, write_runner, read_runner, [write_runner, read_runner], writer.dialect,
                   inline=reader)

    @classmethod
    def _connect_postgresql(cls, url: URL) -> Database:
        engine = create_async_engine(
            url, pool_size=POSTGRES_POOL_SIZE, max_overflow=POSTGRES_MAX_OVERFLOW,
            pool_timeout=POOL_TIMEOUT_S,
            connect_args={"server_settings": {"application_name": "stockade"}})
        # Same pool; reads just skip BEGIN/COMMIT (asyncpg switches this with a flag, no round trip).
        writer = _AsyncRunner(engine, write=True)
        reader = _AsyncRunner(engine.execution_options(isolation_level="AUTOCOMMIT"), write=False)
        return cls(url, writer, reader, [writer], engine.dialect)

    async def dispose(self) -> None:
        """Wait for operations still running (their callers may be gone), close every connection."""
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        self._checkpoints = False                # no new background checkpoint, and the
        if self._checkpointing is not None:      # running one finishes first
            await asyncio.wait([self._checkpointing])
        for runner in self._runners:
            await runner.close()

    # -- transactions -----------------------------------------------------------------------

    async def write(self, name: str, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(conn, *args)` in a write transaction named `name`; commit if it returns.

        `fn` gets a synchronous SQLAlchemy Connection: a transaction is one plain function, and
        how it is run (in a thread, or on an async driver) is this file's business alone.
        Cancelling the caller does not cancel the transaction: it commits or rolls back as it
        would have anyway.
        """
        try:
            return await self._writer.run(fn, args)
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:   # sqlite3: from plain_sql
            raise self._error(name, exc) from exc

    def checkpoint_soon(self, batch_size: int) -> None:
        """After a group-commit batch (archive appends, journal records) of `batch_size`: once
        CHECKPOINT_AFTER_ROWS rows were committed since the last time, copy the WAL into the
        database file now, in a reader thread beside the writer (a PASSIVE checkpoint never
        blocks it), rather than in the writer's own automatic checkpoint, whose copy and fsync
        would stall the writer and, through backpressure (backlog.py), client input. Once the
        WAL holds WAL_RESTART_BYTES, the writer finishes the job between two transactions, so
        that the WAL starts again from its beginning. One at a time; the automatic checkpoint
        still covers other writes. SQLite files only; otherwise nothing."""
        if not self._checkpoints:
            return
        self._uncheckpointed += batch_size
        if self._uncheckpointed >= CHECKPOINT_AFTER_ROWS and self._checkpointing is None:
            self._uncheckpointed = 0
            self._checkpointing = asyncio.ensure_future(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            wal_bytes = await self._reader.run(_passive_checkpoint, ())
            if wal_bytes >= WAL_RESTART_BYTES:           # let the WAL start again (see there)
                await self._reader.run(_passive_checkpoint, ())
                await self._writer.run(_passive_checkpoint, (), transaction=False)
        except Exception as exc:                 # the writer's automatic checkpoint still runs
            _log.warning("a background WAL checkpoint failed: %s", exc)
        finally:
            self._checkpointing = None

    async def read(self, name: str, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(conn, *args)` for reading; each statement sees the latest committed data."""
        try:
            return await self._reader.run(fn, args)
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:     # sqlite3: from _raw_rows
            raise self._error(name, exc) from exc

    # Single-statement shorthands for the common cases.

    async def fetch_all(self, name: str, stmt: Executable, params: Params = None) -> Sequence[Row]:
        return await self.read(name, _fetch_all, stmt, params)

    async def fetch_first(self, name: str, stmt: Executable, params: Params = None) -> Row | None:
        return await self.read(name, _fetch_first, stmt, params)

    async def point_rows(self, name: str, stmt: Executable, params: dict[str, Any]) -> list[tuple]:
        """The rows of a small, indexed SELECT as plain tuples, in the order of its columns.

        For the reads of every login (credentials, roster, stored values): on SQLite the
        statement is compiled once and run on sqlite3 directly, which costs a tenth of
        SQLAlchemy's execution path, and on a file in the event loop's thread unless that would
        wait for a lock (see the module's docstring). Only for columns sqlite3 returns as they
        are (text, numbers, bytes), and statements whose parameters are all named bind
        parameters.
        """
        if self.dialect != "sqlite":
            return [tuple(row) for row in await self.fetch_all(name, stmt, params)]
        compiled = self._compiled.get(id(stmt))
        if compiled is None or compiled[0] is not stmt:
            done = stmt.compile(dialect=self._sa_dialect)
            compiled = self._compiled[id(stmt)] = (stmt, done.string, tuple(done.positiontup or ()))
        _, sql, names = compiled
        args = tuple(params[n] for n in names)
        if self._inline_engine is not None:
            rows = self._read_inline(name, sql, args)
            if rows is not None:
                return rows
        return await self.read(name, _raw_rows, sql, args)

    def _read_inline(self, name: str, sql: str, args: tuple) -> list[tuple] | None:
        """`sql` on the event loop thread's connection; None if it would have to wait for a lock."""
        try:
            if self._inline is None:
                conn = self._inline_engine.raw_connection()          # with the readers' pragmas
                conn.driver_connection.execute("PRAGMA busy_timeout=0")
                self._inline = conn
            return self._inline.driver_connection.execute(sql, args).fetchall()
        except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
            if (isinstance(exc, sqlite3.OperationalError)            # extended codes too
                    and (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)):
                return None                                          # a reader thread waits instead
            if self._inline is not None:
                self._inline.invalidate()                            # a new one is opened next time
                self._inline = None
            raise self._error(name, exc) from exc

    async def scalar(self, name: str, stmt: Executable, params: Params = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        return await self.read(name, _scalar, stmt, params)

    async def execute(self, name: str, stmt: Executable, params: Params = None) -> int:
        """Run one writing statement in its own transaction; the number of rows it touched."""
        return await self.write(name, _rowcount, stmt, params)

    async def execute_returning(self, name: str, stmt: Executable,
                                params: Params = None) -> Sequence[Row]:
        """Run one writing statement with RETURNING in its own transaction; the returned rows."""
        return await self.write(name, _fetch_all, stmt, params)

    def _error(self, name: str, exc: BaseException) -> StorageError:
        reason = _describe(exc)
        hint = "check that the database is reachable and writable"
        if "locked" in reason or "busy" in reason:
            hint = "another process holds the database's write lock; stop it or retry"
        return StorageError(f"database operation {name!r} failed on {self.display_url}: {reason}; {hint}")

    # -- dialect-specific SQL -----------------------------------------------------------------

    def upsert(self, table: Table, keys: Sequence[str], update: Sequence[str]) -> Insert:
        """INSERT that overwrites `update` columns when a row with the same `keys` exists."""
        stmt = self._insert(table)
        return stmt.on_conflict_do_update(index_elements=[table.c[k] for k in keys],
                                          set_={c: stmt.excluded[c] for c in update})

    def insert_ignore(self, table: Table, keys: Sequence[str]) -> Insert:
        """INSERT that does nothing (rowcount 0) when a row with the same `keys` exists."""
        return self._insert(table).on_conflict_do_nothing(index_elements=[table.c[k] for k in keys])

    def bulk_insert(self, table: Table, columns: Sequence[str]) -> BulkInsert:
        """The plain-SQL bulk INSERT of `columns` into `table` (see the module docstring)."""
        return BulkInsert(self.dialect, self._preparer.quote, table.name, columns)

    def allocate_ids(self, conn: Connection, table: Table, count: int) -> list[int]:
        """`count` new ascending values for `table.c.id`, never used before, inside a write transaction.

        Allocating first lets a whole batch go out as one bulk insert and still tell every caller
        its id, in queue order (on SQLite the insert may leave the ids to AUTOINCREMENT, which
        gives the same values: see storage/archive.py).
        """
        if self.dialect == "sqlite":
            # Safe because the write transaction holds SQLite's write lock (BEGIN IMMEDIATE).
            # sqlite_sequence is AUTOINCREMENT's high-water mark: ids of deleted rows stay used.
            first = id_high_water(conn, table.name) + 1
            return list(range(first, first + count))
        sequence = func.pg_get_serial_sequence(table.name, "id")
        result = conn.execute(
            select(func.nextval(sequence)).select_from(func.generate_series(1, count)))
        return sorted(result.scalars())

    def lock_schema(self, conn: Connection) -> None:
        """Make concurrent migrations (two processes starting at once) run one after the other."""
        if self.dialect == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        # SQLite: the write transaction's BEGIN IMMEDIATE already excludes other writers.


class BulkInsert:
    """`insert(conn, rows)` writes a list of tuples, in the order of `columns`, to one table."""

    def __init__(self, dialect: str, quote: Callable[[str], str], table: str, columns: Sequence[str]) -> None:
        self._head = f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) VALUES "
        self._width = len(columns)
        self._is_sqlite = dialect == "sqlite"
        markers = ("?" for _ in columns) if self._is_sqlite else (f"${n}" for n in range(1, self._width + 1))
        self._row = "(" + ", ".join(markers) + ")"
        self._per = 0                                    # SQLite: rows in a full statement, on first use
        self._statements: dict[int, str] = {}            # SQLite: the INSERT of n rows, by n

    def __call__(self, conn: Connection, rows: Sequence[tuple]) -> None:
        if not self._is_sqlite:
            conn.exec_driver_sql(self._head + self._row, rows)      # PostgreSQL's executemany
            return
        per = self._per or self._rows_per_statement(conn)
        # Full statements, then the rest in statements of 512, 256, ... rows (a few statements
        # SQLite keeps prepared) rather than an executemany, which steps and hands the
        # interpreter lock back once per row.
        start, left = 0, len(rows)
        while left:
            size = per if left >= per else 1 << (left.bit_length() - 1)
            plain_sql(conn, self._statement(size), tuple(chain.from_iterable(rows[start:start + size])))
            start += size
            left -= size

    def _statement(self, count: int) -> str:
        statement = self._statements.get(count)
        if statement is None:
            statement = self._statements[count] = self._head + ", ".join(self._row for _ in range(count))
        return statement

    def _rows_per_statement(self, conn: Connection) -> int:
        limit = conn.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._per = max(1, min(SQLITE_ROWS_PER_INSERT, limit // self._width))
        return self._per


# -- for migrations, which get a Connection only --------------------------------------------------

# SQLite: id_high_water's statement, by table (made once: it runs in every group commit).
_SQLITE_HIGH_WATER: dict[str, str] = {}


def id_high_water(conn: Connection, table: str) -> int:
    """The largest value `table.id` ever had (0 for none), counting rows since deleted: what the
    table's sequence (PostgreSQL) or AUTOINCREMENT (sqlite_sequence) has handed out. In every
    group-commit transaction (archive ids, the journal's head), so plain SQL on SQLite."""
    if conn.dialect.name == "sqlite":
        statement = _SQLITE_HIGH_WATER.get(table)
        if statement is None:
            statement = _SQLITE_HIGH_WATER[table] = (
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?), 0), "
                f"coalesce((SELECT max(id) FROM {conn.dialect.identifier_preparer.quote(table)}), 0))")
        return plain_sql(conn, statement, (table,)).fetchone()[0]
    top = select(func.coalesce(func.max(column("id")), 0)).select_from(lightweight_table(table))
    sequence = func.pg_get_serial_sequence(table, "id")
    given = conn.execute(select(func.coalesce(
        func.pg_sequence_last_value(sequence.cast(_REGCLASS)), 0))).scalar_one()
    return max(given, conn.execute(top).scalar_one())


def raise_id_high_water(conn: Connection, table: str, value: int) -> None:
    """Make sure `table`'s next generated id is larger than `value` (ids are never reused)."""
    value = max(value, id_high_water(conn, table))
    if value <= 0:
        return
    if conn.dialect.name == "sqlite":
        # AUTOINCREMENT keeps its high-water mark in this table, which SQL may change.
        updated = conn.execute(_SQLITE_SEQUENCE.update().where(_SQLITE_SEQUENCE.c.name == table)
                               .values(seq=value)).rowcount
        if not updated:
            conn.execute(_SQLITE_SEQUENCE.insert().values(name=table, seq=value))
    else:
        conn.execute(select(func.setval(func.pg_get_serial_sequence(table, "id"), value)))


def rename_table(conn: Connection, old: str, new: str) -> None:
    """Rename a table. PostgreSQL names the primary key index and the sequence of a serial `id`
    after the table, and those names must be free for a new table called `old`: they follow."""
    preparer = conn.dialect.identifier_preparer
    conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(old)} RENAME TO {preparer.quote(new)}")
    if conn.dialect.name != "postgresql":
        return              # SQLite: nothing else carries the name (sqlite_sequence follows)
    conn.exec_driver_sql(f"ALTER INDEX {preparer.quote(old + '_pkey')} "
                         f"RENAME TO {preparer.quote(new + '_pkey')}")
    sequence = conn.execute(select(func.pg_get_serial_sequence(new, "id"))).scalar()
    if sequence is not None:
        conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} RENAME TO {preparer.quote(new + '_id_seq')}")


def _log_abandoned_failure(task: asyncio.Task) -> None:
    # Nobody awaits this operation any more; its failure would otherwise go unseen.
    if not task.cancelled() and task.exception() is not None:
        _log.warning("a storage operation failed after its caller was cancelled: %s",
                     task.exception())


_PR_SET_NAME = 15                  # prctl(2)


def _name_os_thread(name: str) -> None:
    """Name the calling thread for the operating system as well (Linux keeps 15 bytes), so that
    `top -H`, `ps -L` and /proc/PID/task/*/comm tell the database writer (sqlite-writer-0) and
    readers (sqlite-reader-N) from the event loop's thread. Nothing elsewhere or on failure."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _fetch_all(conn: Connection, stmt: Executable, params: Params) -> Sequence[Row]:
    return conn.execute(stmt, params).all()


def _fetch_first(conn: Connection, stmt: Executable, params: Params) -> Row | None:
    return conn.execute(stmt, params).first()


def _passive_checkpoint(conn: Connection) -> int:
    """A PASSIVE checkpoint (it never waits for the writer); returns the WAL's size in bytes."""
    raw = conn.connection.driver_connection
    _busy, frames, _copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return max(frames, 0) * raw.execute("PRAGMA page_size").fetchone()[0]


def _raw_rows(conn: Connection, sql: str, args: tuple) -> list[tuple]:
    return conn.connection.driver_connection.execute(sql, args).fetchall()


def plain_sql(conn: Connection, sql: str, params: tuple = ()) -> Any:
    """Run one statement in plain SQL (the dialect's own parameter markers: ? on SQLite, $1 on
    PostgreSQL); a cursor to fetch from (fetchone, fetchall). On SQLite, on sqlite3 directly:
    SQLAlchemy's execution path costs several times the statement for the small ones every
    group commit runs. Its errors are sqlite3's own, which Database.write and read report like
    SQLAlchemy's."""
    if conn.dialect.name == "sqlite":
        return conn.connection.driver_connection.execute(sql, params)
    return conn.exec_driver_sql(sql, params) if params else conn.exec_driver_sql(sql)


def _scalar(conn: Connection, stmt: Executable, params: Params) -> Any:
    return conn.execute(stmt, params).scalar()


def _rowcount(conn: Connection, stmt: Executable, params: Params) -> int:
    return conn.execute(stmt, params).rowcount


def _install_sqlite_hooks(engine: Engine, *, is_writer: bool, is_memory: bool) -> None:
    """Pragmas on every new SQLite connection, and BEGIN IMMEDIATE for the writer."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: it would BEGIN (deferred) on
        # its own before DML; we emit BEGIN IMMEDIATE below and nothing for reads.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if is_writer and not is_memory:
            # Only a new, empty file takes it (and only before WAL mode is set); others keep theirs.
            cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE:d}")
            # Persistent in the file. With WAL, readers never block the writer nor it them.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")          # WAL + NORMAL: survives a process crash
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        if is_writer:
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_WRITER_CACHE_KIB:d}")
            page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_BYTES // page_size:d}")
        else:
            cursor.execute("PRAGMA query_only=ON")           # a write on a read connection is a bug
        cursor.close()

    if is_writer:
        @event.listens_for(engine, "begin")
        def on_begin(conn: Connection) -> None:
            # On the driver's connection: every write transaction starts here, and through
            # SQLAlchemy's execution this one statement cost more than the lock it takes.
            try:
                conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:             # as SQLAlchemy would have raised it
                raise DBAPIError.instance("BEGIN IMMEDIATE", (), exc, sqlite3.Error) from exc

        @event.listens_for(engine, "reset")
        def on_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
            # The pool's default reset is a ROLLBACK on every return, even right after COMMIT.
            # sqlite3 knows whether a transaction is still open (after an error): roll back
            # only then.
            if not state.terminate_only and dbapi_connection.in_transaction:
                dbapi_connection.rollback()
