"""Archive files: on a SQLite node with several worker processes, each worker's archives in a file
of its own.

Why. Every chat message is archived twice (storage/archive.py), by the group-commit writer of the
worker that serves the archive's account. With one database file, the writers of two workers take
turns at the file's one write lock, and each one's transactions push the pages the other has
cached out of the page cache, grow the WAL the other must checkpoint, and wait for the other's
syncs. Removing any one of those costs alone changed nothing measurable; a file per worker removes
them all, and two workers delivered 4.8% more 1:1 messages per second than with the shared file,
in the same benchmark run (docs/benchmarks.md, "An archive file per worker").

Layout. The archive's two tables (`archive_owners`, `archive`) are in N files: file 0 is the
database itself, file k (1 <= k < N) is `<stem>.archive-<k><suffix>` beside it (for
stockade.db: stockade.archive-1.db). The archive (host, user, store) is in file
`account_slot(host, user, N)`, the hash core/partition.py uses for an account's home worker: with
N = [server] workers, each file holds the archives of one worker's accounts, and that worker alone
appends to it on the message path. Everything else keeps working across files as it did in one:
the CLI, the admin API of any worker and retention in worker 0 open all N files and read or delete
in the one an archive is in, and SQLite's locks order them. Room archives are named (service
domain, room) and hashed the same way; worker 0 serves every room, so it appends to the other
files too, a small part of the load.

N is recorded in the database (`storage_layout`), and every process that opens the database opens
the N files. The server's first worker asks for N = [server] workers (`Storage.open(archive_files=
...)`); when that differs from the record, it moves the archives whose file changes before it
serves anything (`open_archive_files`), one archive at a time: copy it to its new file (in order,
with new ids there: an id orders items within its own file only), commit, then delete it from the
old one. A move interrupted by a crash is finished by the next process that opens the database:
"archive_files_next" says where it was going, a copy it finds in an archive's new file is a
leftover of the interrupted copy (nothing else appends during a move) and is made again, and a
lock file beside the database keeps two processes from moving at once. Files past the new N are
deleted once empty.

Only for SQLite files: a PostgreSQL server has no single write lock to share (and an in-memory
database no place for files); N stays 1 there.

Schema. An archive file holds the two archive tables as schema.py describes them, marked with
PRAGMA user_version = ARCHIVE_FILE_VERSION. A migration that changes the archive tables must
change the files too and raise that number: a file with another number is refused.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Connection, bindparam, delete, exists, select, tuple_

from .archive import ArchiveItem, ArchiveStore, ArchiveWriter, Commit
from .backlog import WriteBacklog
from .crypto import Cipher
from .engine import Database
from .errors import StorageError
from .schema import archive, archive_owners, metadata, storage_layout

ARCHIVE_FILE_VERSION = 1
MOVE_CHUNK = 5_000                  # items per transaction when an archive moves to another file

_FILES = "archive_files"
_NEXT = "archive_files_next"
_a = archive.c
_o = archive_owners.c
_l = storage_layout.c
_LAYOUT = select(_l.name, _l.value).where(_l.name.in_((_FILES, _NEXT)))
_OWNER_ID = select(_o.id).where(_o.host == bindparam("host"), _o.username == bindparam("username"),
                                _o.store == bindparam("store"))
_USER_OWNERS = select(_o.id).where(_o.host == bindparam("host"), _o.username == bindparam("username"))
# Owners with at least one item: one index seek each, not a scan of the archive.
_OWNERS_WITH_ITEMS = select(_o.id, _o.host, _o.username, _o.store).where(exists().where(_a.owner == _o.id))
_COPY_COLUMNS = ("owner", "key", "ts", "with_jid", "value")

log = logging.getLogger(__name__)


def account_slot(host: str, username: str, count: int) -> int:
    """Which of `count` workers or archive files the account (or room) belongs to. The same in
    every process and across restarts (CRC-32, not hash())."""
    return zlib.crc32(f"{username}@{host}".encode()) % count


def file_path(database: str, index: int) -> str:
    """The path of archive file `index` (>= 1) of the SQLite database at `database`."""
    path = Path(database)
    return str(path.with_name(f"{path.stem}.archive-{index}{path.suffix}"))


class ArchiveFiles:
    """The archive's files of one Storage, each with its group-commit writer: file 0 is the
    database itself."""

    def __init__(self, dbs: Sequence[Database], backlog: WriteBacklog) -> None:
        self.dbs = tuple(dbs)
        self.count = len(self.dbs)
        # Each writer tells the backlog its own name: input resumes once every one is clear.
        self.writers = tuple(ArchiveWriter(db, backlog=backlog, name="archive" if k == 0 else f"archive file {k}")
                             for k, db in enumerate(self.dbs))

    def index(self, host: str, username: str) -> int:
        """The file the archives of `username@host` (every store) are in."""
        return 0 if self.count == 1 else account_slot(host, username, self.count)

    def store(self, name: str, clock: Callable[[], float], cipher: Cipher | None) -> ArchiveStore | SplitArchiveStore:
        """The archive store `name`: a plain ArchiveStore on one file."""
        stores = [ArchiveStore(db, writer, name, clock, cipher) for db, writer in zip(self.dbs, self.writers)]
        return stores[0] if self.count == 1 else SplitArchiveStore(name, stores, self.index)

    @property
    def batches_committed(self) -> int:
        return sum(writer.batches_committed for writer in self.writers)

    async def flush(self) -> None:
        for writer in self.writers:
            await writer.flush()

    async def close(self) -> None:
        """Commit what is queued; close the files other than the database itself."""
        try:
            for writer in self.writers:
                await writer.close()
        finally:
            for db in self.dbs[1:]:
                await db.dispose()

    async def remove_user(self, host: str, username: str) -> None:
        """Delete every archive item of `username@host` in an archive file; the items in the
        database itself go in the caller's transaction (storage/accounts.py)."""
        index = self.index(host, username)
        if index:
            await self.dbs[index].execute("account.remove_archive", delete(archive).where(
                _a.owner.in_(_USER_OWNERS)), {"host": host, "username": username})


