"""Version 1: accounts, SCRAM credentials, key-value, map and archive stores."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Connection, Double, ForeignKeyConstraint, Index,
                        Integer, LargeBinary, MetaData, Table, Text)

VERSION = 1


def upgrade(conn: Connection) -> None:
    """Create the version-1 tables (the caller records the version in the same transaction)."""
    metadata = MetaData()
    Table("accounts", metadata,
          Column("host", Text, primary_key=True),
          Column("username", Text, primary_key=True),
          Column("created", Double, nullable=False))
    Table("credentials", metadata,
          Column("host", Text, primary_key=True),
          Column("username", Text, primary_key=True),
          Column("hash_name", Text, primary_key=True),
          Column("salt", LargeBinary, nullable=False),
          Column("iterations", Integer, nullable=False),
          Column("stored_key", LargeBinary, nullable=False),
          Column("server_key", LargeBinary, nullable=False),
          ForeignKeyConstraint(["host", "username"], ["accounts.host", "accounts.username"],
                               ondelete="CASCADE", name="fk_credentials_account"))
    Table("kv", metadata,
          Column("host", Text, primary_key=True),
          Column("username", Text, primary_key=True),
          Column("store", Text, primary_key=True),
          Column("value", Text, nullable=False))
    Table("map", metadata,
          Column("host", Text, primary_key=True),
          Column("username", Text, primary_key=True),
          Column("store", Text, primary_key=True),
          Column("key", Text, primary_key=True),
          Column("value", Text, nullable=False))
    archive = Table(
        "archive", metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
               autoincrement=True),
        Column("host", Text, nullable=False),
        Column("username", Text, nullable=False),
        Column("store", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("ts", Double, nullable=False),
        Column("with_jid", Text, nullable=True),
        Column("value", Text, nullable=False),
        sqlite_autoincrement=True)
    c = archive.c
    Index("ix_archive_user", c.host, c.username, c.store, c.id)
    Index("ix_archive_with", c.host, c.username, c.store, c.with_jid, c.id)
    Index("ix_archive_ts", c.host, c.username, c.store, c.ts)
    Index("ix_archive_key", c.host, c.username, c.store, c.key)
    metadata.create_all(conn, checkfirst=False)
