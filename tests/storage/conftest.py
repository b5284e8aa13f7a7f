"""Storage fixtures: an open Storage on a fresh database, a fake clock, raw SQL access, journal
block edits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import Connection, select, text, update

from stockade.storage import Storage
from stockade.storage.engine import Database
from stockade.storage.journal import BLOCK_COLUMNS, Block, decode_stored, encode_block
from stockade.storage.schema import journal_blocks


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage(storage_url: str, clock: FakeClock) -> AsyncIterator[Storage]:
    """An open Storage on a fresh database (SQLite and PostgreSQL), closed after the test."""
    opened = await Storage.open(storage_url, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


RunSql = Callable[..., Awaitable[list[list[tuple]]]]


@pytest.fixture
def run_sql(storage_url: str) -> RunSql:
    """Run raw SQL statements against the test database, bypassing Storage; rows per statement."""

    def statements_in(conn: Connection, statements: tuple[str, ...]) -> list[list[tuple]]:
        results = []
        for statement in statements:
            result = conn.execute(text(statement))
            results.append([tuple(row) for row in result] if result.returns_rows else [])
        return results

    async def run(*statements: str) -> list[list[tuple]]:
        db = Database.from_url(storage_url)
        try:
            return await db.write("test.run_sql", statements_in, statements)
        finally:
            await db.dispose()

    return run


BlockChange = Callable[[Block], Block]


@pytest.fixture
def edit_block(storage_url: str) -> Callable[[int, BlockChange], Awaitable[None]]:
    """Rewrite the journal block that holds a record, as someone who can write the database
    would: decode it, change it, encode it again (its stored hash stays unless the change
    gives another)."""

    def rewrite(conn: Connection, record_id: int, change: BlockChange) -> None:
        b = journal_blocks.c
        row = conn.execute(select(*BLOCK_COLUMNS).where(b.id <= record_id).order_by(b.id.desc()).limit(1)).one()
        changed = change(decode_stored(row))
        conn.execute(update(journal_blocks).where(b.id == row[0])
                     .values(id=changed.id, last_id=changed.last_id, body=encode_block(changed),
                             prev_hash=changed.prev_hash, hash=changed.hash))

    async def run(record_id: int, change: BlockChange) -> None:
        db = Database.from_url(storage_url)
        try:
            await db.write("test.edit_block", rewrite, record_id, change)
        finally:
            await db.dispose()

    return run


@pytest.fixture
def snapshot(run_sql: RunSql) -> Callable[[], Awaitable[dict[str, list[tuple]]]]:
    """Every row of every Stockade table, sorted: to prove that something changed nothing."""

    async def take() -> dict[str, list[tuple]]:
        tables = ["schema_version", "accounts", "credentials", "kv", "map", "archive_owners", "archive"]
        results = await run_sql(*(f'SELECT * FROM "{table}"' for table in tables))
        return {table: sorted(rows, key=repr) for table, rows in zip(tables, results)}

    return take
