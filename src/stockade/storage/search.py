"""The eDiscovery search index: blind tokens per journal record, and who took part in it.

The journal (storage/journal.py) keeps message text sealed; an index of words in clear would
put that text back into the database. So the index holds *blind tokens*: each normalised word
(NFKC, casefolded, split on non-word characters) replaced by a keyed hash, HMAC-SHA256 under the
index key, truncated to 64 bits and written as `t` + 16 hex digits. Whoever reads the database
sees which records share a word, never the word; to search for a word one must know the key.
The key is a random 256-bit key kept in `search_state`, sealed by the storage cipher when
encryption at rest is on (so the master key protects it like the journal itself).

Tables (migrations m0006_search, m0010_journal_blocks):
- `search_records`: one row per indexed record that is not purged: its id, host, time and kind,
  which a search filters by (journal blocks, storage/journal.py, have no such columns per
  record).
- `search_docs`: one row per indexed journal record with words (id = the journal id), its host and its
  token string (`tsv` is used on PostgreSQL only and stays NULL on SQLite). On SQLite a contentless FTS5 table `search_fts` (rowid = journal id) indexes the
  token strings; FTS5 needs the original text to delete a row from a contentless index, which is
  why `search_docs` keeps it. On PostgreSQL `search_docs.tsv` is a tsvector ('simple' over the
  token strings) with a GIN index.
- `search_participants`: (jid, journal id) for every bare JID taking part in a record, so that
  "messages of alice" is an index look-up.
- `search_state`: name -> value: the id of the last journal record indexed, the index key.

Nothing here decrypts: compliance/search_index.py reads journal rows through `journal_after`,
opens their payloads, and hands the tokens back to `add`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, column, delete, exists, func, insert, literal_column, or_, select, text
from sqlalchemy import table as lightweight_table

from .engine import Database
from .journal import BLOCK_COLUMNS, BlockError, JournalRow, decode_stored, read_rows_after, read_rows_by_id
from .schema import journal, journal_blocks, search_docs, search_participants, search_records, search_state

TOKEN_BYTES = 8                    # 64 bits of HMAC per word: 16 hex digits
MAX_WORD = 100                     # longer "words" (base64 blobs, URLs) are cut to this many characters
LAST_INDEXED = "last_indexed"      # search_state: id of the last journal record looked at
INDEX_KEY = "index_key"            # search_state: the blind-token key ("plain:" or "sealed:" + base64)

_WORD = re.compile(r"\w+")

_search_fts = lightweight_table("search_fts", column("rowid"), column("tokens"))


def words(value: str) -> list[str]:
    """The normalised words of `value`: NFKC, casefolded, split on non-word characters."""
    normal = unicodedata.normalize("NFKC", value).casefold()
    return [w[:MAX_WORD] for w in _WORD.findall(unicodedata.normalize("NFKC", normal))]


def blind(key: bytes, word: str) -> str:
    """The blind token of one normalised word under `key`."""
    return "t" + hmac.new(key, word.encode("utf-8"), hashlib.sha256).digest()[:TOKEN_BYTES].hex()


def blind_tokens(key: bytes, texts: Iterable[str]) -> list[str]:
    """The distinct blind tokens of every word in `texts`, in first-seen order."""
    seen: dict[str, None] = {}
    for value in texts:
        for word in words(value):
            seen.setdefault(blind(key, word), None)
    return list(seen)


@dataclass(frozen=True, slots=True)
class Criteria:
    """What a search asks for. Empty tuples and None mean "any"."""
    host: str
    start: float | None = None                       # ts >= start
    end: float | None = None                         # ts < end
    kinds: tuple[str, ...] = ()
    with_any: tuple[str, ...] = ()                   # at least one of these bare JIDs took part
    with_all: tuple[str, ...] = ()                   # every one of these took part
    tokens: tuple[str, ...] = ()                     # blind tokens that must all be in the record
    after_id: int = 0                                # paging: records after this journal id
    limit: int = 100


class SearchStore:
    """The index tables: state, adding and dropping records, and the search query."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.dialect = db.dialect

    # -- state ----------------------------------------------------------------------------------
    async def state(self, name: str) -> str | None:
        return await self._db.scalar("search.state", select(search_state.c.value)
                                     .where(search_state.c.name == name))

    async def init_state(self, name: str, value: str) -> str:
        """Store `value` under `name` unless a value is there already; the value stored."""
        return await self._db.write("search.init_state", self._init_state, name, value)

    def _init_state(self, conn: Connection, name: str, value: str) -> str:
        conn.execute(self._db.insert_ignore(search_state, ["name"]), {"name": name, "value": value})
        return conn.execute(select(search_state.c.value).where(search_state.c.name == name)).scalar_one()

    async def last_indexed(self) -> int:
        value = await self.state(LAST_INDEXED)
        return int(value) if value else 0

    # -- the journal, as read by the indexer and the search -------------------------------------
    async def journal_after(self, after_id: int, limit: int) -> list[JournalRow]:
        """At least `limit` journal records with ids above `after_id` (if there are), in id
        order, up to the end of the last journal block read (for the indexer: each block is
        opened once; their hashes are not checked)."""
        return await self._db.read("search.journal_after", _whole_blocks_after, after_id, limit)

    async def journal_rows(self, ids: Sequence[int]) -> list[JournalRow]:
        """The journal records with these ids, in id order."""
        if not ids:
            return []
        return await self._db.read("search.journal_rows", read_rows_by_id, sorted(set(ids)))

    # -- writing the index ----------------------------------------------------------------------
    async def add(self, expected_last: int, new_last: int, records: Sequence[tuple[int, str, float, str]],
                  docs: Sequence[tuple[int, str, str]], participants: Sequence[tuple[str, int]]) -> bool:
        """Index one batch: `records` are (journal id, host, ts, kind) of every record indexed,
        `docs` (journal id, host, token string) of those with words, `participants` (bare JID,
        journal id); the index then covers the journal up to `new_last`. Only if nobody else
        (another process) indexed past `expected_last` meanwhile; False, and nothing written, if so."""
        return await self._db.write("search.add", self._add, expected_last, new_last, records, docs, participants)

    def _add(self, conn: Connection, expected_last: int, new_last: int, records: Sequence[tuple[int, str, float, str]],
             docs: Sequence[tuple[int, str, str]], participants: Sequence[tuple[str, int]]) -> bool:
        if self.dialect == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_INDEX_LOCK_KEY)))
        current = conn.execute(select(search_state.c.value).where(search_state.c.name == LAST_INDEXED)).scalar()
        if int(current or 0) != expected_last:
            return False
        if records:
            conn.execute(insert(search_records), [{"id": i, "host": h, "ts": t, "kind": k} for i, h, t, k in records])
        if docs:
            rows = [{"id": i, "host": h, "tokens": t} for i, h, t in docs]
            if self.dialect == "postgresql":
                conn.execute(text("INSERT INTO search_docs (id, host, tokens, tsv) "
                                  "VALUES (:id, :host, :tokens, to_tsvector('simple', :tokens))"), rows)
            else:
                conn.execute(insert(search_docs), rows)
                conn.execute(text("INSERT INTO search_fts(rowid, tokens) VALUES (:id, :tokens)"), rows)
        if participants:
            conn.execute(self._db.insert_ignore(search_participants, ["jid", "journal_id"]),
                         [{"jid": j, "journal_id": i} for j, i in participants])
        conn.execute(self._db.upsert(search_state, ["name"], ["value"]),
                     {"name": LAST_INDEXED, "value": str(new_last)})
        return True

    async def drop_purged(self, limit: int = 1000) -> int:
        """Remove from the index up to `limit` records that retention purged; how many.

        Retention removes a record's `search_records` row when it purges it; its words and
        participants, and the rows of records indexed while retention ran, go here. Finding them
        reads the index against the journal's legacy rows, which have no index on `purged`, and
        opens the journal blocks with purged records that the index still has rows in: the
        indexer does it now and then (`SearchIndex.sweep_purged`), not on every pass. Searches
        never return a purged record anyway (`EDiscovery` checks the journal record)."""
        found = await self._db.read("search.purged", self._purged, limit)
        if not any(found):
            return 0
        return await self._db.write("search.drop_purged", self._drop, *found)

    @staticmethod
    def _purged(conn: Connection, limit: int) -> tuple[list[int], list[int], list[int]]:
        gone = journal.c.purged.is_not(None)
        columns = (search_docs.c.id, search_participants.c.journal_id, search_records.c.id)
        found: tuple[list[int], list[int], list[int]] = ([], [], [])
        for ids, indexed in zip(found, columns):
            ids.extend(conn.execute(select(indexed).distinct().join(journal, journal.c.id == indexed)
                                    .where(gone).limit(limit)).scalars())
        # Blocks: those with purged records and rows of the index in their range.
        b = journal_blocks.c
        in_index = or_(*(exists().where(indexed >= b.id, indexed <= b.last_id) for indexed in columns))
        firsts = conn.execute(select(b.id).where(b.live < b.last_id - b.id + 1, in_index)
                              .order_by(b.id)).scalars().all()
        for first in firsts:
            if all(len(ids) >= limit for ids in found):
                break
            try:
                block = decode_stored(conn.execute(select(*BLOCK_COLUMNS).where(b.id == first)).one())
            except BlockError:
                continue                 # damaged: `stockade archive verify` names it
            purged = [block.id + i for i, when in enumerate(block.purged) if when is not None]
            for chunk in range(0, len(purged), 500):
                some = purged[chunk:chunk + 500]
                for ids, indexed in zip(found, columns):
                    ids.extend(conn.execute(select(indexed).distinct().where(indexed.in_(some))).scalars())
        docs, people, records = (ids[:limit] for ids in found)
        return docs, people, records

    def _drop(self, conn: Connection, docs: list[int], people: list[int], records: list[int]) -> int:
        # Read again under the write lock: another process may have dropped some meanwhile, and
        # FTS5 must be told the exact text of each row it forgets.
        rows = conn.execute(select(search_docs.c.id, search_docs.c.tokens)
                            .where(search_docs.c.id.in_(docs))).all() if docs else []
        if self.dialect == "sqlite" and rows:
            conn.execute(text("INSERT INTO search_fts(search_fts, rowid, tokens) VALUES ('delete', :id, :tokens)"),
                         [{"id": r.id, "tokens": r.tokens} for r in rows])
        if rows:
            conn.execute(delete(search_docs).where(search_docs.c.id.in_([r.id for r in rows])))
        if people:
            conn.execute(delete(search_participants).where(search_participants.c.journal_id.in_(people)))
        if records:
            conn.execute(delete(search_records).where(search_records.c.id.in_(records)))
        return len(set(docs) | set(people) | set(records))

    # -- searching ------------------------------------------------------------------------------
    async def find(self, criteria: Criteria) -> list[int]:
        """Journal ids matching `criteria`, in id order (not purged, within the host)."""
        return list(await self._db.read("search.find", self._find, criteria))

    def _find(self, conn: Connection, c: Criteria) -> Sequence[int]:
        j = search_records
        stmt = select(j.c.id).where(j.c.host == c.host, j.c.id > c.after_id)
        if c.start is not None:
            stmt = stmt.where(j.c.ts >= c.start)
        if c.end is not None:
            stmt = stmt.where(j.c.ts < c.end)
        if c.kinds:
            stmt = stmt.where(j.c.kind.in_(list(c.kinds)))
        if c.with_any:
            stmt = stmt.where(j.c.id.in_(select(search_participants.c.journal_id)
                                         .where(search_participants.c.jid.in_(list(c.with_any)))))
        for jid in c.with_all:
            stmt = stmt.where(j.c.id.in_(select(search_participants.c.journal_id)
                                         .where(search_participants.c.jid == jid)))
        if c.tokens:
            if self.dialect == "postgresql":
                query = " & ".join(c.tokens)
                stmt = stmt.where(j.c.id.in_(select(search_docs.c.id).where(
                    search_docs.c.tsv.op("@@")(func.to_tsquery("simple", query)))))
            else:
                match = " AND ".join(f'"{t}"' for t in c.tokens)
                stmt = stmt.where(j.c.id.in_(select(_search_fts.c.rowid).where(
                    literal_column("search_fts").op("MATCH")(match))))
        stmt = stmt.order_by(j.c.id).limit(c.limit)
        return conn.execute(stmt).scalars().all()

    async def counts(self) -> dict[str, int]:
        """Rows in the index tables (for status output and tests)."""
        def count(conn: Connection) -> dict[str, int]:
            return {"records": conn.execute(select(func.count()).select_from(search_records)).scalar_one(),
                    "docs": conn.execute(select(func.count()).select_from(search_docs)).scalar_one(),
                    "participants": conn.execute(select(func.count()).select_from(search_participants))
                    .scalar_one()}
        return await self._db.read("search.counts", count)


