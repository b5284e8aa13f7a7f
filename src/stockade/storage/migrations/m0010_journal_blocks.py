"""Version 10: `journal_blocks`, where the compliance journal writes its records from now on, and
`search_records`, the eDiscovery index's row per indexed record.

A block holds one group-commit batch of records in one row (storage/journal.py); a record then
costs no row, no index entry and no bound parameters of its own. The records already in
`journal` stay there as they are, read-only: their hashes and the signed checkpoints over them
must not change, so they are not copied. The chain goes on from the last of them: the first
block's prev_hash is that row's hash, and its first id comes after the table's id high-water
mark.

A search filtered by tenant, time and kind read those columns from `journal`; block records
have no columns of their own, so the index keeps them (`search_records`, storage/search.py).
It is filled here for the legacy records the index covers already (not purged, up to
`last_indexed`); the indexer adds the others.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Connection, Double, Index, Integer, LargeBinary, MetaData, Table, Text,
                        column, insert, select, table)

VERSION = 10
SKIPPED_KINDS = ("checkpoint", "purge")          # never indexed (compliance/search_index.py)


def upgrade(conn: Connection) -> None:
    """Create the tables and fill `search_records` (the caller records the version)."""
    metadata = MetaData()
    record_id = BigInteger().with_variant(Integer(), "sqlite")
    Table("journal_blocks", metadata,
          Column("id", record_id, primary_key=True, autoincrement=True),
          Column("last_id", BigInteger, nullable=False),
          Column("ts_first", Double, nullable=False),
          Column("ts_last", Double, nullable=False),
          Column("live", Integer, nullable=False),
          Column("body", LargeBinary, nullable=False),
          Column("prev_hash", Text, nullable=False),
          Column("hash", Text, nullable=False),
          sqlite_autoincrement=True)
    records = Table("search_records", metadata,
                    Column("id", record_id, primary_key=True, autoincrement=False),
                    Column("host", Text, nullable=False),
                    Column("ts", Double, nullable=False),
                    Column("kind", Text, nullable=False))
    Index("ix_search_records_host_ts", records.c.host, records.c.ts)
    metadata.create_all(conn, checkfirst=False)
    state = table("search_state", column("name"), column("value"))
    last = conn.execute(select(state.c.value).where(state.c.name == "last_indexed")).scalar()
    if not last:
        return
    journal = table("journal", column("id"), column("host"), column("ts"), column("kind"), column("purged"))
    conn.execute(insert(records).from_select(
        ["id", "host", "ts", "kind"],
        select(journal.c.id, journal.c.host, journal.c.ts, journal.c.kind)
        .where(journal.c.id <= int(last), journal.c.purged.is_(None), journal.c.kind.not_in(SKIPPED_KINDS))))
