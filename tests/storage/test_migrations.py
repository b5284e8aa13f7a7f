"""Schema migrations: applied once, in order, atomically; a newer database is left alone."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, inspect, text

from stockade.storage import ArchiveItem, Storage, StorageError
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
    # SQLite virtual tables (the FTS5 search index of m0006_search) and their shadow tables are
    # made by the migration with SQL that schema.py cannot describe.
    virtual = ({row[1] for row in conn.exec_driver_sql("PRAGMA table_list") if row[2] in ("virtual", "shadow")}
               if conn.dialect.name == "sqlite" else set())
    for name in inspector.get_table_names():
        if name.startswith("sqlite_") or name in virtual:
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


# -- version 2: the archive names its owner by an integer ------------------------------------------

V1_ROWS = [
    {"host": host, "username": user, "store": store, "key": f"{store}-{user}-{n}",
     "ts": 1_000.0 + n // 3, "with_jid": None if n % 4 == 0 else f"peer{n % 3}@example.com",
     "value": f"<message n='{n}'><body>it's {user} «{n}»</body></message>"}
    for host in ("a.example", "b.example")
    for user in ("alice", "bob", "Zoë")
    for store in ("mam", "offline", "pep_items")
    for n in range(12)
]


async def _version_1_database(url: str) -> list[dict]:
    """A database at schema version 1 with archive rows (and a deleted tail: the high-water mark
    is above the largest id left). Returns the rows as stored, with their ids."""
    db = Database.from_url(url)
    try:
        assert await upgrade(db, available()[:1]) == 1

        def fill(conn: Connection) -> list[dict]:
            insert_row = text("INSERT INTO archive (host, username, store, key, ts, with_jid, value) "
                              "VALUES (:host, :username, :store, :key, :ts, :with_jid, :value)")
            conn.execute(insert_row, V1_ROWS)
            conn.execute(insert_row, [{**V1_ROWS[0], "key": f"gone-{n}"} for n in range(5)])
            conn.execute(text("DELETE FROM archive WHERE key LIKE 'gone-%'"))
            rows = conn.execute(text("SELECT id, host, username, store, key, ts, with_jid, value "
                                     "FROM archive ORDER BY id"))
            return [dict(row._mapping) for row in rows]

        return await db.write("test.fill_version_1", fill)
    finally:
        await db.dispose()


async def test_a_version_1_archive_is_upgraded_and_every_item_is_still_there(
        storage_url: str, clock, run_sql) -> None:
    stored = await _version_1_database(storage_url)
    assert len(stored) == len(V1_ROWS)
    high_water = max(row["id"] for row in stored) + 5          # the deleted tail

    storage = await Storage.open(storage_url, clock=clock)
    try:
        archives = {(r["host"], r["username"], r["store"]) for r in stored}
        for host, user, store in sorted(archives):
            mine = sorted((r for r in stored if (r["host"], r["username"], r["store"]) == (host, user, store)),
                          key=lambda r: (r["ts"], r["id"]))
            expected = [ArchiveItem(r["id"], r["key"], r["ts"], r["with_jid"], r["value"]) for r in mine]
            archive = storage.archive(store)
            assert await archive.query(host, user) == expected, (host, user, store)
            assert await archive.count(host, user) == len(expected)
            assert await archive.count(host, user, with_jid="peer1@example.com") == len(
                [i for i in expected if i.with_jid == "peer1@example.com"])
            assert await archive.query(host, user, after_item=expected[3], limit=2) == expected[4:6]
            for item in expected[::5]:
                assert await archive.get_by_key(host, user, item.key) == item
        # The new schema works on the old data: appends, ids above every id ever given, deletes.
        archive = storage.archive("mam")
        new = await archive.append("a.example", "alice", "<new/>", when=2_000.0)
        assert new.id > high_water
        assert (await archive.query("a.example", "alice"))[-1] == new
        assert await storage.archive("offline").pop_all("b.example", "Zoë") == [
            ArchiveItem(r["id"], r["key"], r["ts"], r["with_jid"], r["value"])
            for r in sorted(stored, key=lambda r: (r["ts"], r["id"]))
            if (r["host"], r["username"], r["store"]) == ("b.example", "Zoë", "offline")]
    finally:
        await storage.close()

    assert await run_sql("SELECT version FROM schema_version") == [[(latest_version(),)]]
    assert await run_sql("SELECT count(*) FROM archive_owners") == [[(len(archives),)]]
    db = Database.from_url(storage_url)
    try:
        assert await db.read("test.reflect", _describe_database) == _describe_metadata()
    finally:
        await db.dispose()
    if storage_url.startswith("postgresql"):
        # The names PostgreSQL derives from the table name are those of a table created anew.
        assert await run_sql("SELECT pg_get_serial_sequence('archive', 'id')",
                             "SELECT indexname FROM pg_indexes WHERE tablename = 'archive' "
                             "ORDER BY indexname") == [
            [("public.archive_id_seq",)], [("archive_pkey",), ("ix_archive_key",), ("ix_archive_owner",)]]


async def test_upgrading_an_empty_version_1_archive_keeps_ids_above_deleted_ones(
        storage_url: str, run_sql) -> None:
    db = Database.from_url(storage_url)
    try:
        await upgrade(db, available()[:1])
    finally:
        await db.dispose()
    await run_sql("INSERT INTO archive (host, username, store, key, ts, value) "
                  "VALUES ('example.com', 'alice', 'offline', 'k', 1.0, '<m/>')",
                  "DELETE FROM archive")
    old_id = 1                          # the only id ever given

    storage = await Storage.open(storage_url)
    try:
        item = await storage.archive("offline").append("example.com", "alice", "<m/>")
    finally:
        await storage.close()

    assert item.id > old_id
