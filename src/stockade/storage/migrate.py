"""Numbered schema migrations: find them, compare with the database, apply what is missing.

A migration is a module `migrations/mNNNN_<what>.py` with `VERSION = NNNN` and
`upgrade(conn)` taking a synchronous SQLAlchemy Connection. They are found by listing the package,
so adding one is adding one file; the list is checked (numbers match, no gaps) so that a misnamed
file fails loudly instead of being skipped.

The database records the last version applied in `schema_version`. Each migration runs in its own
transaction with the version bump, under a lock, so a crash or a second process starting at the
same moment leaves the schema at a version, never between two. A database newer than this code is
refused before anything is written to it.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, inspect, insert, select

from . import migrations as migrations_package
from .engine import Database
from .errors import StorageError
from .schema import schema_version

_MODULE_NAME = re.compile(r"m(\d{4})_[a-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str                                   # module name, for messages
    upgrade: Callable[[Connection], None]


@functools.cache
def available() -> tuple[Migration, ...]:
    """Every migration shipped with this code, in order (checked: 1, 2, ... without gaps)."""
    found = []
    for info in pkgutil.iter_modules(migrations_package.__path__):
        match = _MODULE_NAME.fullmatch(info.name)
        if match is None:
            continue
        module = importlib.import_module(f"{migrations_package.__name__}.{info.name}")
        if module.VERSION != int(match.group(1)):
            raise RuntimeError(f"migration {info.name} says VERSION = {module.VERSION}; "
                               f"the number in its file name must match")
        found.append(Migration(module.VERSION, info.name, module.upgrade))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1, 2, 3, ... without gaps; found {versions}")
    return tuple(found)


def latest_version(migrations: Sequence[Migration] | None = None) -> int:
    """The schema version this code produces."""
    migrations = available() if migrations is None else migrations
    return migrations[-1].version if migrations else 0


def current_version(conn: Connection) -> int:
    """The version recorded in the database (0 for an empty database)."""
    if not inspect(conn).has_table(schema_version.name):
        return 0
    return conn.execute(select(schema_version.c.version)).scalar_one_or_none() or 0


async def upgrade(db: Database, migrations: Sequence[Migration] | None = None) -> int:
    """Apply the missing migrations, one transaction each; the resulting version.

    Raises StorageError, without changing anything, if the database is newer than the code.
    """
    migrations = available() if migrations is None else migrations
    while True:
        version = await db.write("schema.upgrade", _step, db, migrations)
        if version is not None:
            return version


def _step(conn: Connection, db: Database, migrations: Sequence[Migration]) -> int | None:
    """Apply the next missing migration; the version when there is none left to apply."""
    db.lock_schema(conn)
    # Read under the lock: another process may have migrated while we waited for it.
    current = current_version(conn)
    latest = latest_version(migrations)
    if current > latest:
        raise StorageError(f"database schema version {current} is newer than this "
                           f"Stockade (knows {latest}); upgrade Stockade")
    if current == latest:
        return current
    migration = migrations[current]             # the one that brings the schema to current + 1
    try:
        migration.upgrade(conn)
    except Exception as exc:
        raise StorageError(f"schema migration {migration.name} (version {current} to "
                           f"{migration.version}) failed: {type(exc).__name__}: {exc}; the database "
                           f"is unchanged at version {current}; report this as a Stockade bug") from exc
    schema_version.create(conn, checkfirst=True)
    conn.execute(delete(schema_version))
    conn.execute(insert(schema_version).values(version=migration.version))
    return None
