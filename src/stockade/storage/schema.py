"""The tables as the code uses them today: the schema after the latest migration.

Migrations (`migrations/m0001_initial.py`, ...) create and change the real tables; each one spells
out its own DDL so that it keeps meaning the same thing when this file moves on. A test checks that
the migrated database matches the tables described here.

Stores are separated by a `store` column ("roster", "offline", "vcard", ...) in shared tables.
Every per-user table starts its primary key or index with (host, username): deleting an account
wipes the user's rows in every store with one indexed DELETE per table.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Double, ForeignKeyConstraint, Index, Integer,
                        LargeBinary, MetaData, Table, Text)

metadata = MetaData()

# SQLite only gives INTEGER PRIMARY KEY (exactly that spelling) the rowid and AUTOINCREMENT
# behaviour; PostgreSQL wants a 64-bit serial.
ArchiveId = BigInteger().with_variant(Integer(), "sqlite")

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),        # one row: the last migration applied
)

accounts = Table(
    "accounts", metadata,
    Column("host", Text, primary_key=True),
    Column("username", Text, primary_key=True),
    Column("created", Double, nullable=False),         # unix time
)

credentials = Table(
    "credentials", metadata,
    Column("host", Text, primary_key=True),
    Column("username", Text, primary_key=True),
    Column("hash_name", Text, primary_key=True),       # "sha1" | "sha256"
    Column("salt", LargeBinary, nullable=False),
    Column("iterations", Integer, nullable=False),
    Column("stored_key", LargeBinary, nullable=False),
    Column("server_key", LargeBinary, nullable=False),
    ForeignKeyConstraint(["host", "username"], ["accounts.host", "accounts.username"],
                         ondelete="CASCADE", name="fk_credentials_account"),
)

kv = Table(
    "kv", metadata,
    Column("host", Text, primary_key=True),
    Column("username", Text, primary_key=True),        # "" for host-wide data
    Column("store", Text, primary_key=True),
    Column("value", Text, nullable=False),             # JSON
)

map_ = Table(
    "map", metadata,
    Column("host", Text, primary_key=True),
    Column("username", Text, primary_key=True),
    Column("store", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),             # JSON
)

archive = Table(
    "archive", metadata,
    Column("id", ArchiveId, primary_key=True, autoincrement=True),
    Column("host", Text, nullable=False),
    Column("username", Text, nullable=False),
    Column("store", Text, nullable=False),
    Column("key", Text, nullable=False),               # caller's unique id (XEP-0359 stanza id)
    Column("ts", Double, nullable=False),              # unix time of the item
    Column("with_jid", Text, nullable=True),           # conversation partner, bare JID
    Column("value", Text, nullable=False),             # serialised stanza
    # Never reuse the id of a deleted row: clients page by id (XEP-0313/XEP-0059).
    sqlite_autoincrement=True,
)
# Paging through a user's store by id, the common MAM and offline query.
Index("ix_archive_user", archive.c.host, archive.c.username, archive.c.store, archive.c.id)
# The same, filtered by conversation partner (MAM "with").
Index("ix_archive_with", archive.c.host, archive.c.username, archive.c.store, archive.c.with_jid,
      archive.c.id)
# MAM "start"/"end" and retention ("delete before").
Index("ix_archive_ts", archive.c.host, archive.c.username, archive.c.store, archive.c.ts)
# Look-up by stanza id (MAM "after-id" given as a stanza id, message corrections, retractions).
Index("ix_archive_key", archive.c.host, archive.c.username, archive.c.store, archive.c.key)

# Tables holding a user's data that AccountStore.remove() wipes (credentials go by the account).
USER_DATA_TABLES = (kv, map_, archive)
