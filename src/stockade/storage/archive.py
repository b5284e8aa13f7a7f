"""Archive stores (offline messages, message archive) and their group-commit writer.

An archive store holds an ordered, append-only list of items per (host, user): serialised stanzas
with an id, a caller-given key (the XEP-0359 stanza id), a time and the conversation partner.

Appends are on the message path, so they are not written one transaction each. `ArchiveWriter`
queues them and a single background task writes everything queued so far (up to MAX_BATCH items)
in ONE transaction, then the next batch. No timer is involved: the batch is whatever arrived while
the previous one was committing, so a quiet server commits every append at once and a busy one
commits many per transaction. A caller's future resolves only after its batch committed, so an
acknowledged append is durable; if the batch fails, every future in it fails with StorageError.
Reads see committed items only: await the append (or `Storage.flush()`) before reading it back.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Row, bindparam, delete, func, insert, select

from .engine import Database
from .errors import StorageError
from .schema import archive

MAX_BATCH = 1000      # items per transaction; bounds the transaction size and a failure's blast radius

_c = archive.c
_ITEM_COLUMNS = (_c.id, _c.key, _c.ts, _c.with_jid, _c.value)
_INSERT = insert(archive)
_GET_BY_KEY = (select(*_ITEM_COLUMNS)
               .where(_c.host == bindparam("host"), _c.username == bindparam("username"),
                      _c.store == bindparam("store"), _c.key == bindparam("key"))
               .order_by(_c.id).limit(1))
_POP_ALL = (delete(archive)
            .where(_c.host == bindparam("host"), _c.username == bindparam("username"),
                   _c.store == bindparam("store"))
            .returning(*_ITEM_COLUMNS))


@dataclass(frozen=True, slots=True)
class ArchiveItem:
    """One stored item. `id` increases with every append and is never reused."""
    id: int
    key: str                    # the caller's unique id (XEP-0359 stanza id), or a generated one
    when: float                 # unix time
    with_jid: str | None        # the conversation partner (bare JID)
    value: str                  # serialised XML stanza


def _item(row: Row) -> ArchiveItem:
    return ArchiveItem(row.id, row.key, row.ts, row.with_jid, row.value)


class _Append:
    """A queued append: the row to insert and the caller's future."""
    __slots__ = ("row", "future")

    def __init__(self, row: dict, future: asyncio.Future[ArchiveItem]) -> None:
        self.row = row
        self.future = future


