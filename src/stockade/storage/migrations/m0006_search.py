"""Version 6: the eDiscovery search index (blind tokens, participants), see storage/search.py.

On SQLite the token strings are also indexed by a contentless FTS5 table `search_fts`; on
PostgreSQL by a GIN index over `search_docs.tsv`. Both are built from the journal by the server's
indexer, so the migration only creates empty tables.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, Index, Integer, MetaData, Table, Text, text
from sqlalchemy.dialects.postgresql import TSVECTOR

VERSION = 6


def upgrade(conn: Connection) -> None:
    """Create the index tables (the caller records the version in the same transaction)."""
    metadata = MetaData()
    ident = BigInteger().with_variant(Integer(), "sqlite")
    docs = Table(
        "search_docs", metadata,
        Column("id", ident, primary_key=True, autoincrement=False),
        Column("host", Text, nullable=False),
        Column("tokens", Text, nullable=False),
        Column("tsv", TSVECTOR().with_variant(Text(), "sqlite"), nullable=True))
    Index("ix_search_docs_tsv", docs.c.tsv, postgresql_using="gin")
    people = Table(
        "search_participants", metadata,
        Column("jid", Text, primary_key=True),
        Column("journal_id", BigInteger, primary_key=True))
    Index("ix_search_participants_journal", people.c.journal_id)
    Table(
        "search_state", metadata,
        Column("name", Text, primary_key=True),
        Column("value", Text, nullable=False))
    metadata.create_all(conn, checkfirst=False)
    if conn.dialect.name == "sqlite":
        conn.execute(text("CREATE VIRTUAL TABLE search_fts USING fts5(tokens, content='', "
                          "tokenize='ascii')"))