class SplitArchiveStore:
    """An archive store over several files: each call goes to the ArchiveStore of the file the
    archive is in (see ArchiveStore for what the calls do)."""

    def __init__(self, store: str, stores: Sequence[ArchiveStore], index: Callable[[str, str], int]) -> None:
        self.store = store
        self._stores = tuple(stores)
        self._index = index                   # ArchiveFiles.index: the one place that decides
        self._by_owner: dict[tuple[str, str], ArchiveStore] = {}     # queue() runs per message

    def _of(self, host: str, user: str) -> ArchiveStore:
        store = self._by_owner.get((host, user))
        if store is None:
            store = self._by_owner[(host, user)] = self._stores[self._index(host, user)]
        return store

    async def track_owners(self) -> None:
        for store in self._stores:
            await store.track_owners()

    def queue(self, host: str, user: str, value: str, with_jid: str | None, when: float, key: str) -> Commit:
        return self._of(host, user).queue(host, user, value, with_jid, when, key)

    async def append(self, host: str, user: str, value: str, **fields: object) -> ArchiveItem:
        return await self._of(host, user).append(host, user, value, **fields)

    def append_nowait(self, host: str, user: str, value: str, **fields: object) -> Commit:
        return self._of(host, user).append_nowait(host, user, value, **fields)

    async def query(self, host: str, user: str, **filters: object) -> list[ArchiveItem]:
        return await self._of(host, user).query(host, user, **filters)

    async def get_by_key(self, host: str, user: str, key: str) -> ArchiveItem | None:
        return await self._of(host, user).get_by_key(host, user, key)

    async def count(self, host: str, user: str, **filters: object) -> int:
        return await self._of(host, user).count(host, user, **filters)

    async def delete(self, host: str, user: str, **which: object) -> int:
        return await self._of(host, user).delete(host, user, **which)

    async def pop_all(self, host: str, user: str) -> list[ArchiveItem]:
        return await self._of(host, user).pop_all(host, user)


# -- opening and moving ------------------------------------------------------------------------------

async def open_archive_files(main: Database, wanted: int | None = None) -> list[Database]:
    """The archive's files, `main` first: as many as the database records, or with `wanted`, that
    many, after moving the archives whose file changes (see the module docstring). Finishes a move
    that a crash interrupted. Raises StorageError naming the file that cannot be used."""
    if main.path is None:                      # PostgreSQL, or SQLite in memory
        return [main]
    if wanted is not None and wanted < 1:
        raise ValueError(f"the archive needs at least one file, not {wanted}")
    count, moving_to = await _read_layout(main)
    if moving_to is None and wanted in (None, count):
        return await _open_files(main, count)
    lock = await asyncio.to_thread(_lock_moves, main.path)
    try:
        while True:
            count, moving_to = await _read_layout(main)      # again: another process may have moved
            if moving_to is None:
                if wanted in (None, count):
                    return await _open_files(main, count)
                moving_to = wanted
                await main.write("archive_files.plan", _set_layout, {_NEXT: moving_to})
            await _move(main, count, moving_to)
    finally:
        lock.close()                           # releases the lock


