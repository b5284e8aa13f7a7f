"""Login lockouts recorded in the database, so that an administrator can list and end them.

The throttle (core/auth.py) decides and enforces lockouts in memory, per account and per client
address. Each new lock is also written to the map store "login_lockouts" (one server-wide entry
per throttle key, "account:alice@example.com" or "address:203.0.113.7", holding the wall-clock
time it ends), and the client hears its failure only once the record is written.

`stockade user lockouts` lists the records; `stockade user unlock` deletes one. The server checks
the record whenever a login meets a lock held in memory: a deleted record means an administrator
ended the lock, so the throttle forgets it and its failure count, and the login goes ahead at
once (no waiting for a periodic check). Locks still running when the server restarts are loaded
again from the records.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..storage import MapStore
    from .auth import LoginThrottle
    from .clock import Clock
    from .hooks import AccountLocked

log = logging.getLogger("stockade.auth")

STORE = "login_lockouts"
_ALL = ("", "")            # one server-wide map: (host, user) of the records


@dataclass(frozen=True, slots=True)
class Lockout:
    key: str               # the throttle key
    until: float           # wall-clock seconds since the epoch

    @property
    def kind(self) -> str:
        return self.key.partition(":")[0]          # "account" | "address"

    @property
    def subject(self) -> str:
        return self.key.partition(":")[2]          # user@host | IP address


def account_key(host: str, username: str) -> str:
    return f"account:{username}@{host}"            # the same as LoginThrottle.account_key


def address_key(address: str) -> str:
    """The throttle key of a client address; ValueError when it is not an IP address."""
    return f"address:{ipaddress.ip_address(address)}"


class LockoutRegistry:
    """The database side of lockouts. In the server it has the throttle; the command line uses
    it without one (`listed`, `unlock`)."""

    def __init__(self, store: MapStore, clock: Clock, throttle: LoginThrottle | None = None) -> None:
        self.store = store
        self.clock = clock
        self.throttle = throttle
        self._pending: dict[str, asyncio.Future[Any]] = {}

    # -- the server -----------------------------------------------------------------------------
    def on_locked(self, event: AccountLocked) -> None:
        """The throttle just locked an account or an address (the AccountLocked hook): record it.
        `flush` waits for the records."""
        throttle = self.throttle
        assert throttle is not None
        key = (throttle.account_key(event.host, event.username) if event.scope == "account"
               else throttle.address_key(event.address))
        write = asyncio.ensure_future(self.store.set(*_ALL, key, {"until": event.until}))
        self._pending[key] = write
        write.add_done_callback(lambda f, key=key: self._written(key, f))

    def _written(self, key: str, write: asyncio.Future[Any]) -> None:
        if self._pending.get(key) is write:
            del self._pending[key]
        if not write.cancelled() and write.exception() is not None:
            log.error("could not record the lockout of %s: %s", key, write.exception())

    async def flush(self) -> None:
        """Wait until the locks made so far are recorded."""
        while self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def lifted(self, keys: list[str]) -> bool:
        """Of the given throttle keys locked in memory, end those whose record an administrator
        deleted. True when one was ended."""
        throttle = self.throttle
        assert throttle is not None
        ended = False
        for key in keys:
            if key in self._pending or not throttle.locked(key):
                continue
            if await self.store.get(*_ALL, key) is None:
                throttle.unlock(key)
                log.warning("lockout of %s ended by an administrator", key.partition(":")[2])
                ended = True
        return ended

    async def restore(self) -> int:
        """At start-up: lock again what is still locked according to the records; drop the rest."""
        throttle = self.throttle
        assert throttle is not None
        now, restored = self.clock.time(), 0
        for lock in await self.listed(include_expired=True):
            if lock.until > now:
                throttle.lock_for(lock.key, lock.until - now)
                restored += 1
            else:
                await self.store.set(*_ALL, lock.key, None)
        return restored

    # -- administrators -------------------------------------------------------------------------
    async def listed(self, *, include_expired: bool = False) -> list[Lockout]:
        """The recorded locks (running ones only, unless `include_expired`), soonest end first."""
        now = self.clock.time()
        locks = [Lockout(key, float(value.get("until", 0))) for key, value in (await self.store.get_all(*_ALL)).items()
                 if isinstance(value, dict)]
        return sorted((lk for lk in locks if include_expired or lk.until > now), key=lambda lk: (lk.until, lk.key))

    async def unlock(self, key: str) -> bool:
        """End a lock (the server notices at the next login attempt). False when it was not locked."""
        record = await self.store.get(*_ALL, key)
        if record is None:
            return False
        await self.store.set(*_ALL, key, None)
        if self.throttle is not None:
            self.throttle.unlock(key)
        return float(record.get("until", 0)) > self.clock.time()
