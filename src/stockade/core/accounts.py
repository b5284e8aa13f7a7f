"""Accounts of the served hosts: creation, passwords (stored only as SCRAM keys), removal.

The set of existing accounts per host is kept in memory so that routing can answer "does this
account exist?" without a database round trip; every change goes through this service.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from ..protocol.jid import InvalidJid, normalise_local
from ..protocol.sasl.scram import ScramCredential, derive
from .password_policy import PasswordPolicy, PasswordRejected, PasswordRules

if TYPE_CHECKING:
    from ..storage import Storage

HASHES = ("sha1", "sha256")


class AccountError(Exception):
    """A refused account operation; the text says why and what to do."""


class RemovalRefused(AccountError):
    """The account exists but may not be removed now (a legal hold keeps its data)."""


class AuditRecorder(Protocol):
    """Where account changes are recorded (compliance.audit.AuditLog); must never raise."""

    async def record(self, host: str, actor: str, action: str, target: str, **detail: Any) -> None: ...


class AccountService:
    def __init__(self, storage: Storage, domains: set[str], *, iterations: int = 4096,
                 min_password_length: int = 8, audit: AuditRecorder | None = None,
                 policy: PasswordPolicy | None = None) -> None:
        self.storage = storage
        self.audit = audit              # records user.create, user.password, user.remove
        self.domains = domains
        self.iterations = iterations
        self.min_password_length = min_password_length
        # The password policy (core/password_policy.py); without one, the length rule only.
        self.policy = policy or PasswordPolicy({}, None, PasswordRules(min_password_length, False, False, 0))
        self._known: dict[str, set[str]] = {d: set() for d in domains}
        self._changes: int | None = None    # storage.accounts.changes() when _known was read
        self._absent: dict[tuple[str, str], float] = {}
        # Called after an account is removed (the app ends its sessions and fires AccountRemoved).
        self.on_removed: list[Callable[[str, str], object]] = []
        # Asked before an account is removed: a reason to refuse (a legal hold), or None.
        self.removal_guards: list[Callable[[str, str], Awaitable[str | None]]] = []

    async def load(self) -> None:
        # The counter first: a change made while the list is read is seen by the next reconcile.
        self._changes = await self.storage.accounts.changes()
        for host, username in await self.storage.accounts.list():
            self._known.setdefault(host, set()).add(username)

    async def reconcile(self) -> list[tuple[str, str]]:
        """Pick up accounts created or removed by another process on the same database (the CLI):
        removed ones go through the same removal callbacks as a removal made here (their sessions
        end). Returns the accounts found removed. Reads the list only when the counter of account
        changes moved since the last reading (storage/accounts.py `changes`)."""
        changes = await self.storage.accounts.changes()
        if changes == self._changes:
            return []
        in_db: dict[str, set[str]] = {}
        for host, username in await self.storage.accounts.list():
            in_db.setdefault(host, set()).add(username)
        removed = [(h, u) for h, users in self._known.items() for u in users - in_db.get(h, set())]
        for host, users in in_db.items():
            self._known.setdefault(host, set()).update(users)
        for host, username in removed:
            self._known[host].discard(username)
            for callback in self.on_removed:
                result = callback(host, username)
                if asyncio.iscoroutine(result):
                    await result
        self._changes = changes       # only now: a failed callback makes the next check read again
        return removed

    def exists_cached(self, host: str, username: str) -> bool:
        known = self._known.get(host)
        return known is not None and username in known

    async def exists(self, host: str, username: str) -> bool:
        """Whether the account exists, asking the database when it is not known in memory
        (accounts created by another process). Negative answers are remembered briefly so that
        stanzas to made-up addresses cannot turn into a database load."""
        if self.exists_cached(host, username):
            return True
        if host not in self.domains:
            return False
        key = (host, username)
        now = time.monotonic()
        until = self._absent.get(key)
        if until is not None and until > now:
            return False
        if await self.storage.accounts.exists(host, username):
            self._known.setdefault(host, set()).add(username)
            return True
        if len(self._absent) > 10000:
            self._absent.clear()
        self._absent[key] = now + 10.0
        return False

    def count(self, host: str | None = None) -> int:
        if host is not None:
            return len(self._known.get(host, ()))
        return sum(len(v) for v in self._known.values())

    def check_host(self, host: str) -> None:
        if host not in self.domains:
            raise AccountError(f"{host!r} is not a domain this server serves "
                               f"(served: {', '.join(sorted(self.domains))})")

    def normalise_username(self, username: str) -> str:
        try:
            return normalise_local(username)
        except InvalidJid as exc:
            raise AccountError(f"invalid user name: {exc}") from None

    def check_password(self, password: str, host: str = "", username: str = "") -> None:
        """The policy rules that need no stored data (length, common passwords, user name)."""
        try:
            self.policy.check(host, username, password)
        except PasswordRejected as exc:
            raise AccountError(str(exc)) from None

    async def _derive(self, password: str) -> list[ScramCredential]:
        # PBKDF2 is deliberately slow: keep it off the event loop.
        return await asyncio.to_thread(
            lambda: [derive(password, h, iterations=self.iterations) for h in HASHES])

    async def _record(self, host: str, username: str, action: str, actor: str) -> None:
        if self.audit is not None:
            await self.audit.record(host, actor, action, f"{username}@{host}")

    async def create(self, host: str, username: str, password: str, *, actor: str = "system") -> str:
        """Create an account; returns the normalised user name."""
        from ..storage import AccountExists
        self.check_host(host)
        username = self.normalise_username(username)
        self.check_password(password, host, username)
        creds = await self._derive(password)
        try:
            await self.storage.accounts.create(host, username, creds)
        except AccountExists:
            raise AccountError(f"{username}@{host} already exists") from None
        await self.policy.remember(host, username, creds)
        self._known.setdefault(host, set()).add(username)
        self._absent.pop((host, username), None)
        await self._record(host, username, "user.create", actor)
        return username

    async def create_external(self, host: str, username: str, *, actor: str = "directory") -> str:
        """Create an account without SCRAM keys: its password lives elsewhere (the company
        directory checks it, see directory/). Returns the normalised user name."""
        from ..storage import AccountExists
        self.check_host(host)
        username = self.normalise_username(username)
        try:
            await self.storage.accounts.create(host, username, [])
        except AccountExists:
            raise AccountError(f"{username}@{host} already exists") from None
        self._known.setdefault(host, set()).add(username)
        self._absent.pop((host, username), None)
        await self._record(host, username, "user.create", actor)
        return username

    async def set_password(self, host: str, username: str, password: str, *, actor: str = "system") -> None:
        self.check_host(host)
        username = self.normalise_username(username)
        self.check_password(password, host, username)
        try:
            current = await self.storage.accounts.get_credentials(host, username)
            await self.policy.check_reuse(host, username, password, current)
        except PasswordRejected as exc:
            raise AccountError(str(exc)) from None
        creds = await self._derive(password)
        if not await self.storage.accounts.set_credentials(host, username, creds):
            raise AccountError(f"{username}@{host} does not exist")
        await self.policy.remember(host, username, creds)
        await self._record(host, username, "user.password", actor)

    async def removal_refusal(self, host: str, username: str) -> str | None:
        """Why the account may not be removed now (a legal hold: `removal_guards`), or None."""
        for guard in self.removal_guards:
            reason = await guard(host, username)
            if reason:
                return reason
        return None

    async def remove(self, host: str, username: str, *, actor: str = "system") -> None:
        self.check_host(host)
        username = self.normalise_username(username)
        refusal = await self.removal_refusal(host, username)
        if refusal:
            raise RemovalRefused(refusal)
        if not await self.storage.accounts.remove(host, username):
            raise AccountError(f"{username}@{host} does not exist")
        self._known.get(host, set()).discard(username)
        await self._record(host, username, "user.remove", actor)
        for callback in self.on_removed:
            result = callback(host, username)
            if asyncio.iscoroutine(result):
                await result

    async def list(self, host: str | None = None) -> list[tuple[str, str]]:
        return await self.storage.accounts.list(host)

    async def credentials(self, host: str, username: str) -> dict[str, ScramCredential] | None:
        creds = await self.storage.accounts.get_credentials(host, username)
        if creds and host in self.domains:
            self._known.setdefault(host, set()).add(username)
        return creds
