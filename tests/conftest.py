"""Fixtures shared by the whole suite.

Storage: `storage_url` gives each test a fresh, empty database, once on SQLite and once on
PostgreSQL. The PostgreSQL server is started only if a test asks for it, once per run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.testing.clamav import ThrowawayClamd, clamd_missing
from stockade.testing.postgres import ThrowawayPostgres

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL 15 for the whole run, stopped (and its files removed) at the end."""
    server = ThrowawayPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to a new, empty database: a file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stockade.db'}"
        return
    server: ThrowawayPostgres = request.getfixturevalue("postgres_server")
    name = f"test_{next(_database_numbers)}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture(scope="module")
def clamd() -> Iterator[ThrowawayClamd]:
    """A throwaway clamd with the EICAR test signatures, per test module (tests may stop and
    restart it); skipped with the reason only where it cannot be installed (not root)."""
    reason = clamd_missing()
    if reason:
        pytest.skip(reason)
    with ThrowawayClamd() as daemon:
        yield daemon