async def _open_files(main: Database, count: int) -> list[Database]:
    files = [main]
    try:
        for index in range(1, count):
            files.append(await _open_file(main, index))
    except BaseException:
        for db in files[1:]:
            await db.dispose()
        raise
    return files


async def _open_file(main: Database, index: int) -> Database:
    path = file_path(main.path, index)
    db = Database.from_url(f"sqlite:///{path}")
    try:
        await db.write("archive_files.prepare", _prepare_file, path)
    except BaseException:
        await db.dispose()
        raise
    return db


def _prepare_file(conn: Connection, path: str) -> None:
    raw = conn.connection.driver_connection
    version = raw.execute("PRAGMA user_version").fetchone()[0]
    if version == ARCHIVE_FILE_VERSION:
        return
    if version != 0:
        raise StorageError(f"the archive file {path} has version {version}, and this Stockade knows "
                           f"version {ARCHIVE_FILE_VERSION}; run the Stockade that wrote it, or restore the "
                           "database and its archive files from the same backup")
    metadata.create_all(conn, tables=[archive_owners, archive])
    raw.execute(f"PRAGMA user_version={ARCHIVE_FILE_VERSION:d}")


async def _read_layout(main: Database) -> tuple[int, int | None]:
    values = {name: value for name, value in await main.fetch_all("archive_files.layout", _LAYOUT)}
    return int(values.get(_FILES, 1)), values.get(_NEXT)


def _set_layout(conn: Connection, values: dict[str, int | None]) -> None:
    for name, value in values.items():
        conn.execute(delete(storage_layout).where(_l.name == name))
        if value is not None:
            conn.execute(storage_layout.insert().values(name=name, value=value))


def _lock_moves(database: str):
    """An exclusive lock on `<database>.archive-move.lock`, held while the file stays open."""
    lock = open(f"{database}.archive-move.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
    except BaseException:
        lock.close()
        raise
    return lock


async def _move(main: Database, count: int, target: int) -> None:
    """Move every archive to its file among `target` files, from files 0..max(count, target)-1
    (an interrupted move leaves archives in either place), then record `target`."""
    log.info("moving archives from %d file(s) to %d; the server starts serving once they are moved", count, target)
    files = await _open_files(main, max(count, target))
    try:
        moved = 0
        for index, db in enumerate(files):
            for owner_id, host, username, store in await db.fetch_all("archive_files.owners", _OWNERS_WITH_ITEMS):
                to = account_slot(host, username, target)
                if to != index:
                    await _move_archive(db, files[to], owner_id, {"host": host, "username": username, "store": store})
                    moved += 1
        await main.write("archive_files.done", _set_layout, {_FILES: target, _NEXT: None})
        log.info("the archive is now in %d file(s) (%d archive(s) moved)", target, moved)
    finally:
        for db in files[1:]:
            await db.dispose()
    for index in range(target, len(files)):      # empty now, and no longer opened by anyone
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(file_path(main.path, index) + suffix)
            except FileNotFoundError:
                pass


async def _move_archive(source: Database, to: Database, owner_id: int, who: dict[str, str]) -> None:
    """Copy one archive in archive order, commit, then delete it where it was."""
    await to.write("archive_files.clear", _clear_copy, who)
    insert_owner = to.insert_ignore(archive_owners, ("host", "username", "store"))
    insert_items = to.bulk_insert(archive, _COPY_COLUMNS)
    after: tuple[float, int] | None = None
    while True:
        stmt = select(_a.ts, _a.id, _a.key, _a.with_jid, _a.value).where(_a.owner == owner_id)
        if after is not None:
            stmt = stmt.where(tuple_(_a.ts, _a.id) > tuple_(*after))
        rows = await source.fetch_all("archive_files.read", stmt.order_by(_a.ts, _a.id).limit(MOVE_CHUNK))
        if not rows:
            break
        await to.write("archive_files.copy", _copy, insert_owner, insert_items, who,
                       [(key, ts, with_jid, value) for ts, _id, key, with_jid, value in rows])
        after = (rows[-1][0], rows[-1][1])
    await source.execute("archive_files.delete", delete(archive).where(_a.owner == owner_id))


def _clear_copy(conn: Connection, who: dict[str, str]) -> None:
    conn.execute(delete(archive).where(_a.owner.in_(_OWNER_ID)), who)


def _copy(conn: Connection, insert_owner, insert_items, who: dict[str, str], rows: list[tuple]) -> None:
    conn.execute(insert_owner, who)
    owner = conn.execute(_OWNER_ID, who).scalar_one()
    # Rows go in in archive order, and AUTOINCREMENT numbers them in that order.
    insert_items(conn, [(owner, *row) for row in rows])
