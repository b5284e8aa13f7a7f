"""The compliance journal's tables: hash-chained records in blocks, and signed checkpoints.

Records are written in blocks, one row of `journal_blocks` per group-commit batch (however many
records the writer had queued, 1 to compliance/journal.py's MAX_BATCH): a record costs no row, no
index entry and no bound parameters of its own, only its bytes in the block's body and one
SHA-256 of its content. Journals written before schema version 10 keep their records one per row
in `journal` ("legacy rows", below); the chain goes on from the last of them into the blocks.

A record is (id, ts, host, kind, conversation, participants, payload, purged); `payload` is
sealed with storage.cipher when encryption at rest is on. Two kinds of hash make the journal
tamper-evident and still purgeable:

- A record's `digest` = SHA-256 over its content: conversation and participants, each
  length-prefixed, then the payload's bytes (`block_digest`). Retention empties a record
  (conversation, participants and payload gone, `purged` set) and keeps its digest.
- A block's `hash` = SHA-256 over the block's first id, its record count, the previous block's
  hash (`prev_hash`; 64 zeros for the first), and every record's time, host, kind and digest
  (`block_hash`). Each record's place is thus fixed in the chain, and a purge, which changes
  only content and `purged`, leaves the hash as it was.

So an edited, inserted or removed record or block breaks the chain (compliance/journal_verify.py),
and a purged record still has its place in it.

Block body (`encode_block`, `decode_block`; integers and floats little-endian): b"SJB1", the
record count n, the byte lengths of the heads and parties sections (uint32 each); n float64
times; n float64 purge times (NaN: not purged); n 32-byte digests; n int64 payload lengths (-1:
none); the heads, one "host TAB kind" per record, joined by newlines; the parties, one compact
JSON array [conversation, participants] per record, joined by newlines; the payloads, back to
back. The table's columns besides the body (last_id, ts_first, ts_last, live) let retention and
readers pick blocks without opening them.

Legacy rows (`journal`): one record per row, with `digest` = hex SHA-256 of the length-prefixed
conversation, participants and payload (`record_digest`), and `hash` = hex SHA-256 of (id, ts,
host, kind, digest, prev_hash) (`record_hash`). They are read, verified and purged as before and
never written.

Writing. One writer (compliance/journal.py) appends whole batches with `append_batch`, in ONE
transaction each, as one block: it reads the chain head (last id and hash) inside the
transaction, under the journal lock (SQLite's write lock; an advisory lock on PostgreSQL, between
processes too), so two processes writing the same database still make one linear chain. Ids are
the head's id + 1, +2... rather than a sequence's values: a failed batch that is retried must not
leave a gap, which `verify` would report as removed records. The head is the larger of the last
block's last id and the blocks' id high-water mark (storage/engine.py; a block's row id is its
first record's id), so when the last block is deleted its ids are not given again and the gap
shows. The payload is built, sealed (storage.cipher) and hashed in the transaction function, that
is in the database thread, not on the message path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, insert, select, update

from .engine import Database, id_high_water, plain_sql
from .schema import journal, journal_blocks, journal_checkpoints

log = logging.getLogger("stockade.storage")

GENESIS_HASH = "0" * 64

# pg_advisory_xact_lock key that serialises journal appends ("Journal" in ASCII).
_APPEND_LOCK_KEY = 0x4A6F75726E616C

BLOCK_MAGIC = b"SJB1"
_BLOCK_HEADER = struct.Struct("<4sIII")          # magic, n, len(heads), len(parties)
_BLOCK_HASH_TAG = b"stockade-journal-block:1"
BLOCKS_PER_READ = 64                             # block ids per query while reading records in order
_NOT_PURGED = math.nan
_LITTLE = sys.byteorder == "little"

_j = journal.c
_b = journal_blocks.c
_k = journal_checkpoints.c
_ROW_COLUMNS = (_j.id, _j.ts, _j.host, _j.kind, _j.conversation, _j.participants, _j.payload,
                _j.digest, _j.prev_hash, _j.hash, _j.purged)
BLOCK_COLUMNS = (_b.id, _b.last_id, _b.body, _b.prev_hash, _b.hash)   # what decode_stored takes
_BLOCK_INSERT_COLUMNS = ("id", "last_id", "ts_first", "ts_last", "live", "body", "prev_hash", "hash")
_LAST_ROW = select(_j.id, _j.hash).order_by(_j.id.desc()).limit(1)
# The last block, read in every append transaction: plain SQL (engine.plain_sql), which costs a
# tenth of building and running it with SQLAlchemy each time.
_LAST_BLOCK_SQL = "SELECT last_id, hash FROM journal_blocks ORDER BY id DESC LIMIT 1"
_CHECKPOINT_COLUMNS = (_k.id, _k.ts, _k.last_id, _k.last_hash, _k.public_key, _k.signature)


def _part(value: bytes | None) -> bytes:
    if value is None:
        return b"\x00"
    return b"\x01" + len(value).to_bytes(8, "big") + value


# The encoded (conversation, participants) part of record digests (legacy and block): the same
# few thousand pairs come back with every record. Bounded like compliance/journal.py's caches.
_PARTIES_PARTS: dict[tuple[str | None, str | None], bytes] = {}
_PARTIES_PARTS_SIZE = 50_000
_sha256 = hashlib.sha256


def _parties_part(conversation: str | None, participants: str | None) -> bytes:
    """Conversation and participants as a digest starts with: each length-prefixed, NULL told
    apart from ''."""
    key = (conversation, participants)
    part = _PARTIES_PARTS.get(key)
    if part is None:
        part = (_part(None if conversation is None else conversation.encode("utf-8"))
                + _part(None if participants is None else participants.encode("utf-8")))
        if len(_PARTIES_PARTS) >= _PARTIES_PARTS_SIZE:
            _PARTIES_PARTS.clear()
        _PARTIES_PARTS[key] = part
    return part


def record_digest(conversation: str | None, participants: str | None, payload: bytes | None) -> str:
    """Hex SHA-256 of a legacy row's content: each field length-prefixed, NULL told apart from ''."""
    prefix = _parties_part(conversation, participants)
    if payload is None:
        return _sha256(prefix + b"\x00").hexdigest()
    return _sha256(b"".join((prefix, b"\x01", len(payload).to_bytes(8, "big"), payload))).hexdigest()


