"""Accounts and their SCRAM credentials: salted keys only, never a password."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import Connection, Insert, and_, bindparam, delete, func, insert, select, update

from stockade.protocol.sasl.scram import ScramCredential

from .archive_files import ArchiveFiles
from .engine import Database
from .errors import AccountExists
from .schema import USER_DATA_TABLES, accounts, archive, archive_owners, change_counters, credentials

# Built once: SQLAlchemy then finds the compiled SQL in its cache on every call.
_ACCOUNT = and_(accounts.c.host == bindparam("host"), accounts.c.username == bindparam("username"))
_EXISTS = select(accounts.c.username).where(_ACCOUNT)
_LOCK_ACCOUNT = _EXISTS.with_for_update()       # PostgreSQL row lock; SQLite has BEGIN IMMEDIATE
_GET_CREDENTIALS = (
    select(accounts.c.username, credentials.c.hash_name, credentials.c.salt,
           credentials.c.iterations, credentials.c.stored_key, credentials.c.server_key)
    # Outer join: one round trip tells "no account" (no row) from "no credentials" (NULL row).
    .select_from(accounts.outerjoin(credentials, and_(credentials.c.host == accounts.c.host,
                                                      credentials.c.username == accounts.c.username)))
    .where(_ACCOUNT))
_INSERT_CREDENTIALS = insert(credentials)
_DELETE_CREDENTIALS = delete(credentials).where(credentials.c.host == bindparam("host"),
                                                credentials.c.username == bindparam("username"))
_DELETE_ACCOUNT = delete(accounts).where(_ACCOUNT)
# The counter of account changes (schema.py change_counters), moved in the changing transaction.
_ACCOUNTS_COUNTER = "accounts"
_COUNT_CHANGE = (update(change_counters).where(change_counters.c.name == _ACCOUNTS_COUNTER)
                 .values(value=change_counters.c.value + 1))
_CHANGES = select(change_counters.c.value).where(change_counters.c.name == bindparam("counter"))
_DELETE_USER_DATA = (
    *(delete(table).where(table.c.host == bindparam("host"), table.c.username == bindparam("username"))
      for table in USER_DATA_TABLES),
    # Every archive store of the user; the archive_owners rows stay (see schema.py).
    delete(archive).where(archive.c.owner.in_(
        select(archive_owners.c.id).where(archive_owners.c.host == bindparam("host"),
                                          archive_owners.c.username == bindparam("username")))),
)


def _credential_rows(host: str, username: str, creds: Iterable[ScramCredential]) -> list[dict]:
    rows = [{"host": host, "username": username, "hash_name": c.hash_name, "salt": c.salt,
             "iterations": c.iterations, "stored_key": c.stored_key, "server_key": c.server_key}
            for c in creds]
    names = [row["hash_name"] for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"one credential per hash function, got {names}")
    return rows


class AccountStore:
    """Who may log in on each host, and the SCRAM keys to check them with."""

    def __init__(self, db: Database, archive_files: ArchiveFiles,
                 clock: Callable[[], float]) -> None:
        self._db = db
        self._archive_files = archive_files
        self._clock = clock
        self._insert_account = db.insert_ignore(accounts, ("host", "username"))

    async def create(self, host: str, username: str, credentials: list[ScramCredential]) -> None:
        """Create an account; AccountExists if `username@host` is taken."""
        rows = _credential_rows(host, username, credentials)
        account = {"host": host, "username": username, "created": self._clock()}
        await self._db.write("account.create", _create, self._insert_account, account, rows)

    async def create_many(self, entries: list[tuple[str, str, list[ScramCredential]]]) -> list[tuple[str, str]]:
        """Create many accounts in one transaction (bulk import); accounts that already exist are
        left untouched. Returns the (host, username) pairs actually created."""
        now = self._clock()
        return await self._db.write("account.create_many", _create_many, self._insert_account, entries, now)

    async def get_credentials(self, host: str, username: str) -> dict[str, ScramCredential] | None:
        """The stored keys by hash name ("sha1", "sha256"); None if there is no such account."""
        rows = await self._db.point_rows("account.get_credentials", _GET_CREDENTIALS,
                                         {"host": host, "username": username})
        if not rows:
            return None
        return {hash_name: ScramCredential(hash_name, bytes(salt), iterations, bytes(stored_key), bytes(server_key))
                for _, hash_name, salt, iterations, stored_key, server_key in rows if hash_name is not None}

    async def set_credentials(self, host: str, username: str,
                              credentials: list[ScramCredential]) -> bool:
        """Replace all of the account's keys (a password change); False if there is no such account."""
        rows = _credential_rows(host, username, credentials)
        return await self._db.write("account.set_credentials", _set_credentials,
                                    {"host": host, "username": username}, rows)

    async def exists(self, host: str, username: str) -> bool:
        row = await self._db.fetch_first("account.exists", _EXISTS,
                                         {"host": host, "username": username})
        return row is not None

    async def remove(self, host: str, username: str) -> bool:
        """Delete the account and ALL its data in every store; False if there is no such account."""
        # Archive appends already queued for this user would otherwise land after the wipe.
        await self._archive_files.flush()
        # An archive file first (a transaction of its own): should the process stop in between,
        # the account is still there to remove again, never an archive left without its account.
        if self._archive_files.count > 1 and await self.exists(host, username):
            await self._archive_files.remove_user(host, username)
        return await self._db.write("account.remove", _remove, {"host": host, "username": username})

    async def list(self, host: str | None = None) -> list[tuple[str, str]]:
        """(host, username) of every account, or of one host's; sorted by code point."""
        stmt = select(accounts.c.host, accounts.c.username)
        if host is not None:
            stmt = stmt.where(accounts.c.host == host)
        rows = await self._db.fetch_all("account.list", stmt)
        # Sorted here, not by ORDER BY: database collations differ, code points do not.
        return sorted((row.host, row.username) for row in rows)

    async def changes(self) -> int:
        """A number that grows whenever an account is created or removed, by any process: two
        equal readings mean the list of accounts did not change in between."""
        [(value,)] = await self._db.point_rows("account.changes", _CHANGES, {"counter": _ACCOUNTS_COUNTER})
        return value

    async def count(self, host: str | None = None) -> int:
        stmt = select(func.count()).select_from(accounts)
        if host is not None:
            stmt = stmt.where(accounts.c.host == host)
        return await self._db.scalar("account.count", stmt)


