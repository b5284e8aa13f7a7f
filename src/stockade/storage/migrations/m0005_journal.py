"""Version 5: the compliance journal (`journal`) and its signed checkpoints, see storage/journal.py."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Connection, Double, Index, Integer, LargeBinary, MetaData,
                        Table, Text)

VERSION = 5


def upgrade(conn: Connection) -> None:
    """Create the journal tables (the caller records the version in the same transaction)."""
    metadata = MetaData()
    ident = BigInteger().with_variant(Integer(), "sqlite")
    journal = Table(
        "journal", metadata,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("ts", Double, nullable=False),
        Column("host", Text, nullable=False),
        Column("kind", Text, nullable=False),
        Column("conversation", Text, nullable=True),
        Column("participants", Text, nullable=True),
        Column("payload", LargeBinary, nullable=True),
        Column("digest", Text, nullable=False),
        Column("prev_hash", Text, nullable=False),
        Column("hash", Text, nullable=False),
        Column("purged", Double, nullable=True),
        sqlite_autoincrement=True)
    Index("ix_journal_host_ts", journal.c.host, journal.c.ts)
    Index("ix_journal_conversation_ts", journal.c.conversation, journal.c.ts)
    Index("ix_journal_ts", journal.c.ts)
    Table(
        "journal_checkpoints", metadata,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("ts", Double, nullable=False),
        Column("last_id", BigInteger, nullable=False),
        Column("last_hash", Text, nullable=False),
        Column("public_key", Text, nullable=False),
        Column("signature", Text, nullable=False),
        sqlite_autoincrement=True)
    metadata.create_all(conn, checkfirst=False)