# pg_advisory_xact_lock key that serialises index batches between processes ("Search" in ASCII).
_INDEX_LOCK_KEY = 0x536561726368


def _whole_blocks_after(conn: Connection, after_id: int, limit: int) -> list[JournalRow]:
    return read_rows_after(conn, after_id, limit, whole_blocks=True)


def search_store(storage: Any) -> SearchStore:
    """The index tables of an open `Storage`."""
    return SearchStore(storage._db)


def encode_key(key: bytes, cipher: Any) -> str:
    """How the index key is stored: sealed by `cipher` when there is one."""
    if cipher is not None:
        return "sealed:" + base64.b64encode(cipher.seal(key, _KEY_AAD)).decode("ascii")
    return "plain:" + base64.b64encode(key).decode("ascii")


async def decode_key(stored: str, cipher: Any) -> bytes:
    """The index key from its stored form (ValueError if it cannot be read)."""
    kind, _, data = stored.partition(":")
    raw = base64.b64decode(data)
    if kind == "plain":
        return raw
    if kind == "sealed" and cipher is not None:
        return await cipher.unseal(raw, _KEY_AAD)
    raise ValueError("the search index key is sealed but encryption at rest is off: turn [encryption] back "
                     "on with the same master key")


_KEY_AAD = b"stockade search index key"