def record_hash(id: int, ts: float, host: str, kind: str, digest: str, prev_hash: str) -> str:
    """Hex SHA-256 of a legacy row's place in the chain: its fields one per line, the time as
    Python's shortest round-trip repr of the float. Unambiguous: no field can hold a line break
    (a domain, a kind name, hex digests)."""
    return _sha256(f"{int(id)}\n{float(ts)!r}\n{host}\n{kind}\n{digest}\n{prev_hash}".encode()).hexdigest()


def block_digest(conversation: str | None, participants: str | None, payload: bytes | None) -> bytes:
    """SHA-256 of a block record's content: conversation and participants length-prefixed
    (NULL told apart from ''), then 0x00 for no payload or 0x01 and the payload's bytes."""
    tail = b"\x00" if payload is None else b"\x01" + payload
    return _sha256(_parties_part(conversation, participants) + tail).digest()


def block_hash(first_id: int, prev_hash: str, times: bytes, heads: bytes, digests: bytes) -> str:
    """Hex SHA-256 of a block's place in the chain: its first id, its record count, the previous
    hash, and its records' times (float64 little-endian), heads (host TAB kind, one per line) and
    digests, which are what a purge leaves of a record."""
    count = len(digests) // 32
    return _sha256(b"%s\n%d\n%d\n%s\n%s%s%s" % (_BLOCK_HASH_TAG, first_id, count, prev_hash.encode("ascii"),
                                                 times, digests, heads)).hexdigest()


def checkpoint_message(last_id: int, last_hash: str, ts: float) -> bytes:
    """The bytes a checkpoint's Ed25519 signature covers."""
    return json.dumps({"last_hash": last_hash, "last_id": last_id, "ts": ts},
                      sort_keys=True, separators=(",", ":")).encode("utf-8")