# Transactions: plain functions of a synchronous Connection, run by Database.read/write.

def _create(conn: Connection, insert_account: Insert, account: dict, rows: list[dict]) -> None:
    if conn.execute(insert_account, account).rowcount == 0:
        raise AccountExists(f"the account {account['username']}@{account['host']} already "
                            f"exists; choose another username or remove the old account first")
    if rows:
        conn.execute(_INSERT_CREDENTIALS, rows)
    conn.execute(_COUNT_CHANGE)


def _create_many(conn: Connection, insert_account: Insert, entries: list, now: float) -> list[tuple[str, str]]:
    existing: set[tuple[str, str]] = set()
    for host in {h for h, _, _ in entries}:
        existing.update((host, row.username) for row in conn.execute(
            select(accounts.c.username).where(accounts.c.host == host)))
    created, seen, rows = [], set(), []
    for host, username, creds in entries:
        if (host, username) in existing or (host, username) in seen:
            continue
        seen.add((host, username))
        created.append((host, username))
        rows.extend(_credential_rows(host, username, creds))
    if created:
        conn.execute(insert_account, [{"host": h, "username": u, "created": now} for h, u in created])
        conn.execute(_COUNT_CHANGE)
    if rows:
        conn.execute(_INSERT_CREDENTIALS, rows)
    return created


def _set_credentials(conn: Connection, params: dict, rows: list[dict]) -> bool:
    # Locking the account row keeps a concurrent remove() from slipping in between.
    if conn.execute(_LOCK_ACCOUNT, params).first() is None:
        return False
    conn.execute(_DELETE_CREDENTIALS, params)
    if rows:
        conn.execute(_INSERT_CREDENTIALS, rows)
    return True


def _remove(conn: Connection, params: dict) -> bool:
    if conn.execute(_DELETE_ACCOUNT, params).rowcount == 0:
        return False
    conn.execute(_COUNT_CHANGE)
    # Explicit, not only ON DELETE CASCADE: correct even where foreign keys are off.
    conn.execute(_DELETE_CREDENTIALS, params)
    for stmt in _DELETE_USER_DATA:
        conn.execute(stmt, params)
    return True
