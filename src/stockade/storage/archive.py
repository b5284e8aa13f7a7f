"""Archive stores (offline messages, message archives, PEP items) and their group-commit writer.

An archive store holds an ordered, append-only list of items per (host, user): serialised stanzas
with an id, a caller-given key (the XEP-0359 stanza id), a time and the conversation partner.

Archive order is (time, id): by time, and items with the same time in append order. Writers keep
the time non-decreasing per archive (modules/mam/archiving.py, the clock), so it is also append
order; an item appended with an earlier time takes its place in time. Queries return items in
archive order and page with `after_item`/`before_item` (an item's `position`); an id alone says
nothing about order.

Group commit. Appends are on the message path (every chat message is archived twice, XEP-0313),
so they are not written one transaction each. `ArchiveWriter` queues them and a single background
task writes everything queued so far (up to MAX_BATCH items) in ONE transaction, then the next
batch. No timer is involved: the batch is whatever arrived while the previous one was committing,
so a quiet server commits every append at once and a busy one commits many per transaction, which
costs less per item the bigger it is. The appends of a batch share one future (`append_nowait`
returns it), which resolves only after the batch committed, so an acknowledged append is durable;
if the batch fails, it fails with StorageError. Reads see committed items only: await the append
(or `Storage.flush()`) first.

What an append costs, and why it is cheap:
- The table names its owner by an integer (`archive_owners`: host, user and store once). The id
  is kept in memory; the first append for an owner that this process has not seen creates or
  finds its row inside the writer's transaction (INSERT ... ON CONFLICT DO NOTHING, then SELECT),
  and the id is remembered once that transaction committed. Owner rows are never deleted, so a
  remembered id never goes stale, whatever another process does.
- A queued append is one tuple in its batch; the batch has one future for all its appends. A
  batch is one bulk insert (plain SQL, `Database.bulk_insert`: on SQLite a statement per
  thousand rows), with ids allocated up front so that `append` can tell each caller its item.
- Two indexes, each written where it is cheapest. (owner, ts, id, with_jid) serves paging in
  archive order, MAM start/end and retention; an append writes at the end of its owner's range.
  (key, owner) serves look-ups by stanza id; keys grow with time (storage/keys.py), so appends
  land at its end. Every further index whose insertion point differs per owner (by partner, by
  time alone, random keys) would cost one more B-tree page write per append: 4 to 6 us.

Encryption at rest. With a Cipher (storage/crypto.py), `value` is sealed when it is queued
(`Cipher.seal_text`, a few microseconds, in the caller's turn, not in the writer's transaction)
and opened on every read. The associated data is "archive", the store, the host and the user:
a value moved to another archive or store does not open. Keys, times and partners stay plain
(they are what the indexes sort and filter on); docs/encryption.md says so. Values stored while
encryption was off have no marker and are read as they are.

The trade-off: a `with_jid` filter (MAM "with", the PEP node) has no index of its own. It reads
the owner's range of the (owner, ts, id, with_jid) index, in archive order, until the page is
full, and a count reads all of the owner's entries in the time range; with_jid is carried in
that index so that neither touches the table. Measured on SQLite (bench/storage_append.py
--query; an archive of 100,000 items among 500,000): a page of 100 items with a partner of 1 in
100 items takes about 2 ms and its count 8 ms, against about 1 ms each with the version-1 index
by partner; a page with a partner that has no items reads the whole range (about 11 ms).
Carrying with_jid costs about 0.5 us per append; leaving it out makes those queries read the
table, 5 to 10 times slower. Without a partner a page is one seek (about 1 ms), and a count reads
the index range (about 5 ms for 100,000 items).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

from sqlalchemy import (ColumnElement, Connection, Row, bindparam, delete, func, select, tuple_)

from .backlog import WriteBacklog
from .crypto import Cipher, DecryptError, UnknownDataKey
from .engine import Database, plain_sql
from .errors import StorageError
from .keys import new_key
from .schema import archive, archive_owners

# Items per transaction. Under load the batch is full: the bigger it is, the fewer index pages
# each item has to itself (an item's owner index page is written once per batch, however many
# items of that owner it holds). It also bounds a failure's blast radius and a batch's commit
# time (a few tens of milliseconds at this size).
MAX_BATCH = 10_000

_c = archive.c
_o = archive_owners.c
_ITEM_COLUMNS = (_c.id, _c.key, _c.ts, _c.with_jid, _c.value)
_INSERT_COLUMNS = ("id", "owner", "key", "ts", "with_jid", "value")    # the id, then a queued row
_ROW_COLUMNS = _INSERT_COLUMNS[1:]                                      # a queued row alone
_ASCENDING = (_c.ts, _c.id)
_DESCENDING = (_c.ts.desc(), _c.id.desc())
# The owner of the archive a read is about, by name: one statement, no cache to trust.
_OWNER = (select(_o.id).where(_o.host == bindparam("host"), _o.username == bindparam("username"),
                              _o.store == bindparam("store"))
          .scalar_subquery())
_OWNER_ID = select(_o.id).where(_o.host == bindparam("host"), _o.username == bindparam("username"),
                                _o.store == bindparam("store"))
# No ORDER BY: it would tempt the planner into reading the owner's range in archive order.
_OWNERS_OF_STORE = select(_o.host, _o.username, _o.id).where(_o.store == bindparam("store"))
_GET_BY_KEY = select(*_ITEM_COLUMNS).where(_c.key == bindparam("key"), _c.owner == _OWNER)
_POP_ALL = delete(archive).where(_c.owner == _OWNER).returning(*_ITEM_COLUMNS)


class ArchiveItem(NamedTuple):
    """One stored item. `id` increases with every append and is never reused."""
    id: int
    key: str                    # the caller's unique id (XEP-0359 stanza id), or a generated one
    when: float                 # unix time
    with_jid: str | None        # the conversation partner (bare JID)
    value: str                  # serialised XML stanza

    @property
    def position(self) -> tuple[float, int]:
        """Where the item is in archive order: positions compare, ids do not."""
        return (self.when, self.id)


_new_item = partial(tuple.__new__, ArchiveItem)       # from a 5-tuple, without NamedTuple's __new__


def _item(row: Row) -> ArchiveItem:
    return _new_item(tuple(row))


# A queued row: (owner, key, ts, with_jid, value). `owner` is the owner id, or (store, host, user)
# when this process does not know the id yet; the writer resolves it in the transaction.
QueuedRow = tuple


class Commit(asyncio.Future):
    """The future of one batch, shared by all its appends: it resolves (to None) when the batch
    has committed, or fails with StorageError.

    It cannot be cancelled: cancelling it would cancel the wait of every other append in the
    batch. A task that awaits it and is cancelled (directly, or through `asyncio.gather` or a
    timeout) stops waiting once the batch is done, tens of milliseconds later at most; the
    append is written either way.
    """

    __slots__ = ()

    def cancel(self, msg: object = None) -> bool:
        return False


class _Batch:
    """Appends committed in one transaction: their rows, their shared future, then their ids."""

    __slots__ = ("rows", "commit", "ids")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.rows: list[QueuedRow] = []
        self.commit = Commit(loop=loop)
        self.ids: list[int] = []


class ArchiveWriter:
    """The group-commit queue shared by every archive store of one Storage."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH, backlog: WriteBacklog | None = None,
                 name: str = "archive") -> None:
        self._db = db
        self._name = name                     # what the backlog calls this writer
        self._max_batch = max_batch
        # Backpressure (backlog.py): over `_high` queued appends, client input pauses until the
        # queue is back to one batch. Two batches: one committing, a full one waiting.
        self.backlog = backlog if backlog is not None else WriteBacklog()
        self._high = 2 * max_batch
        # On SQLite the rows go in without their ids: AUTOINCREMENT gives them exactly the ids
        # allocate_ids computed (the next after the larger of the table's largest and its
        # sequence's, one after another), which saves a new tuple per row (see _insert_batch).
        self._ids_by_database = db.dialect == "sqlite"
        self._insert = db.bulk_insert(archive, _ROW_COLUMNS if self._ids_by_database else _INSERT_COLUMNS)
        self._insert_owner = db.insert_ignore(archive_owners, ("host", "username", "store"))
        self._batches: deque[_Batch] = deque()      # waiting to be written, oldest first
        self._open: _Batch | None = None            # the last one, while it takes more appends
        self._unresolved = 0        # queued rows whose owner id is not known yet
        self._owner_ids: dict[str, dict[tuple[str, str], int]] = {}   # store -> (host, user) -> id
        self._task: asyncio.Task[None] | None = None
        self._queued = 0          # appends ever queued
        self._finished = 0        # appends whose batch has committed or failed (queue order)
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._is_closed = False
        self.batches_committed = 0     # transactions written so far (metrics, tests)
        self.items_committed = 0

    def owner_ids(self, store: str) -> dict[tuple[str, str], int]:
        """The owner ids of `store` known to be committed, by (host, user): the writer adds to
        this dict, the store reads it on every append."""
        return self._owner_ids.setdefault(store, {})

    @property
    def joined(self) -> _Batch:
        """The batch the last submitted row joined (`submit` leaves it open)."""
        assert self._open is not None
        return self._open

    def submit(self, row: QueuedRow) -> _Batch:
        """Queue one row; its batch's `commit` resolves once it is committed."""
        batch = self._open
        if batch is None or len(batch.rows) >= self._max_batch:
            if self._is_closed:
                raise StorageError("the storage is closed; archive appends are no longer accepted")
            loop = asyncio.get_running_loop()
            batch = self._open = _Batch(loop)
            self._batches.append(batch)
            if self._task is None:
                # Started lazily so that whatever else is queued in this loop turn joins the batch.
                self._task = loop.create_task(self._run(), name=f"stockade-{self._name.replace(' ', '-')}-writer")
        batch.rows.append(row)
        self._queued += 1
        if row[0].__class__ is tuple:
            self._unresolved += 1
        if self._queued - self._finished > self._high:
            self.backlog.over(self._name, True)           # idempotent: only the first call counts
        return batch

    async def flush(self) -> None:
        """Wait until every append queued before this call has been committed (or has failed)."""
        target = self._queued
        if self._finished >= target:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, waiter))
        await waiter

    async def close(self) -> None:
        """Refuse new appends and wait for the queued ones."""
        self._is_closed = True
        self._open = None
        await self.flush()

    async def _run(self) -> None:
        batch: _Batch | None = None
        try:
            while self._batches:
                batch = self._batches.popleft()
                if batch is self._open:
                    self._open = None         # what comes now goes into the next batch
                await self._commit(batch)
                self._finish(len(batch.rows))
                batch = None
        finally:
            # Only reached with work left if the task was cancelled (the event loop is shutting
            # down without Storage.close()): nobody may wait forever for an answer.
            left = ([batch] if batch is not None else []) + list(self._batches)
            self._batches.clear()
            self._open = None
            self._unresolved = 0
            error = StorageError("the archive writer was stopped before these appends were "
                                 "confirmed, so they may be lost; close the Storage before "
                                 "stopping the event loop")
            for stopped in left:
                _fail(stopped, error)
            self._finish(sum(len(stopped.rows) for stopped in left))
            self._task = None

    async def _commit(self, batch: _Batch) -> None:
        rows = batch.rows
        new_owners: dict[tuple[str, str, str], int] = {}
        unresolved: list[int] = []
        if self._unresolved:
            unresolved = [n for n, row in enumerate(rows) if row[0].__class__ is tuple]
            self._unresolved -= len(unresolved)
        try:
            batch.ids = await self._db.write("archive.append", self._insert_batch, rows,
                                             unresolved, new_owners)
        except Exception as exc:       # any failure fails this batch; the writer goes on
            _fail(batch, exc if isinstance(exc, StorageError) else StorageError(
                f"archive append failed: {type(exc).__name__}: {exc}"))
            return
        for (store, host, user), owner_id in new_owners.items():
            self.owner_ids(store)[(host, user)] = owner_id       # committed: safe to remember
        self.batches_committed += 1
        self.items_committed += len(rows)
        self._db.checkpoint_soon(len(rows))
        if not batch.commit.done():
            batch.commit.set_result(None)

    def _insert_batch(self, conn: Connection, rows: list[QueuedRow], unresolved: list[int],
                      new_owners: dict[tuple[str, str, str], int]) -> list[int]:
        """The transaction: owner ids for the rows without one, ids, one bulk insert."""
        for n in unresolved:
            owner = rows[n][0]
            owner_id = new_owners.get(owner)
            if owner_id is None:
                store, host, user = owner
                owner_id = self.owner_ids(store).get((host, user))
                if owner_id is None:
                    owner_id = new_owners[owner] = self._owner_id(conn, store, host, user)
            rows[n] = (owner_id,) + rows[n][1:]
        ids = self._db.allocate_ids(conn, archive, len(rows))
        if self._ids_by_database:
            self._insert(conn, rows)
            last = plain_sql(conn, "SELECT last_insert_rowid()").fetchone()[0]
            if last != ids[-1]:
                raise StorageError(f"archive ids out of step: the database gave {last}, not {ids[-1]}")
        else:
            self._insert(conn, [(item_id,) + row for item_id, row in zip(ids, rows)])
        return ids

    def _owner_id(self, conn: Connection, store: str, host: str, user: str) -> int:
        """The id of the archive (host, user, store), created if it has none."""
        params = {"host": host, "username": user, "store": store}
        conn.execute(self._insert_owner, params)
        return conn.execute(_OWNER_ID, params).scalar_one()

    def _finish(self, count: int) -> None:
        self._finished += count
        if self._queued - self._finished <= self._max_batch:
            self.backlog.over(self._name, False)
        still_waiting = []
        for target, waiter in self._flush_waiters:
            if self._finished >= target:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still_waiting.append((target, waiter))
        self._flush_waiters = still_waiting