class JournalRow(NamedTuple):
    """One stored record, payload possibly sealed. `block` is the first id of the block that
    holds it, and `prev_hash` and `hash` are the block's (None: a legacy row, with its own);
    `chained` whether the block's hash matched its contents when it was read (None: not
    checked, see `read_rows_after`)."""
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
    block: int | None = None
    chained: bool | None = True


def content_matches(row: JournalRow) -> bool:
    """Whether the record's content (conversation, participants, payload) gives its digest."""
    if row.block is None:
        return record_digest(row.conversation, row.participants, row.payload) == row.digest
    return block_digest(row.conversation, row.participants, row.payload).hex() == row.digest


def row_intact(row: JournalRow) -> bool:
    """Whether a record is not purged, its content gives its digest, and its hash (a legacy
    row's own, or its block's) matches (the chain as a whole is `verify`'s business)."""
    if row.purged is not None or not content_matches(row):
        return False
    if row.block is None:
        return record_hash(row.id, row.ts, row.host, row.kind, row.digest, row.prev_hash) == row.hash
    return row.chained is True


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
    """The associated data a record's payload is sealed with: it binds the payload to its id."""
    return b"stockade-journal:%d" % record_id


# -- blocks ---------------------------------------------------------------------------------------

class Block(NamedTuple):
    """A block as decoded (`decode_block`): per record lists, in id order."""
    id: int                              # its first record's id
    prev_hash: str
    hash: str
    times: list[float]
    purged: list[float | None]
    digests: list[bytes]
    heads: list[tuple[str, str]]         # (host, kind)
    parties: list[tuple[str | None, str | None]]   # (conversation, participants)
    payloads: list[bytes | None]
    chained: bool | None                 # block_hash of its contents is `hash` (None: not checked)

    @property
    def last_id(self) -> int:
        return self.id + len(self.times) - 1

    def rows(self) -> list[JournalRow]:
        first, prev, hash_, chained = self.id, self.prev_hash, self.hash, self.chained
        return [JournalRow(first + i, ts, head[0], head[1], parties[0], parties[1], payload,
                           digest.hex(), prev, hash_, purged, first, chained)
                for i, (ts, head, parties, payload, digest, purged)
                in enumerate(zip(self.times, self.heads, self.parties, self.payloads, self.digests, self.purged))]


class BlockError(ValueError):
    """A block's body cannot be decoded (damaged, or not a block)."""


def _le(values: array) -> bytes:
    if not _LITTLE:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _from_le(typecode: str, data: bytes) -> array:
    values = array(typecode)
    values.frombytes(data)
    if not _LITTLE:
        values.byteswap()
    return values


def _pack(count: int, times: bytes, purged: bytes, digests: bytes, lengths: bytes, heads: bytes,
          parties: bytes, payloads: Iterable[bytes]) -> bytes:
    return b"".join((_BLOCK_HEADER.pack(BLOCK_MAGIC, count, len(heads), len(parties)), times, purged,
                     digests, lengths, heads, parties, *payloads))


def encode_block(block: Block) -> bytes:
    """The body of `block` (the inverse of `decode_block`; `hash` and `chained` are not in it)."""
    for host, kind in block.heads:
        _check_head(host, kind)
    return _pack(len(block.times), _le(array("d", block.times)),
                 _le(array("d", (_NOT_PURGED if p is None else p for p in block.purged))),
                 b"".join(block.digests), _le(array("q", (-1 if p is None else len(p) for p in block.payloads))),
                 "\n".join(f"{h}\t{k}" for h, k in block.heads).encode("utf-8"),
                 "\n".join(_parties_json(c, p) for c, p in block.parties).encode("utf-8"),
                 (p for p in block.payloads if p is not None))


