"""The compliance journal's tables: hash-chained records and signed checkpoints.

A record is (id, ts, host, kind, conversation, participants, payload, digest, prev_hash, hash,
purged). Two hashes make it tamper-evident and still purgeable:

- `digest` = SHA-256 over (conversation, participants, payload bytes), each length-prefixed
  (`record_digest`). It is what retention keeps when it empties a row.
- `hash` = SHA-256 over the canonical encoding of (id, ts, host, kind, digest, prev_hash)
  (`record_hash`), and `prev_hash` is the previous record's hash (64 zeros for the first).

So a purged row (conversation, participants and payload NULL, `purged` set) still has its place
in the chain, and an edited, inserted or deleted row breaks it (compliance/journal_verify.py).

Writing. One writer (compliance/journal.py) appends whole batches with `append_batch`, in ONE
transaction each: it reads the chain head (last id and hash) inside the transaction, under the
journal lock (SQLite's write lock; an advisory lock on PostgreSQL, between processes too), so two
processes writing the same database still make one linear chain. Ids are the head's id + 1, +2...
rather than a sequence's values: a failed batch that is retried must not leave a gap, which
`verify` would report as a removed record. The id high-water mark (storage/engine.py) is the head
on SQLite, so a deleted last record is never reused and shows as a gap. The payload is built,
sealed (storage.cipher) and hashed in the transaction function, that is in the database thread,
not on the message path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, insert, select

from .engine import Database, id_high_water
from .schema import journal, journal_checkpoints

GENESIS_HASH = "0" * 64

# pg_advisory_xact_lock key that serialises journal appends ("Journal" in ASCII).
_APPEND_LOCK_KEY = 0x4A6F75726E616C

_j = journal.c
_k = journal_checkpoints.c
_ROW_COLUMNS = (_j.id, _j.ts, _j.host, _j.kind, _j.conversation, _j.participants, _j.payload,
                _j.digest, _j.prev_hash, _j.hash, _j.purged)
_INSERT_COLUMNS = ("id", "ts", "host", "kind", "conversation", "participants", "payload", "digest",
                   "prev_hash", "hash")
_LAST = select(_j.id, _j.hash).order_by(_j.id.desc()).limit(1)
_CHECKPOINT_COLUMNS = (_k.id, _k.ts, _k.last_id, _k.last_hash, _k.public_key, _k.signature)


def _part(value: bytes | None) -> bytes:
    if value is None:
        return b"\x00"
    return b"\x01" + len(value).to_bytes(8, "big") + value


# The encoded (conversation, participants) part of record digests: the same few thousand pairs
# come back with every record. Bounded like compliance/journal.py's address cache.
_DIGEST_PREFIXES: dict[tuple[str | None, str | None], bytes] = {}
_DIGEST_PREFIXES_SIZE = 50_000
_sha256 = hashlib.sha256


def record_digest(conversation: str | None, participants: str | None, payload: bytes | None) -> str:
    """Hex SHA-256 of a record's content: each field length-prefixed, NULL told apart from ''."""
    key = (conversation, participants)
    prefix = _DIGEST_PREFIXES.get(key)
    if prefix is None:
        prefix = (_part(None if conversation is None else conversation.encode("utf-8"))
                  + _part(None if participants is None else participants.encode("utf-8")))
        if len(_DIGEST_PREFIXES) >= _DIGEST_PREFIXES_SIZE:
            _DIGEST_PREFIXES.clear()
        _DIGEST_PREFIXES[key] = prefix
    if payload is None:
        return _sha256(prefix + b"\x00").hexdigest()
    return _sha256(b"".join((prefix, b"\x01", len(payload).to_bytes(8, "big"), payload))).hexdigest()


def record_hash(id: int, ts: float, host: str, kind: str, digest: str, prev_hash: str) -> str:
    """Hex SHA-256 of a record's place in the chain: its fields one per line, the time as
    Python's shortest round-trip repr of the float. Unambiguous: no field can hold a line break
    (a domain, a kind name, hex digests)."""
    return _sha256(f"{int(id)}\n{float(ts)!r}\n{host}\n{kind}\n{digest}\n{prev_hash}".encode()).hexdigest()


def checkpoint_message(last_id: int, last_hash: str, ts: float) -> bytes:
    """The bytes a checkpoint's Ed25519 signature covers."""
    return json.dumps({"last_hash": last_hash, "last_id": last_id, "ts": ts},
                      sort_keys=True, separators=(",", ":")).encode("utf-8")


class JournalRow(NamedTuple):
    """One stored record, exactly as in the table (payload possibly sealed)."""
    id: int
    ts: float
    host: str
    kind: str
    conversation: str | None
    participants: str | None
    payload: bytes | None
    digest: str
    prev_hash: str
    hash: str
    purged: float | None


class CheckpointRow(NamedTuple):
    id: int
    ts: float
    last_id: int
    last_hash: str
    public_key: str          # hex raw Ed25519 public key
    signature: str           # hex


class Prepared(NamedTuple):
    """A record ready for the chain, before its id: what `prepare` makes of a queued entry."""
    ts: float
    host: str
    kind: str
    conversation: str | None
    participants: str | None
    payload: bytes           # the stanza's XML or JSON (compliance/journal.py), not yet sealed