def _fail(batch: _Batch, error: StorageError) -> None:
    if not batch.commit.done():
        batch.commit.set_exception(error)


class ArchiveStore:
    """Ordered, append-only items per (host, user) in the store named `store`."""

    def __init__(self, db: Database, writer: ArchiveWriter, store: str,
                 clock: Callable[[], float], cipher: Cipher | None = None) -> None:
        self._db = db
        self._writer = writer
        self.store = store
        self._clock = clock
        self._cipher = cipher
        self._aad_prefix = f"archive\0{store}\0".encode()
        self._owner_ids = writer.owner_ids(store)
        self._owners_complete = False        # see track_owners

    async def track_owners(self) -> None:
        """Read the ids of every owner of this store once; from then on `count` answers 0 for an
        owner that has none without reading (owners are created only by this process's
        writer, which adds them here). For stores no other process appends to."""
        rows = await self._db.fetch_all("archive.owners", _OWNERS_OF_STORE, {"store": self.store})
        for host, username, owner_id in rows:
            self._owner_ids.setdefault((host, username), owner_id)
        self._owners_complete = True

    async def append(self, host: str, user: str, value: str, *, with_jid: str | None = None,
                     when: float | None = None, key: str | None = None) -> ArchiveItem:
        """Append an item; returns it once it is committed (group commit, see the module
        docstring). Raises StorageError if its batch failed."""
        batch = self._submit(host, user, value, with_jid, when, key)
        n = len(batch.rows) - 1
        await batch.commit
        row = batch.rows[n]
        return _new_item((batch.ids[n], row[1], row[2], row[3], value))

    def append_nowait(self, host: str, user: str, value: str, *, with_jid: str | None = None,
                      when: float | None = None, key: str | None = None) -> Commit:
        """Queue an append; returns the future of its batch, which resolves (to None) once the
        batch committed, and which the other appends of the batch share (see `Commit`: it
        cannot be cancelled). Use `append` for the stored item.

        `key` defaults to a new time-ordered key (storage/keys.py); a caller-made key should
        start with `keys.time_prefix()` too, or each append costs an index page of its own.
        `when` defaults to the store's clock. Raises StorageError at once if the storage is
        closed, TypeError for a value, partner or key that is not a string.
        """
        return self._submit(host, user, value, with_jid, when, key).commit

    def queue(self, host: str, user: str, value: str, with_jid: str | None, when: float, key: str) -> Commit:
        """`append_nowait` for a caller that gives every field itself, each already of the right
        type (the message archive, twice per message: strings it made, a time from its clock),
        so that nothing is checked or defaulted again."""
        owner = self._owner_ids.get((host, user))
        if owner is None:
            owner = (self.store, host, user)
        if self._cipher is not None:
            value = self._cipher.seal_text(value, self._aad(host, user))
        return self._writer.submit((owner, key, float(when), with_jid, value)).commit

    def _submit(self, host: str, user: str, value: str, with_jid: str | None, when: float | None,
                key: str | None) -> _Batch:
        # Checked here, not by the database: one bad row would fail everybody's batch.
        if value.__class__ is not str and not isinstance(value, str):
            raise TypeError(f"archive values are serialised stanzas (str), not {type(value).__name__}")
        if with_jid is not None and not isinstance(with_jid, str):
            raise TypeError(f"with_jid must be a bare JID string or None, not {type(with_jid).__name__}")
        if key is None:
            key = new_key()
        elif not isinstance(key, str):
            raise TypeError(f"key must be a string or None, not {type(key).__name__}")
        if not isinstance(host, str) or not isinstance(user, str):
            raise TypeError(f"an archive belongs to a host and a user (str), not {host!r}, {user!r}")
        self.queue(host, user, value, with_jid, self._clock() if when is None else when, key)
        return self._writer.joined

    def _aad(self, host: str, user: str) -> bytes:
        return self._aad_prefix + f"{host}\0{user}".encode()

    async def _items(self, host: str, user: str, rows: Sequence[Row]) -> list[ArchiveItem]:
        """The rows as items, their values opened (loading data keys another process made, once)."""
        cipher = self._cipher
        if cipher is None:
            return [_item(row) for row in rows]
        aad = self._aad(host, user)
        try:
            try:
                return [_new_item((row[0], row[1], row[2], row[3], cipher.open_text(row[4], aad)))
                        for row in rows]
            except UnknownDataKey:
                await cipher.reload()
                return [_new_item((row[0], row[1], row[2], row[3], cipher.open_text(row[4], aad)))
                        for row in rows]
        except DecryptError as exc:
            raise StorageError(f"an item of the {self.store!r} archive of {user}@{host} cannot be "
                               f"decrypted: {exc}; restore the database or the key file from a backup "
                               "if this persists") from None

    def _who(self, host: str, user: str) -> dict[str, str]:
        return {"host": host, "username": user, "store": self.store}

    @staticmethod
    def _matching(with_jid: str | None, start: float | None, end: float | None,
                  after_item: ArchiveItem | None, before_item: ArchiveItem | None
                  ) -> list[ColumnElement[bool]]:
        conditions = [_c.owner == _OWNER]
        if with_jid is not None:
            conditions.append(_c.with_jid == with_jid)
        if start is not None:
            conditions.append(_c.ts >= start)               # XEP-0313: on or after start
        if end is not None:
            conditions.append(_c.ts <= end)                 # XEP-0313: on or before end
        if after_item is not None:
            conditions.append(tuple_(_c.ts, _c.id) > tuple_(after_item.when, after_item.id))
        if before_item is not None:
            conditions.append(tuple_(_c.ts, _c.id) < tuple_(before_item.when, before_item.id))
        return conditions

    async def query(self, host: str, user: str, *, with_jid: str | None = None,
                    start: float | None = None, end: float | None = None,
                    after_item: ArchiveItem | None = None, before_item: ArchiveItem | None = None,
                    limit: int | None = None, reverse: bool = False) -> list[ArchiveItem]:
        """Matching items in archive order, strictly after `after_item` and before `before_item`
        when given (items of this archive, or anything with their `when` and `id`).

        `limit` keeps the first items, or with `reverse=True` the LAST ones (still returned in
        archive order): that is the page XEP-0059 `<before/>` asks for.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, got {limit}")
        stmt = (select(*_ITEM_COLUMNS)
                .where(*self._matching(with_jid, start, end, after_item, before_item))
                .order_by(*(_DESCENDING if reverse else _ASCENDING)))
        if limit is not None:
            stmt = stmt.limit(limit)
        items = await self._items(host, user, await self._db.fetch_all("archive.query", stmt,
                                                                        self._who(host, user)))
        if reverse:
            items.reverse()
        return items

    async def get_by_key(self, host: str, user: str, key: str) -> ArchiveItem | None:
        """The item appended with `key` (the first in archive order, should a caller have reused
        a key)."""
        rows = await self._db.fetch_all("archive.get_by_key", _GET_BY_KEY,
                                        {**self._who(host, user), "key": key})
        return min(await self._items(host, user, rows), key=_position, default=None)

    async def count(self, host: str, user: str, *, with_jid: str | None = None,
                    start: float | None = None, end: float | None = None,
                    after_item: ArchiveItem | None = None,
                    before_item: ArchiveItem | None = None) -> int:
        """How many items `query` would return with the same filters and no limit."""
        if self._owners_complete and (host, user) not in self._owner_ids:
            return 0                             # never had an item (see track_owners)
        stmt = select(func.count()).select_from(archive).where(
            *self._matching(with_jid, start, end, after_item, before_item))
        return await self._db.scalar("archive.count", stmt, self._who(host, user))

    async def delete(self, host: str, user: str, *, ids: list[int] | None = None,
                     before: float | None = None) -> int:
        """Delete the user's items with these ids and/or older than `before` (strictly); with
        neither, all of them. Returns how many rows were deleted."""
        if ids is not None and not ids:
            return 0
        conditions = [_c.owner == _OWNER]
        if ids is not None:
            conditions.append(_c.id.in_(ids))
        if before is not None:
            conditions.append(_c.ts < before)
        return await self._db.execute("archive.delete", delete(archive).where(*conditions),
                                      self._who(host, user))

    async def pop_all(self, host: str, user: str) -> list[ArchiveItem]:
        """Read and delete all of the user's items in one statement (offline delivery): two
        concurrent pops never both get the same item. Returned in archive order."""
        rows = await self._db.execute_returning("archive.pop_all", _POP_ALL, self._who(host, user))
        return sorted(await self._items(host, user, rows), key=_position)


def _position(item: ArchiveItem) -> tuple[float, int]:
    return (item.when, item.id)