class ArchiveWriter:
    """The group-commit queue shared by every archive store of one Storage."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: list[_Append] = []
        self._task: asyncio.Task[None] | None = None
        self._queued = 0          # appends ever queued
        self._finished = 0        # appends whose batch has committed or failed (queue order)
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._is_closed = False
        self.batches_committed = 0     # transactions written so far (metrics, tests)
        self.items_committed = 0

    def submit(self, row: dict) -> asyncio.Future[ArchiveItem]:
        """Queue one row; the future resolves once it is committed."""
        if self._is_closed:
            raise StorageError("the storage is closed; archive appends are no longer accepted")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ArchiveItem] = loop.create_future()
        self._queue.append(_Append(row, future))
        self._queued += 1
        if self._task is None:
            # Started lazily so that whatever else is queued in this loop turn joins the batch.
            self._task = loop.create_task(self._run(), name="stockade-archive-writer")
        return future

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
        await self.flush()

    async def _run(self) -> None:
        batch: list[_Append] = []
        try:
            while self._queue:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
                await self._commit(batch)
                self._finish(len(batch))
                batch = []
        finally:
            # Only reached with work left if the task was cancelled (the event loop is shutting
            # down without Storage.close()): nobody may wait forever for an answer.
            left = batch + self._queue
            self._queue = []
            _fail(left, StorageError("the archive writer was stopped before these appends were "
                                     "confirmed, so they may be lost; close the Storage before "
                                     "stopping the event loop"))
            self._finish(len(left))
            self._task = None

    async def _commit(self, batch: list[_Append]) -> None:
        try:
            await self._db.write("archive.append", self._insert_batch, [e.row for e in batch])
        except Exception as exc:       # any failure fails this batch; the writer goes on
            error = exc if isinstance(exc, StorageError) else StorageError(
                f"archive append failed: {type(exc).__name__}: {exc}")
            _fail(batch, error)
            return
        self.batches_committed += 1
        self.items_committed += len(batch)
        for entry in batch:
            if not entry.future.done():       # the caller may have given up (cancelled)
                row = entry.row
                entry.future.set_result(
                    ArchiveItem(row["id"], row["key"], row["ts"], row["with_jid"], row["value"]))

    def _insert_batch(self, conn: Connection, rows: list[dict]) -> None:
        for row, item_id in zip(rows, self._db.allocate_ids(conn, archive, len(rows))):
            row["id"] = item_id
        conn.execute(_INSERT, rows)       # one executemany for the whole batch

    def _finish(self, count: int) -> None:
        self._finished += count
        still_waiting = []
        for target, waiter in self._flush_waiters:
            if self._finished >= target:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still_waiting.append((target, waiter))
        self._flush_waiters = still_waiting


def _fail(entries: list[_Append], error: StorageError) -> None:
    for entry in entries:
        if not entry.future.done():
            # One exception object per caller: raising the same one in many tasks tangles tracebacks.
            copy = StorageError(str(error))
            copy.__cause__ = error.__cause__ or error
            entry.future.set_exception(copy)


class ArchiveStore:
    """Ordered, append-only items per (host, user) in the store named `store`."""

    def __init__(self, db: Database, writer: ArchiveWriter, store: str,
                 clock: Callable[[], float]) -> None:
        self._db = db
        self._writer = writer
        self.store = store
        self._clock = clock

    async def append(self, host: str, user: str, value: str, *, with_jid: str | None = None,
                     when: float | None = None, key: str | None = None) -> ArchiveItem:
        """Append an item; returns once it is committed (group commit, see the module docstring)."""
        return await self.append_nowait(host, user, value, with_jid=with_jid, when=when, key=key)

    def append_nowait(self, host: str, user: str, value: str, *, with_jid: str | None = None,
                      when: float | None = None, key: str | None = None
                      ) -> asyncio.Future[ArchiveItem]:
        """Queue an append and return its future (resolves once committed)."""
        # Checked here, not by the database: one bad row would fail everybody's batch.
        if not isinstance(value, str):
            raise TypeError(f"archive values are serialised stanzas (str), not {type(value).__name__}")
        if with_jid is not None and not isinstance(with_jid, str):
            raise TypeError(f"with_jid must be a bare JID string or None, not {type(with_jid).__name__}")
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a string or None, not {type(key).__name__}")
        row = {"host": host, "username": user, "store": self.store,
               "key": key if key is not None else secrets.token_urlsafe(12),
               "ts": float(when if when is not None else self._clock()),
               "with_jid": with_jid, "value": value}
        return self._writer.submit(row)

    def _matching(self, host: str, user: str, with_jid: str | None, start: float | None,
                  end: float | None) -> list[ColumnElement[bool]]:
        conditions = [_c.host == host, _c.username == user, _c.store == self.store]
        if with_jid is not None:
            conditions.append(_c.with_jid == with_jid)
        if start is not None:
            conditions.append(_c.ts >= start)               # XEP-0313: on or after start
        if end is not None:
            conditions.append(_c.ts <= end)                 # XEP-0313: on or before end
        return conditions

    async def query(self, host: str, user: str, *, with_jid: str | None = None,
                    start: float | None = None, end: float | None = None,
                    after_id: int | None = None, before_id: int | None = None,
                    limit: int | None = None, reverse: bool = False) -> list[ArchiveItem]:
        """Matching items in ascending id order.

        `limit` keeps the first items, or with `reverse=True` the LAST ones (still returned in
        ascending order): that is the page XEP-0059 `<before/>` asks for.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, got {limit}")
        conditions = self._matching(host, user, with_jid, start, end)
        if after_id is not None:
            conditions.append(_c.id > after_id)
        if before_id is not None:
            conditions.append(_c.id < before_id)
        stmt = select(*_ITEM_COLUMNS).where(*conditions)
        stmt = stmt.order_by(_c.id.desc() if reverse else _c.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        items = [_item(row) for row in await self._db.fetch_all("archive.query", stmt)]
        if reverse:
            items.reverse()
        return items

    async def get_by_key(self, host: str, user: str, key: str) -> ArchiveItem | None:
        """The item appended with `key` (the first one, should a caller have reused a key)."""
        row = await self._db.fetch_first("archive.get_by_key", _GET_BY_KEY, {
            "host": host, "username": user, "store": self.store, "key": key})
        return None if row is None else _item(row)

    async def count(self, host: str, user: str, *, with_jid: str | None = None,
                    start: float | None = None, end: float | None = None) -> int:
        stmt = select(func.count()).select_from(archive).where(
            *self._matching(host, user, with_jid, start, end))
        return await self._db.scalar("archive.count", stmt)

    async def delete(self, host: str, user: str, *, ids: list[int] | None = None,
                     before: float | None = None) -> int:
        """Delete the user's items with these ids and/or older than `before` (strictly); with
        neither, all of them. Returns how many rows were deleted."""
        if ids is not None and not ids:
            return 0
        conditions = self._matching(host, user, None, None, None)
        if ids is not None:
            conditions.append(_c.id.in_(ids))
        if before is not None:
            conditions.append(_c.ts < before)
        return await self._db.execute("archive.delete", delete(archive).where(*conditions))

    async def pop_all(self, host: str, user: str) -> list[ArchiveItem]:
        """Read and delete all of the user's items in one statement (offline delivery): two
        concurrent pops never both get the same item."""
        rows = await self._db.execute_returning("archive.pop_all", _POP_ALL,
                                                {"host": host, "username": user, "store": self.store})
        return sorted((_item(row) for row in rows), key=lambda item: item.id)
