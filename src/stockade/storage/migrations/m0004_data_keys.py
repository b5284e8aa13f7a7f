"""Version 4: the data keys of encryption at rest (`data_keys`), see storage/crypto.py."""

from __future__ import annotations

from sqlalchemy import Column, Connection, Double, Integer, LargeBinary, MetaData, Table, Text

VERSION = 4


def upgrade(conn: Connection) -> None:
    """Create the data_keys table (the caller records the version in the same transaction)."""
    metadata = MetaData()
    Table("data_keys", metadata,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("wrapped", LargeBinary, nullable=False),
          Column("master_key_id", Text, nullable=False),
          Column("created", Double, nullable=False),
          sqlite_autoincrement=True)
    metadata.create_all(conn, checkfirst=False)