# What a `prepare` function returns: Prepared's fields, as a Prepared or a plain tuple (cheaper).
PreparedRecord = tuple[float, str, str, str | None, str | None, bytes]
# seal(plaintext, aad) -> bytes, or None to store payloads as they are
Sealer = Callable[[bytes, bytes], bytes] | None
# sign(last_id, last_hash, ts) -> (public key hex, signature hex)
Signer = Callable[[int, str, float], tuple[str, str]]


def payload_aad(record_id: int) -> bytes:
    """The associated data a record's payload is sealed with: it binds the payload to its row."""
    return b"stockade-journal:%d" % record_id


def _row(row: Any) -> JournalRow:
    payload = row[6]
    return JournalRow(int(row[0]), float(row[1]), row[2], row[3], row[4], row[5],
                      None if payload is None else bytes(payload), row[7], row[8], row[9],
                      None if row[10] is None else float(row[10]))


class JournalStore:
    """Appends batches to the journal chain, writes checkpoints, reads both back."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert = db.bulk_insert(journal, _INSERT_COLUMNS)

    @property
    def dialect(self) -> str:
        return self._db.dialect

    async def head(self) -> tuple[int, str]:
        """(last id, its hash) of the chain: (0, GENESIS_HASH) for an empty journal."""
        return await self._db.read("journal.head", _head)

    async def append_batch(self, entries: Sequence[Any], prepare: Callable[[Any], PreparedRecord],
                           seal: Sealer, checkpoint_every: int, sign: Signer | None,
                           now: float) -> tuple[int, str]:
        """Append every entry (turned into a record by `prepare`, in the database thread) in one
        transaction; a checkpoint is added when the chain crosses a multiple of
        `checkpoint_every`. Returns the new head. Raises StorageError, and nothing is written."""
        head = await self._db.write("journal.append", self._append, entries, prepare, seal,
                                    checkpoint_every, sign, now)
        self._db.checkpoint_soon(len(entries))
        return head

    def _append(self, conn: Connection, entries: Sequence[Any], prepare: Callable[[Any], PreparedRecord],
                seal: Sealer, checkpoint_every: int, sign: Signer | None,
                now: float) -> tuple[int, str]:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_APPEND_LOCK_KEY)))
        first_id, prev_hash = _head(conn)
        next_id = first_id + 1
        rows = []
        append = rows.append
        for entry in entries:
            ts, host, kind, conversation, participants, payload = prepare(entry)
            if seal is not None:
                payload = seal(payload, payload_aad(next_id))
            digest = record_digest(conversation, participants, payload)
            hash_ = record_hash(next_id, ts, host, kind, digest, prev_hash)
            append((next_id, ts, host, kind, conversation, participants, payload, digest, prev_hash, hash_))
            prev_hash = hash_
            next_id += 1
        if rows:
            self._insert(conn, rows)
        last_id = next_id - 1
        if sign is not None and rows and last_id // checkpoint_every > first_id // checkpoint_every:
            _add_checkpoint(conn, sign, last_id, prev_hash, now)
        return last_id, prev_hash

    async def checkpoint(self, sign: Signer, now: float) -> CheckpointRow | None:
        """Sign the current head (shutdown); None when the journal is empty or the head is
        already the last checkpoint's."""
        return await self._db.write("journal.checkpoint", self._checkpoint, sign, now)

    def _checkpoint(self, conn: Connection, sign: Signer, now: float) -> CheckpointRow | None:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_APPEND_LOCK_KEY)))
        last_id, last_hash = _head(conn)
        if last_id == 0:
            return None
        newest = conn.execute(select(func.max(_k.last_id))).scalar()
        if newest is not None and newest >= last_id:
            return None
        return _add_checkpoint(conn, sign, last_id, last_hash, now)

    async def rows(self, after_id: int, limit: int, *, host: str | None = None,
                   kind: str | None = None) -> list[JournalRow]:
        """Up to `limit` records with ids above `after_id`, in chain order, optionally of one
        host and/or kind."""
        stmt = select(*_ROW_COLUMNS).where(_j.id > after_id).order_by(_j.id.asc()).limit(limit)
        if host is not None:
            stmt = stmt.where(_j.host == host)
        if kind is not None:
            stmt = stmt.where(_j.kind == kind)
        return [_row(r) for r in await self._db.fetch_all("journal.rows", stmt)]

    async def checkpoints(self) -> list[CheckpointRow]:
        """Every checkpoint, oldest first."""
        stmt = select(*_CHECKPOINT_COLUMNS).order_by(_k.id.asc())
        return [CheckpointRow(int(r[0]), float(r[1]), int(r[2]), r[3], r[4], r[5])
                for r in await self._db.fetch_all("journal.checkpoints", stmt)]


def _head(conn: Connection) -> tuple[int, str]:
    last = conn.execute(_LAST).first()
    last_hash = last[1] if last is not None else GENESIS_HASH
    # The high-water mark, not max(id): a deleted last record leaves its id used (a gap).
    return max(id_high_water(conn, journal.name), last[0] if last is not None else 0), last_hash


def _add_checkpoint(conn: Connection, sign: Signer, last_id: int, last_hash: str,
                    now: float) -> CheckpointRow:
    public_key, signature = sign(last_id, last_hash, now)
    values = {"ts": now, "last_id": last_id, "last_hash": last_hash, "public_key": public_key,
              "signature": signature}
    new_id = conn.execute(insert(journal_checkpoints).values(values)
                          .returning(journal_checkpoints.c.id)).scalar_one()
    return CheckpointRow(int(new_id), now, last_id, last_hash, public_key, signature)