def decode_block(first_id: int, body: bytes, prev_hash: str, hash_: str, *, check: bool = True) -> Block:
    """The block stored with this first id, body and hashes. Raises BlockError when the body
    is not a well-formed block. `check` False: its hash is not computed (`chained` is None)."""
    body = bytes(body)
    try:
        magic, n, heads_len, parties_len = _BLOCK_HEADER.unpack_from(body)
    except struct.error:
        raise BlockError(f"the block at record {first_id} is too short to be a block") from None
    if magic != BLOCK_MAGIC or n == 0:
        raise BlockError(f"the block at record {first_id} is not a journal block")
    at = _BLOCK_HEADER.size
    fixed = at + n * (8 + 8 + 32 + 8)
    if len(body) < fixed + heads_len + parties_len:
        raise BlockError(f"the block at record {first_id} is cut short")
    times_bytes = body[at:at + 8 * n]
    times = _from_le("d", times_bytes).tolist()
    at += 8 * n
    purged = [None if p != p else p for p in _from_le("d", body[at:at + 8 * n]).tolist()]
    at += 8 * n
    digests_bytes = body[at:at + 32 * n]
    digests = [digests_bytes[i:i + 32] for i in range(0, 32 * n, 32)]
    at += 32 * n
    lengths = _from_le("q", body[at:at + 8 * n]).tolist()
    at += 8 * n
    heads_bytes = body[at:at + heads_len]
    at += heads_len
    parties_bytes = body[at:at + parties_len]
    at += parties_len
    try:
        heads = [tuple(line.split("\t")) for line in heads_bytes.decode("utf-8").split("\n")]
        # One JSON array per line, and JSON escapes line breaks in strings: the lines joined by
        # commas are one array of them, parsed in one call.
        parties = [tuple(p) for p in json.loads(b"[" + parties_bytes.replace(b"\n", b",") + b"]")]
    except (UnicodeDecodeError, ValueError, TypeError):
        raise BlockError(f"the block at record {first_id} has damaged heads or parties") from None
    if (len(heads) != n or len(parties) != n or any(len(h) != 2 for h in heads)
            or any(len(p) != 2 or not all(v is None or isinstance(v, str) for v in p) for p in parties)):
        raise BlockError(f"the block at record {first_id} does not hold {n} well-formed records")
    payloads: list[bytes | None] = []
    for length in lengths:
        if length < 0:
            payloads.append(None)
            continue
        payloads.append(body[at:at + length])
        at += length
    if at != len(body):
        raise BlockError(f"the block at record {first_id} has {len(body) - at} bytes more or less than its records")
    chained = block_hash(first_id, prev_hash, times_bytes, heads_bytes, digests_bytes) == hash_ if check else None
    return Block(first_id, prev_hash, hash_, times, purged, digests, heads,  # type: ignore[arg-type]
                 parties, payloads, chained)


def _check_head(host: str, kind: str) -> None:
    if "\t" in host or "\n" in host or "\t" in kind or "\n" in kind:
        raise ValueError(f"a journal host or kind cannot hold a tab or line break: {host!r} {kind!r}")


def _parties_json(conversation: str | None, participants: str | None) -> str:
    return json.dumps([conversation, participants], ensure_ascii=False, separators=(",", ":"))


# (host, kind, conversation, participants) -> (head line, parties line, the part of
# `block_digest` before the payload's bytes, which the writer hashes with them): the same
# few thousand come back with every record. Bounded like compliance/journal.py's caches.
_RECORD_PARTS: dict[tuple, tuple[str, str, bytes]] = {}
_RECORD_PARTS_SIZE = 50_000


def _record_parts(key: tuple) -> tuple[str, str, bytes]:
    host, kind, conversation, participants = key
    _check_head(host, kind)
    parts = (f"{host}\t{kind}", _parties_json(conversation, participants),
             _parties_part(conversation, participants) + b"\x01")
    if len(_RECORD_PARTS) >= _RECORD_PARTS_SIZE:
        _RECORD_PARTS.clear()
    _RECORD_PARTS[key] = parts
    return parts


