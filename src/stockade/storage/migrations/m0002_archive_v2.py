"""Version 2: archive rows name their owner by a small integer (`archive_owners`), two indexes.

Version 1 kept host, username and store as text in every archive row and in four indexes; each
append then updated four B-trees at an insertion point of its own. Version 2 keeps those three
strings once per archive in `archive_owners` and indexes the archive on (owner, ts, id,
with_jid) and (key, owner) only (the reasons are in storage/archive.py).

The rows keep their ids and keys, and the id high-water mark carries over, so that the id of a
deleted row is still never given again. The whole table is copied in this one transaction
(SQLite and PostgreSQL alike): plan on the order of ten seconds per million archive rows at the
first start after the upgrade.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Connection, Double, Index, Integer, MetaData, Table,
                        Text, and_, insert, select)

from ..engine import id_high_water, raise_id_high_water, rename_table

VERSION = 2

_OLD_INDEXES = ("ix_archive_user", "ix_archive_with", "ix_archive_ts", "ix_archive_key")


def upgrade(conn: Connection) -> None:
    """Move the version-1 archive into the version-2 tables (the caller records the version)."""
    # Index names are per schema, not per table: the old ones go before the new ones come.
    for name in _OLD_INDEXES:
        conn.exec_driver_sql(f"DROP INDEX {name}")
    rename_table(conn, "archive", "archive_v1")
    high_water = id_high_water(conn, "archive_v1")

    metadata = MetaData()
    old = Table("archive_v1", metadata,
                Column("id", BigInteger), Column("host", Text), Column("username", Text),
                Column("store", Text), Column("key", Text), Column("ts", Double),
                Column("with_jid", Text), Column("value", Text))
    owners = Table("archive_owners", metadata,
                   Column("id", Integer, primary_key=True, autoincrement=True),
                   Column("host", Text, nullable=False),
                   Column("username", Text, nullable=False),
                   Column("store", Text, nullable=False))
    Index("ix_archive_owners_user", owners.c.host, owners.c.username, owners.c.store, unique=True)
    archive = Table(
        "archive", metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
               autoincrement=True),
        Column("owner", Integer, nullable=False),
        Column("key", Text().with_variant(Text(collation="C"), "postgresql"), nullable=False),
        Column("ts", Double, nullable=False),
        Column("with_jid", Text, nullable=True),
        Column("value", Text, nullable=False),
        sqlite_autoincrement=True)
    owners.create(conn)
    archive.create(conn)          # no index yet: building them after the copy is faster

    users = select(old.c.host, old.c.username, old.c.store).distinct()
    conn.execute(insert(owners).from_select(["host", "username", "store"], users))
    rows = (select(old.c.id, owners.c.id, old.c.key, old.c.ts, old.c.with_jid, old.c.value)
            .join(owners, and_(owners.c.host == old.c.host, owners.c.username == old.c.username,
                               owners.c.store == old.c.store)))
    conn.execute(insert(archive).from_select(["id", "owner", "key", "ts", "with_jid", "value"], rows))
    raise_id_high_water(conn, "archive", high_water)
    conn.exec_driver_sql("DROP TABLE archive_v1")

    Index("ix_archive_owner", archive.c.owner, archive.c.ts, archive.c.id, archive.c.with_jid).create(conn)
    Index("ix_archive_key", archive.c.key, archive.c.owner).create(conn)
