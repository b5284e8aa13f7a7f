"""The SQL of retention purges (compliance/retention.py decides what, this file does it).

Three kinds of rows are purged, each the way its table needs:

- Archive items (MAM, offline, room archives): deleted per owner, older than that owner's
  cutoff, in the archive file the owner is in (storage/archive_files.py). Owners with the same cutoff are purged by one statement each chunk, through the
  (owner, ts, id) index that serves every archive read: a purge reads only the rows it deletes.
- Journal records (written by storage/journal.py, in blocks since version 10, one per row in
  `journal` before): never deleted. A purge empties a record's conversation, participants and
  payload and sets `purged` to the time; its digest, the hashes and its place in the chain stay,
  so `stockade archive verify` still checks the chain and reports the purged records. A block
  is rewritten with its purged records emptied (storage/journal.py `purge_block_records`); a
  legacy row is updated. Which records may go depends on their participants (retention per
  group, legal holds), so candidates are read in id order, in pages, and the caller picks.
- Uploaded files are not here: their records and bytes belong to the upload catalog
  (modules/upload/catalog.py), which removes both together.

Every statement works on SQLite and PostgreSQL (SQLAlchemy Core, no dialect-specific SQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, delete, func, inspect, select, update

from .engine import Database
from .journal import block_candidates, purge_block_records
from .schema import archive, archive_owners, journal, search_records

CHUNK = 500                 # owners or journal ids per statement (bounded parameter lists)

_a = archive.c
_o = archive_owners.c
_j = journal.c

_OWNERS = select(_o.id, _o.host, _o.username).where(_o.store == bindparam("store"))


class ArchiveOwner(NamedTuple):
    """One archive of a store: `host` and `username` as the store names them (for room
    archives: the MUC service domain and the room name); `id` is its number in archive file
    `file`."""
    id: int
    host: str
    username: str
    file: int = 0


class JournalCandidate(NamedTuple):
    """A journal record old enough that a purge may empty it (`participants` as stored)."""
    id: int
    ts: float
    participants: str | None


class RetentionStore:
    """Purges for retention. Counting (dry run) reads exactly what deleting would delete."""

    def __init__(self, db: Database, archive_dbs: Sequence[Database] | None = None) -> None:
        self._db = db
        self._archive_dbs = tuple(archive_dbs or (db,))       # the archive's files, db first
        self._has_journal: bool | None = None

    # -- archives -------------------------------------------------------------------------------
    async def archive_owners(self, store: str) -> list[ArchiveOwner]:
        """Every archive of `store` (owners are never deleted, so some may be empty)."""
        owners = []
        for file, db in enumerate(self._archive_dbs):
            rows = await db.fetch_all("retention.owners", _OWNERS, {"store": store})
            owners.extend(ArchiveOwner(*row, file) for row in rows)
        return owners

    async def purge_archive(self, cutoffs: dict[ArchiveOwner, float], *, dry_run: bool = False) -> int:
        """Delete (or, with `dry_run`, count) the items of each owner strictly older than its
        cutoff (unix time). Returns how many items that is."""
        by_cutoff: dict[tuple[int, float], list[int]] = {}
        for owner, cutoff in cutoffs.items():
            by_cutoff.setdefault((owner.file, cutoff), []).append(owner.id)
        total = 0
        for (file, cutoff), owners in sorted(by_cutoff.items()):
            db = self._archive_dbs[file]
            for chunk in _chunks(sorted(owners)):
                where = (_a.owner.in_(chunk), _a.ts < cutoff)
                if dry_run:
                    total += await db.scalar("retention.archive_count",
                                             select(func.count()).select_from(archive).where(*where))
                else:
                    total += await db.execute("retention.archive_purge", delete(archive).where(*where))
        return total

    # -- journal --------------------------------------------------------------------------------
    async def has_journal(self) -> bool:
        """Whether the database has the journal table (an older schema may not)."""
        if not self._has_journal:
            self._has_journal = await self._db.read("retention.has_journal", _has_journal_table)
        return self._has_journal

    async def journal_candidates(self, host: str, before: float, *, after_id: int = 0,
                                 limit: int = CHUNK) -> list[JournalCandidate]:
        """Journal records of `host` older than `before`, not purged yet, with ids above
        `after_id`, in id order (page with the last id returned)."""
        return await self._db.read("retention.journal_candidates", _journal_candidates, host, before,
                                   after_id, limit)

    async def purge_journal(self, ids: Sequence[int], when: float) -> int:
        """Empty these journal records (conversation, participants, payload) and mark them
        purged at `when`; the digest and hashes stay. Returns how many were emptied (a record
        purged already is left as it is)."""
        total = 0
        for chunk in _chunks(sorted(ids)):
            total += await self._db.write("retention.journal_purge", _purge_journal, chunk, when)
        return total


def _journal_candidates(conn: Connection, host: str, before: float, after_id: int,
                        limit: int) -> list[JournalCandidate]:
    stmt = (select(_j.id, _j.ts, _j.participants)
            .where(_j.host == host, _j.purged.is_(None), _j.ts < before, _j.id > after_id)
            .order_by(_j.id).limit(limit))
    found = [JournalCandidate(*row) for row in conn.execute(stmt)]
    if len(found) < limit:
        after = found[-1].id if found else after_id
        found.extend(JournalCandidate(*c) for c in block_candidates(conn, host, before, after, limit - len(found)))
    return found


def _purge_journal(conn: Connection, ids: list[int], when: float) -> int:
    legacy = conn.execute(select(_j.id).where(_j.id.in_(ids), _j.purged.is_(None))).scalars().all()
    if legacy:
        conn.execute(update(journal).where(_j.id.in_(legacy))
                     .values(conversation=None, participants=None, payload=None, purged=when))
    emptied = [*legacy, *purge_block_records(conn, ids, when)]
    if emptied:
        # Out of the search's reach at once; the index's words and participants of the record
        # go with the indexer's next sweep (storage/search.py).
        conn.execute(delete(search_records).where(search_records.c.id.in_(emptied)))
    return len(emptied)


def _has_journal_table(conn: Connection) -> bool:
    return inspect(conn).has_table(journal.name)


def _chunks(values: Iterable[int]) -> Iterable[list[int]]:
    chunk: list[int] = []
    for value in values:
        chunk.append(value)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