class JournalStore:
    """Appends batches to the journal chain, writes checkpoints, reads both back, purges."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert_block = db.bulk_insert(journal_blocks, _BLOCK_INSERT_COLUMNS)

    @property
    def dialect(self) -> str:
        return self._db.dialect

    async def head(self) -> tuple[int, str]:
        """(last id, its hash) of the chain: (0, GENESIS_HASH) for an empty journal."""
        return await self._db.read("journal.head", _head)

    async def append_batch(self, entries: Sequence[Any], prepare: Callable[[Any], PreparedRecord],
                           seal: Sealer, checkpoint_every: int, sign: Signer | None,
                           now: float) -> tuple[int, str]:
        """Append every entry (turned into a record by `prepare`, in the database thread) as one
        block, in one transaction; a checkpoint is added when the chain crosses a multiple of
        `checkpoint_every`. Returns the new head. Raises StorageError, and nothing is written."""
        if not entries:
            return await self.head()
        head = await self._db.write("journal.append", self._append, entries, prepare, seal,
                                    checkpoint_every, sign, now)
        self._db.checkpoint_soon(len(entries))
        return head

    def _append(self, conn: Connection, entries: Sequence[Any], prepare: Callable[[Any], PreparedRecord],
                seal: Sealer, checkpoint_every: int, sign: Signer | None,
                now: float) -> tuple[int, str]:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_APPEND_LOCK_KEY)))
        head_id, prev_hash = _head(conn)
        first_id = next_id = head_id + 1
        times = array("d")
        lengths = array("q")
        heads: list[str] = []
        parties: list[str] = []
        payloads: list[bytes] = []
        digests: list[bytes] = []
        known = _RECORD_PARTS
        sha256 = _sha256
        for entry in entries:
            ts, host, kind, conversation, participants, payload = prepare(entry)
            key = (host, kind, conversation, participants)
            parts = known.get(key) or _record_parts(key)
            if seal is not None:
                payload = seal(payload, payload_aad(next_id))
            next_id += 1
            times.append(ts)
            heads.append(parts[0])
            parties.append(parts[1])
            lengths.append(len(payload))
            payloads.append(payload)
            digests.append(sha256(parts[2] + payload).digest())
        count = len(times)
        times_bytes, digests_bytes = _le(times), b"".join(digests)
        heads_bytes = "\n".join(heads).encode("utf-8")
        hash_ = block_hash(first_id, prev_hash, times_bytes, heads_bytes, digests_bytes)
        body = _pack(count, times_bytes, _le(array("d", (_NOT_PURGED,)) * count), digests_bytes, _le(lengths),
                     heads_bytes, "\n".join(parties).encode("utf-8"), payloads)
        last_id = next_id - 1
        self._insert_block(conn, [(first_id, last_id, min(times), max(times), count, body, prev_hash, hash_)])
        if sign is not None and last_id // checkpoint_every > head_id // checkpoint_every:
            _add_checkpoint(conn, sign, last_id, hash_, now)
        return last_id, hash_

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

    # -- reading --------------------------------------------------------------------------------
    async def rows(self, after_id: int, limit: int, *, host: str | None = None,
                   kind: str | None = None) -> list[JournalRow]:
        """Up to `limit` records with ids above `after_id`, in chain order, optionally of one
        host and/or kind. Raises BlockError for a block that cannot be decoded."""
        return await self._db.read("journal.rows", read_rows_after, after_id, limit, host, kind)

    async def rows_by_id(self, ids: Sequence[int]) -> list[JournalRow]:
        """The records with these ids (those that exist), in id order."""
        if not ids:
            return []
        return await self._db.read("journal.rows_by_id", read_rows_by_id, sorted(set(ids)))

    async def legacy_rows(self, after_id: int, limit: int) -> list[JournalRow]:
        """Up to `limit` legacy rows (one record per row, before blocks) with ids above `after_id`."""
        stmt = select(*_ROW_COLUMNS).where(_j.id > after_id).order_by(_j.id.asc()).limit(limit)
        return [_legacy_row(r) for r in await self._db.fetch_all("journal.legacy_rows", stmt)]

    async def blocks(self, after_id: int, limit: int) -> list[tuple[int, int, bytes, str, str]]:
        """Up to `limit` stored blocks whose first id is above `after_id`, in id order, as
        (first id, last id, body, prev_hash, hash): `decode_block` opens them (verify)."""
        stmt = select(*BLOCK_COLUMNS).where(_b.id > after_id).order_by(_b.id.asc()).limit(limit)
        return [(int(r[0]), int(r[1]), bytes(r[2]), r[3], r[4])
                for r in await self._db.fetch_all("journal.blocks", stmt)]

    async def checkpoints(self) -> list[CheckpointRow]:
        """Every checkpoint, oldest first."""
        stmt = select(*_CHECKPOINT_COLUMNS).order_by(_k.id.asc())
        return [CheckpointRow(int(r[0]), float(r[1]), int(r[2]), r[3], r[4], r[5])
                for r in await self._db.fetch_all("journal.checkpoints", stmt)]


# -- in a database thread ---------------------------------------------------------------------------

def _legacy_row(row: Any) -> JournalRow:
    payload = row[6]
    return JournalRow(int(row[0]), float(row[1]), row[2], row[3], row[4], row[5],
                      None if payload is None else bytes(payload), row[7], row[8], row[9],
                      None if row[10] is None else float(row[10]))


def decode_stored(row: Any) -> Block:
    """A block as read with BLOCK_COLUMNS, decoded and checked (`decode_block`)."""
    return decode_block(int(row[0]), row[2], row[3], row[4])


def read_rows_after(conn: Connection, after_id: int, limit: int, host: str | None = None,
                    kind: str | None = None, *, whole_blocks: bool = False) -> list[JournalRow]:
    """Up to `limit` records with ids above `after_id`, in id order, optionally of one host
    and/or kind. `whole_blocks`: the rest of the last block opened as well, unchecked (its
    rows' `chained` is None: the eDiscovery indexer, which reads every record once and does
    not show them, takes whole blocks instead of opening a block again for its next batch)."""
    stmt = select(*_ROW_COLUMNS).where(_j.id > after_id).order_by(_j.id.asc()).limit(limit)
    if host is not None:
        stmt = stmt.where(_j.host == host)
    if kind is not None:
        stmt = stmt.where(_j.kind == kind)
    found = [_legacy_row(r) for r in conn.execute(stmt)]
    start = _first_block_from(conn, after_id)
    while len(found) < limit:
        firsts = conn.execute(select(_b.id).where(_b.id >= start).order_by(_b.id.asc())
                              .limit(BLOCKS_PER_READ)).scalars().all()
        for first in firsts:
            row = conn.execute(select(*BLOCK_COLUMNS).where(_b.id == first)).one()
            block = decode_block(int(row[0]), row[2], row[3], row[4], check=not whole_blocks)
            found.extend(record for record in block.rows()
                         if record.id > after_id and (host is None or record.host == host)
                         and (kind is None or record.kind == kind))
            if len(found) >= limit:
                return found if whole_blocks else found[:limit]
        if len(firsts) < BLOCKS_PER_READ:
            break
        start = int(firsts[-1]) + 1
    return found


def read_rows_by_id(conn: Connection, ids: list[int]) -> list[JournalRow]:
    wanted = set(ids)
    found = [_legacy_row(r) for chunk in _chunks(ids, 500)
             for r in conn.execute(select(*_ROW_COLUMNS).where(_j.id.in_(chunk)))]
    for row in _blocks_holding(conn, ids):
        found.extend(r for r in decode_stored(row).rows() if r.id in wanted)
    found.sort(key=lambda r: r.id)
    return found


def _blocks_holding(conn: Connection, ids: list[int]) -> list[Any]:
    """The stored blocks (first id, last id, body, prev_hash, hash) that hold any of the sorted
    `ids`, in id order: for each id not in the block found last, the block with the largest
    first id at or below it."""
    found: list[Any] = []
    last = 0
    for record_id in ids:
        if record_id <= last:
            continue
        row = conn.execute(select(*BLOCK_COLUMNS).where(_b.id <= record_id)
                           .order_by(_b.id.desc()).limit(1)).first()
        if row is None or int(row[1]) < record_id:
            continue                       # not in a block (a legacy row, or no such record)
        found.append(row)
        last = int(row[1])
    return found


def _chunks(values: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def _first_block_from(conn: Connection, after_id: int) -> int:
    """The first id of the block that holds record `after_id` + 1 (or that id itself): blocks
    from there on hold the records after `after_id`, found by primary key."""
    start = conn.execute(select(func.max(_b.id)).where(_b.id <= after_id + 1)).scalar()
    return int(start) if start is not None else after_id + 1


def block_candidates(conn: Connection, host: str, before: float, after_id: int,
                     limit: int) -> list[tuple[int, float, str | None]]:
    """(id, ts, participants) of up to `limit` block records of `host` older than `before`, not
    purged, with ids above `after_id`, in id order (storage/retention.py)."""
    found: list[tuple[int, float, str | None]] = []
    start = _first_block_from(conn, after_id)
    while len(found) < limit:
        rows = conn.execute(select(*BLOCK_COLUMNS)
                            .where(_b.id >= start, _b.ts_first < before, _b.live > 0)
                            .order_by(_b.id.asc()).limit(BLOCKS_PER_READ)).all()
        for row in rows:
            try:
                block = decode_stored(row)
            except BlockError as exc:
                log.warning("retention skips a journal block it cannot read (%s); "
                            "`stockade archive verify` reports it", exc)
                continue
            for i, (ts, head, parties, purged) in enumerate(zip(block.times, block.heads, block.parties,
                                                              block.purged)):
                record_id = block.id + i
                if record_id > after_id and purged is None and ts < before and head[0] == host:
                    found.append((record_id, ts, parties[1]))
        if len(rows) < BLOCKS_PER_READ:
            break
        start = int(rows[-1][0]) + 1
    return found[:limit]


def purge_block_records(conn: Connection, ids: list[int], when: float) -> list[int]:
    """Empty the block records among the sorted `ids` (conversation, participants, payload)
    and mark them purged at `when`; digests and hashes stay. A record purged already, or whose
    content no longer gives its digest (it was changed: `verify` must still see that), is left
    as it is. Returns the ids of those emptied. In a write transaction."""
    wanted = set(ids)
    emptied_ids: list[int] = []
    for row in _blocks_holding(conn, ids):
        block = decode_stored(row)
        purged, parties, payloads = list(block.purged), list(block.parties), list(block.payloads)
        emptied: list[int] = []
        for i in range(len(block.times)):
            if block.id + i not in wanted or purged[i] is not None:
                continue
            if block_digest(parties[i][0], parties[i][1], payloads[i]) != block.digests[i]:
                continue
            purged[i], parties[i], payloads[i] = when, (None, None), None
            emptied.append(block.id + i)
        if not emptied:
            continue
        changed = block._replace(purged=purged, parties=parties, payloads=payloads)
        live = sum(p is None for p in purged)
        conn.execute(update(journal_blocks).where(_b.id == block.id)
                     .values(body=encode_block(changed), live=live))
        emptied_ids += emptied
    return emptied_ids


def _head(conn: Connection) -> tuple[int, str]:
    last = plain_sql(conn, _LAST_BLOCK_SQL).fetchone()
    if last is not None:
        top, last_hash = int(last[0]), last[1]
    else:
        row = conn.execute(_LAST_ROW).first()
        top, last_hash = (int(row[0]), row[1]) if row is not None else (0, GENESIS_HASH)
        # The high-water mark, not max(id): a deleted last record leaves its id used (a gap).
        top = max(top, id_high_water(conn, journal.name))
    # A deleted last block leaves its first id as the blocks' high-water mark: the next block
    # starts after it, and the gap shows.
    return max(top, id_high_water(conn, journal_blocks.name)), last_hash


def _add_checkpoint(conn: Connection, sign: Signer, last_id: int, last_hash: str,
                    now: float) -> CheckpointRow:
    public_key, signature = sign(last_id, last_hash, now)
    values = {"ts": now, "last_id": last_id, "last_hash": last_hash, "public_key": public_key,
              "signature": signature}
    new_id = conn.execute(insert(journal_checkpoints).values(values)
                          .returning(journal_checkpoints.c.id)).scalar_one()
    return CheckpointRow(int(new_id), now, last_id, last_hash, public_key, signature)
