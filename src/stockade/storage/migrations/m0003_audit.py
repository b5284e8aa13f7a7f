"""Version 3: the hash-chained audit log (`audit`), see storage/audit.py."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, Double, Index, Integer, MetaData, Table, Text

VERSION = 3


def upgrade(conn: Connection) -> None:
    """Create the audit table (the caller records the version in the same transaction)."""
    metadata = MetaData()
    audit = Table(
        "audit", metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
               autoincrement=True),
        Column("ts", Double, nullable=False),
        Column("host", Text, nullable=False),
        Column("actor", Text, nullable=False),
        Column("action", Text, nullable=False),
        Column("target", Text, nullable=False),
        Column("detail", Text, nullable=False),
        Column("prev_hash", Text, nullable=False),
        Column("hash", Text, nullable=False),
        sqlite_autoincrement=True)
    Index("ix_audit_host", audit.c.host, audit.c.id)
    Index("ix_audit_action", audit.c.action, audit.c.id)
    metadata.create_all(conn, checkfirst=False)
