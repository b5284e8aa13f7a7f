"""The audit log's table: append-only rows, each chained to the one before it by SHA-256.

Every row carries `prev_hash` (the previous row's `hash`; 64 zeros for the first row) and `hash`,
the SHA-256 of the canonical encoding of all its fields (`entry_hash`). Appends are serialised so
that the chain stays linear: one write transaction takes the append lock, reads the last hash,
allocates the next id and inserts. SQLite's write transactions already exclude each other (BEGIN
IMMEDIATE); on PostgreSQL, where several connections write at once, a transaction-scoped advisory
lock does it, between processes too (the CLI appends as well).

Ids are never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL): a deleted row leaves a
gap that `compliance.audit.AuditLog.verify` reports even when the rows after it were re-chained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Row, func, insert, select

from .engine import Database
from .schema import audit

GENESIS_HASH = "0" * 64

# pg_advisory_xact_lock key that serialises audit appends ("Audit" in ASCII).
_APPEND_LOCK_KEY = 0x4175646974

_COLUMNS = (audit.c.id, audit.c.ts, audit.c.host, audit.c.actor, audit.c.action, audit.c.target,
            audit.c.detail, audit.c.prev_hash, audit.c.hash)
_LAST = select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1)
_INSERT = insert(audit)


def entry_hash(id: int, ts: float, host: str, actor: str, action: str, target: str, detail: str,
               prev_hash: str) -> str:
    """The hex SHA-256 of one entry: JSON of every field, keys sorted, no spaces.

    `detail` is hashed as the JSON text stored, so that any change to it, even one that means
    the same, breaks the hash. The id is included: moving an entry breaks its hash as well.
    """
    canonical = json.dumps({"id": id, "ts": ts, "host": host, "actor": actor, "action": action,
                            "target": target, "detail": detail, "prev_hash": prev_hash},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One stored entry, exactly as in the table (`detail` is JSON text)."""
    id: int
    ts: float
    host: str
    actor: str
    action: str
    target: str
    detail: str
    prev_hash: str
    hash: str

    def computed_hash(self) -> str:
        """What `hash` must be for the fields as they are now."""
        return entry_hash(self.id, self.ts, self.host, self.actor, self.action, self.target,
                          self.detail, self.prev_hash)


def _row(row: Row) -> AuditRow:
    return AuditRow(int(row.id), float(row.ts), row.host, row.actor, row.action, row.target,
                    row.detail, row.prev_hash, row.hash)


class AuditStore:
    """Appends to the hash-chained audit table and reads it back (newest first, or in chain order)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, ts: float, host: str, actor: str, action: str, target: str,
                     detail: str) -> AuditRow:
        """Add an entry at the end of the chain; `detail` is JSON text. Returns the stored row."""
        return await self._db.write("audit.append", self._append, ts, host, actor, action, target,
                                    detail)

    def _append(self, conn: Connection, ts: float, host: str, actor: str, action: str, target: str,
                detail: str) -> AuditRow:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_APPEND_LOCK_KEY)))
        last = conn.execute(_LAST).first()
        prev_hash = last.hash if last is not None else GENESIS_HASH
        [id_] = self._db.allocate_ids(conn, audit, 1)
        row = AuditRow(id_, ts, host, actor, action, target, detail, prev_hash, "")
        values = {"id": id_, "ts": ts, "host": host, "actor": actor, "action": action,
                  "target": target, "detail": detail, "prev_hash": prev_hash,
                  "hash": row.computed_hash()}
        conn.execute(_INSERT, values)
        return AuditRow(**values)

    async def newest(self, *, host: str | None = None, action: str | None = None, limit: int = 100,
                     before_id: int | None = None) -> list[AuditRow]:
        """Up to `limit` entries, newest first, optionally of one host and/or one action, with
        ids below `before_id` (paging: pass the last id of the previous page)."""
        stmt = select(*_COLUMNS).order_by(audit.c.id.desc()).limit(limit)
        if host is not None:
            stmt = stmt.where(audit.c.host == host)
        if action is not None:
            stmt = stmt.where(audit.c.action == action)
        if before_id is not None:
            stmt = stmt.where(audit.c.id < before_id)
        return [_row(r) for r in await self._db.fetch_all("audit.newest", stmt)]

    async def in_order(self, after_id: int, limit: int) -> Sequence[AuditRow]:
        """Up to `limit` entries with ids above `after_id`, in chain (id) order."""
        stmt = (select(*_COLUMNS).where(audit.c.id > after_id).order_by(audit.c.id.asc())
                .limit(limit))
        return [_row(r) for r in await self._db.fetch_all("audit.in_order", stmt)]
