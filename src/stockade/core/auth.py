"""Authentication: SASL exchanges against stored SCRAM keys, with throttling and lockout.

Failed logins are counted per account and per client address over a sliding window. When either
count reaches its limit, that account or address is locked for `lockout` seconds: every attempt
is answered with <temporary-auth-failure/> without checking the password, and the lock is logged.
Counting works the same for accounts that do not exist, so a lockout reveals nothing.
Locks are also recorded in the database (core/lockouts.py) so an administrator can list and end them.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from ..protocol.jid import InvalidJid, normalise_local
from ..protocol.sasl import Challenge, Failure, NeedCredential, Success
from ..protocol.sasl.plain import PlainServer
from ..protocol.sasl.scram import HASHES, ScramCredential, ScramServer, check_password
from .clock import Clock
from .hooks import AccountLocked, AuthFailed

if TYPE_CHECKING:
    from .bus import HookBus
    from .lockouts import LockoutRegistry

log = logging.getLogger("stockade.auth")


class CredentialSource(Protocol):
    async def credentials(self, host: str, username: str) -> dict[str, ScramCredential] | None: ...


class ExternalPasswords(Protocol):
    """Accounts whose password lives outside the server (the company directory, directory/sync.py).
    PLAIN logins of those accounts are checked there; SCRAM cannot work for them (no stored keys).
    `verify` answers Failure("not-authorized") for a wrong password (it counts towards lockout)
    and Failure("temporary-auth-failure") when the directory cannot be reached (it does not)."""

    def manages(self, host: str, username: str) -> bool: ...
    async def verify(self, host: str, username: str, password: str) -> Success | Failure: ...


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    max_failures_per_account: int = 5
    max_failures_per_address: int = 20
    window: float = 300.0
    lockout: float = 900.0


class LoginThrottle:
    """Sliding-window failure counts and lockouts, per account and per address."""

    def __init__(self, clock: Clock, limits: ThrottleLimits) -> None:
        self.clock = clock
        self.limits = limits
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        # With several worker processes each keeps its own counts and tells the others of every
        # change (app.py), so that an attacker spread over them meets the same limits: (what,
        # key, number) with what "failure" (number: the limit), "reset" or "lock" (seconds).
        self.shared: Callable[[str, str, float], None] | None = None

    def apply(self, what: str, key: str, number: float) -> None:
        """A change another worker made (see `shared`)."""
        shared, self.shared = self.shared, None
        try:
            if what == "failure":
                self.record_failure(key, int(number))
            elif what == "reset":
                self.reset(key)
            elif what == "lock":
                self.lock_for(key, number)
        finally:
            self.shared = shared

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.limits.window:
            q.popleft()
        return q

    def locked(self, key: str) -> float:
        """Seconds left on the lock of `key`, or 0."""
        until = self._locked_until.get(key)
        if until is None:
            return 0.0
        left = until - self.clock.monotonic()
        if left <= 0:
            del self._locked_until[key]
            self._failures.pop(key, None)
            return 0.0
        return left

    def record_failure(self, key: str, limit: int) -> bool:
        """Count a failure; returns True when this failure locks the key."""
        now = self.clock.monotonic()
        q = self._prune(key, now)
        q.append(now)
        if self.shared is not None:
            self.shared("failure", key, limit)
        if len(q) >= limit and key not in self._locked_until:
            self._locked_until[key] = now + self.limits.lockout
            return True
        return False

    def reset(self, key: str) -> None:
        had = self._failures.pop(key, None) is not None
        had = self._locked_until.pop(key, None) is not None or had
        if had and self.shared is not None:
            self.shared("reset", key, 0)

    def unlock(self, key: str) -> bool:
        had = key in self._locked_until
        self.reset(key)
        return had

    def lock_for(self, key: str, seconds: float) -> None:
        """Lock `key` for `seconds` (a lock recorded before a restart, see core/lockouts.py)."""
        self._locked_until[key] = self.clock.monotonic() + seconds
        if self.shared is not None:
            self.shared("lock", key, seconds)

    def account_key(self, host: str, username: str) -> str:
        return f"account:{username}@{host}"

    def address_key(self, address: str) -> str:
        return f"address:{address}"

    def gc(self) -> None:
        """Forget keys with neither recent failures nor a lock (called periodically)."""
        now = self.clock.monotonic()
        for key in list(self._failures):
            if not self._prune(key, now) and key not in self._locked_until:
                del self._failures[key]


class SaslSession:
    """The SASL state of one connection: which mechanism is running, for whom."""

    def __init__(self, auth: Authenticator, host: str, address: str, is_secure: bool) -> None:
        self.auth = auth
        self.host = host
        self.address = address
        self.is_secure = is_secure
        self.mechanism: ScramServer | PlainServer | None = None
        self.username: str | None = None

    async def step(self, mechanism: str | None, data: bytes) -> Challenge | Success | Failure:
        if mechanism is not None:
            if mechanism in HASHES:
                self.mechanism = ScramServer(mechanism, self.auth.fake_secret)
            elif mechanism == "PLAIN":
                self.mechanism = PlainServer()
            else:
                return Failure("invalid-mechanism")
        if self.mechanism is None:
            return Failure("malformed-request", "no SASL exchange in progress")
        result = self.mechanism.step(data)
        if isinstance(result, NeedCredential):
            result = await self._with_credential(result)
        result = self._finish(result)
        if isinstance(result, Failure) and self.auth.lockouts is not None:
            await self.auth.lockouts.flush()     # a new lock is recorded before the client hears
        return result

    async def _with_credential(self, need: NeedCredential) -> Challenge | Success | Failure:
        auth = self.auth
        try:
            username = normalise_local(need.username)
        except InvalidJid:
            username = None
        if need.authzid and username and need.authzid not in (f"{username}@{self.host}", username):
            return Failure("invalid-authzid", "you can only log in as yourself", username)
        locked = auth.check_locked(self.host, username or need.username, self.address)
        if locked is not None and auth.lockouts is not None:
            t = auth.throttle        # an administrator may have ended the lock (stockade user unlock)
            if await auth.lockouts.lifted([t.address_key(self.address), t.account_key(self.host, username or need.username)]):
                locked = auth.check_locked(self.host, username or need.username, self.address)
        if locked is not None:
            return locked
        self.username = username
        mech = self.mechanism
        external = auth.external
        if isinstance(mech, PlainServer) and username and external is not None and external.manages(self.host, username):
            if not self.is_secure:           # PLAIN is never offered without TLS; never check it either
                return Failure("encryption-required", "PLAIN is only accepted on an encrypted connection")
            return await external.verify(self.host, username, mech.password or "")
        creds = await auth.credentials.credentials(self.host, username) if username else None
        if isinstance(mech, ScramServer):
            cred = creds.get(mech.hash_name) if creds else None
            return mech.provide(cred, username or need.username)
        assert isinstance(mech, PlainServer)
        cred = creds.get("sha256") or creds.get("sha1") if creds else None
        if cred is not None and mech.password is not None and check_password(mech.password, cred):
            return Success(username or "")
        return Failure("not-authorized", "", username or need.username)

    def _finish(self, result: Challenge | Success | Failure) -> Challenge | Success | Failure:
        if isinstance(result, Success):
            self.auth.succeeded(self.host, result.username, self.address)
        elif isinstance(result, Failure) and result.condition == "not-authorized":
            self.auth.failed(self.host, result.username or self.username or "", self.address)
            return Failure("not-authorized", "wrong user name or password")
        return result


class Authenticator:
    def __init__(self, credentials: CredentialSource, throttle: LoginThrottle,
                 bus: HookBus | None = None) -> None:
        self.credentials = credentials
        self.throttle = throttle
        self.bus = bus                  # fires AuthFailed and AccountLocked (the audit log listens)
        self.external: ExternalPasswords | None = None    # the directory, when a host has one
        self.lockouts: LockoutRegistry | None = None      # locks recorded for administrators
        self.fake_secret = secrets.token_bytes(32)
        self.failures_total = 0

    def session(self, host: str, address: str, is_secure: bool) -> SaslSession:
        return SaslSession(self, host, address, is_secure)

    def check_locked(self, host: str, username: str, address: str) -> Failure | None:
        t = self.throttle
        if t.locked(t.address_key(address)):
            log.warning("login refused: address %s is locked after repeated failures", address)
            return Failure("temporary-auth-failure", "too many failed logins from your address; try again later")
        if t.locked(t.account_key(host, username)):
            log.warning("login refused: account %s@%s is locked after repeated failures (from %s)",
                        username, host, address)
            return Failure("temporary-auth-failure", "too many failed logins for this account; try again later")
        return None

    def failed(self, host: str, username: str, address: str, reason: str = "not-authorized") -> None:
        self.failures_total += 1
        t = self.throttle
        log.warning("login failed for %s@%s from %s", username, host, address)
        locks = []
        if t.record_failure(t.account_key(host, username), t.limits.max_failures_per_account):
            log.warning("account %s@%s locked for %.0f s after %d failed logins",
                        username, host, t.limits.lockout, t.limits.max_failures_per_account)
            locks.append("account")
        if t.record_failure(t.address_key(address), t.limits.max_failures_per_address):
            log.warning("address %s locked for %.0f s after %d failed logins",
                        address, t.limits.lockout, t.limits.max_failures_per_address)
            locks.append("address")
        bus = self.bus
        if bus is not None:
            bus.fire(AuthFailed(host, username, address, reason))
            until = t.clock.time() + t.limits.lockout
            for scope in locks:
                bus.fire(AccountLocked(host, username, address, until, scope))

    def succeeded(self, host: str, username: str, address: str) -> None:
        self.throttle.reset(self.throttle.account_key(host, username))
        log.info("login succeeded for %s@%s from %s", username, host, address)
