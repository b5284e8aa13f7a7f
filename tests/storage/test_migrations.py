"""Schema migrations: applied once, in order, atomically; a newer database is left alone."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, inspect, text

from stockade.storage import Storage, StorageError
from stockade.storage.engine import Database
from stockade.storage.migrate import Migration, available, latest_version, upgrade
from stockade.storage.schema import metadata


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in available()]
    assert versions == list(range(1, len(versions) + 1))
    assert latest_version() == versions[-1]


async def test_new_database_is_migrated_to_the_latest_version(storage: Storage,
                                                              run_sql) -> None:
    [[(version,)]] = await run_sql("SELECT version FROM schema_version")
    assert version == latest_version()


async def test_migrated_schema_matches_schema_py(storage: Storage, storage_url: str) -> None:
    """schema.py (what the code queries) and the migrations (what the database has) agree."""
    db = Database.from_url(storage_url)
    try:
        actual = await db.read("test.reflect", _describe_database)
    finally:
        await db.dispose()
    assert actual == _describe_metadata()


def _describe_database(conn: Connection) -> dict:
    inspector = inspect(conn)
    tables = {}
    for name in inspector.get_table_names():
        if name.startswith("sqlite_"):
            continue
        tables[name] = {
            "columns": {c["name"]: c["nullable"] for c in inspector.get_columns(name)},
            "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
            "indexes": {i["name"]: i["column_names"] for i in inspector.get_indexes(name)},
            "foreign_keys": sorted((fk["constrained_columns"], fk["referred_table"],
                                    fk["referred_columns"]) for fk in inspector.get_foreign_keys(name)),
        }
    return tables


def _describe_metadata() -> dict:
    tables = {}
    for table in metadata.sorted_tables:
        tables[table.name] = {
            # Primary-key columns are NOT NULL whatever the Column says.
            "columns": {c.name: c.nullable and not c.primary_key for c in table.columns},
            "primary_key": [c.name for c in table.primary_key.columns],
            "indexes": {i.name: [c.name for c in i.columns] for i in table.indexes},
            "foreign_keys": sorted(([e.parent.name for e in fk.elements], fk.referred_table.name,
                                    [e.column.name for e in fk.elements])
                                   for fk in table.foreign_key_constraints),
        }
    return tables


async def test_reopening_applies_nothing_and_keeps_the_data(storage_url: str, run_sql) -> None:
    first = await Storage.open(storage_url)
    await first.keyval("vcard").set("example.com", "alice", {"fn": "Alice"})
    await first.close()

    for _ in range(2):
        again = await Storage.open(storage_url)
        assert await again.keyval("vcard").get("example.com", "alice") == {"fn": "Alice"}
        await again.close()

    assert await run_sql("SELECT version FROM schema_version") == [[(latest_version(),)]]


async def test_a_new_migration_runs_once_on_an_existing_database(storage_url: str, run_sql) -> None:
    storage = await Storage.open(storage_url)
    await storage.keyval("vcard").set("example.com", "alice", {"fn": "Alice"})
    await storage.close()
    runs = []

    def add_table(conn: Connection) -> None:
        runs.append(1)
        conn.execute(text("CREATE TABLE extra (id INTEGER PRIMARY KEY)"))

    migrations = (*available(), Migration(latest_version() + 1, "m_test_extra", add_table))
    db = Database.from_url(storage_url)
    try:
        assert await upgrade(db, migrations) == latest_version() + 1
        assert await upgrade(db, migrations) == latest_version() + 1      # nothing left to do
    finally:
        await db.dispose()

    assert runs == [1]
    assert await run_sql("SELECT version FROM schema_version", "SELECT count(*) FROM extra",
                         "SELECT value FROM kv") == [[(latest_version() + 1,)], [(0,)],
                                                     [('{"fn":"Alice"}',)]]


async def test_a_failing_migration_leaves_the_previous_version_intact(
        storage_url: str, run_sql) -> None:
    await (await Storage.open(storage_url)).close()

    def half_done(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE half (id INTEGER PRIMARY KEY)"))
        raise RuntimeError("migration bug")

    migrations = (*available(), Migration(latest_version() + 1, "m_test_broken", half_done))
    db = Database.from_url(storage_url)
    try:
        with pytest.raises(StorageError) as failed:
            await upgrade(db, migrations)
        tables = await db.read("test.tables", lambda conn: inspect(conn).get_table_names())
    finally:
        await db.dispose()

    assert "m_test_broken" in str(failed.value) and "migration bug" in str(failed.value)
    assert f"unchanged at version {latest_version()}" in str(failed.value)
    assert "half" not in tables                    # the DDL was rolled back with the transaction
    assert await run_sql("SELECT version FROM schema_version") == [[(latest_version(),)]]


async def test_a_newer_database_is_refused_and_left_untouched(
        storage_url: str, run_sql, snapshot) -> None:
    storage = await Storage.open(storage_url)
    await storage.accounts.create("example.com", "alice", [])
    await storage.archive("mam").append("example.com", "alice", "<message/>")
    await storage.close()
    newer = latest_version() + 98
    await run_sql(f"UPDATE schema_version SET version = {newer}")
    before = await snapshot()

    with pytest.raises(StorageError) as refused:
        await Storage.open(storage_url)

    assert str(refused.value) == (f"database schema version {newer} is newer than this Stockade "
                                  f"(knows {latest_version()}); upgrade Stockade")
    assert await snapshot() == before
