"""Administrator identities and API tokens, separate from XMPP accounts.

Both live in the generic map stores (no migration), under the server-wide host "":

- "admin_accounts": name -> {role, hosts, password (argon2id hash), totp (base32 secret or ""), created}
- "admin_tokens":   SHA-256 of the token -> {id, admin, scopes, expires, created, note}

A token is `stk_` + 32 random bytes (URL-safe base64); only its hash is stored, so it is shown
once, when created. Its public id (the first 16 hex digits of the hash) names it for listing
and revocation. The command line (`stockade admin ...`) and the server share the stores, so the
server reads them on every use and never caches an admin or a token: a removed admin or a
revoked token stops working at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .roles import OPERATOR, ROLES, SERVER_WIDE, permissions_of

if TYPE_CHECKING:
    from ..core.clock import Clock
    from ..storage import Storage

ACCOUNTS_STORE = "admin_accounts"
TOKENS_STORE = "admin_tokens"
_ALL = ("", "")
ALL_HOSTS = "*"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
TOKEN_PREFIX = "stk_"
MAX_TOKEN_DAYS = 365
TOTP_ISSUER = "Stockade"

_hasher = PasswordHasher()          # argon2id with the library's current recommended parameters
# Verified against when the admin does not exist, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a real password: timing equaliser")


class AdminError(Exception):
    """A refused admin-identity operation; the text says why and what to do."""


class TokenRejected(Exception):
    """The bearer token cannot be used (unknown, expired, revoked, its admin gone)."""


@dataclass(frozen=True, slots=True)
class AdminAccount:
    name: str
    role: str
    hosts: tuple[str, ...]          # ("*",) for every host
    password_hash: str = ""
    totp_secret: str = ""
    created: float = 0.0

    @property
    def has_mfa(self) -> bool:
        return bool(self.totp_secret)

    def in_scope(self, host: str) -> bool:
        return ALL_HOSTS in self.hosts or host in self.hosts

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "hosts": list(self.hosts), "password": self.password_hash,
                "totp": self.totp_secret, "created": self.created}

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> AdminAccount:
        return cls(name, str(data.get("role", "")), tuple(data.get("hosts", ())), str(data.get("password", "")),
                   str(data.get("totp", "")), float(data.get("created", 0)))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: an admin, with the permissions in force (a token's scopes narrow them)."""
    admin: AdminAccount
    permissions: frozenset[str]
    token_id: str = ""

    @property
    def actor(self) -> str:
        return f"admin:{self.admin.name}"

    def refusal(self, permission: str, host: str | None = None) -> str | None:
        """Why this principal may not use `permission` (on `host`); None when it may."""
        if permission not in permissions_of(self.admin.role):
            return f"the role {self.admin.role} does not include the permission {permission}"
        if permission not in self.permissions:
            return f"this token's scopes do not include {permission}; create a token with that scope"
        if host is not None and permission not in SERVER_WIDE and not self.admin.in_scope(host):
            return f"the admin {self.admin.name} does not manage the host {host}"
        return None

    def may(self, permission: str, host: str | None = None) -> bool:
        return self.refusal(permission, host) is None

    def visible_hosts(self, domains: Iterable[str]) -> list[str]:
        return sorted(h for h in domains if self.admin.in_scope(h))


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    admin: str
    scopes: tuple[str, ...]
    expires: float
    created: float
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "admin": self.admin, "scopes": list(self.scopes), "expires": self.expires,
                "created": self.created, "note": self.note}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenInfo:
        return cls(str(data["id"]), str(data["admin"]), tuple(data.get("scopes", ())), float(data["expires"]),
                   float(data.get("created", 0)), str(data.get("note", "")))


def _totp_aad(name: str) -> bytes:
    return b"admin totp\0" + name.encode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AdminError(f"an admin password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AdminError(f"an admin password may have at most {MAX_PASSWORD} characters")


class AdminDirectory:
    """Admin accounts and their API tokens, in the storage shared with the command line."""

    def __init__(self, storage: Storage, clock: Clock, domains: Iterable[str]) -> None:
        self.accounts = storage.map(ACCOUNTS_STORE)
        self.tokens = storage.map(TOKENS_STORE)
        # TOTP secrets are sealed at rest when encryption is on (storage/crypto.py): a copy of the
        # database alone does not give away the second factor.
        self._cipher = storage.cipher
        self.clock = clock
        self.domains = set(domains)

    # -- admins ---------------------------------------------------------------------------------
    async def create(self, name: str, role: str, hosts: Iterable[str], password: str, *,
                     with_totp: bool = True) -> tuple[AdminAccount, str | None]:
        """Create an admin; returns it and, with TOTP, the otpauth:// URI for an authenticator app."""
        if not NAME_RE.match(name):
            raise AdminError(f"{name!r} is not a valid admin name: use 1 to 64 lower-case letters, digits, '.', "
                             "'_' or '-', starting with a letter or digit")
        if role not in ROLES:
            raise AdminError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        hosts = sorted(set(hosts))
        unknown = [h for h in hosts if h not in self.domains]
        if unknown:
            raise AdminError(f"{', '.join(unknown)} is not a host this server serves "
                             f"(served: {', '.join(sorted(self.domains))})")
        if role == OPERATOR:
            if hosts:
                raise AdminError("an operator manages every host: leave out --host")
            hosts = [ALL_HOSTS]
        elif not hosts:
            raise AdminError(f"a {role} needs at least one host it manages: add --host DOMAIN")
        check_password_rules(password)
        if await self.accounts.get(*_ALL, name) is not None:
            raise AdminError(f"the admin {name} already exists")
        digest = await asyncio.to_thread(_hasher.hash, password)
        secret = pyotp.random_base32() if with_totp else ""
        account = AdminAccount(name, role, tuple(hosts), digest, secret, self.clock.time())
        record = account.to_json()
        if self._cipher is not None and secret:
            record["totp"] = self._cipher.seal_text(secret, _totp_aad(name))
        await self.accounts.set(*_ALL, name, record)
        uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER) if secret else None
        return account, uri

    async def get(self, name: str) -> AdminAccount | None:
        if not NAME_RE.match(name):
            return None
        data = await self.accounts.get(*_ALL, name)
        return await self._account(name, data) if isinstance(data, dict) else None

    async def list(self) -> list[AdminAccount]:
        return sorted([await self._account(n, d) for n, d in (await self.accounts.get_all(*_ALL)).items()
                       if isinstance(d, dict)], key=lambda a: a.name)

    async def _account(self, name: str, data: dict[str, Any]) -> AdminAccount:
        """The stored record as an account, its TOTP secret opened (records without the
        encryption marker, stored while encryption was off, are read as they are)."""
        totp = data.get("totp")
        if self._cipher is not None and isinstance(totp, str) and totp:
            data = {**data, "totp": await self._cipher.unseal_text(totp, _totp_aad(name))}
        return AdminAccount.from_json(name, data)

    async def set_password(self, name: str, password: str) -> None:
        """A new console password for an admin (a forgotten one: the operator resets it)."""
        account = await self.get(name)
        if account is None:
            raise AdminError(f"there is no admin {name}; list them with `stockade admin list`")
        check_password_rules(password)
        digest = await asyncio.to_thread(_hasher.hash, password)
        await self._store(replace(account, password_hash=digest))

    async def reset_totp(self, name: str, *, with_totp: bool = True) -> str | None:
        """A new TOTP secret for an admin (a lost authenticator), or none with `with_totp` False;
        returns the otpauth:// URI to scan. The old codes stop working at once."""
        account = await self.get(name)
        if account is None:
            raise AdminError(f"there is no admin {name}; list them with `stockade admin list`")
        secret = pyotp.random_base32() if with_totp else ""
        await self._store(replace(account, totp_secret=secret))
        return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER) if secret else None

    async def _store(self, account: AdminAccount) -> None:
        record = account.to_json()
        if self._cipher is not None and account.totp_secret:
            record["totp"] = self._cipher.seal_text(account.totp_secret, _totp_aad(account.name))
        await self.accounts.set(*_ALL, account.name, record)

    async def remove(self, name: str) -> None:
        if await self.get(name) is None:
            raise AdminError(f"there is no admin {name}")
        await self.accounts.set(*_ALL, name, None)
        for info in await self.tokens_of(name):
            await self.revoke_token(name, info.id)

    async def check_password(self, name: str, password: str) -> AdminAccount | None:
        """The admin when the password is right; None otherwise (same cost either way)."""
        account = await self.get(name)
        digest = account.password_hash if account is not None else _DUMMY_HASH
        if len(password) > MAX_PASSWORD:
            return None
        try:
            ok = await asyncio.to_thread(_hasher.verify, digest, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        return account if ok and account is not None else None

    @staticmethod
    def check_totp(account: AdminAccount, code: str) -> bool:
        """The current code (or the one before or after, for clock drift) of the admin's secret."""
        code = code.strip().replace(" ", "")
        if not account.totp_secret or not code.isdigit() or len(code) != 6:
            return False
        return pyotp.TOTP(account.totp_secret).verify(code, valid_window=1)

    # -- tokens ---------------------------------------------------------------------------------
    async def create_token(self, creator: Principal, scopes: Iterable[str], days: float,
                           note: str = "") -> tuple[str, TokenInfo]:
        """A new token for `creator`'s admin with `scopes` (each one the creator holds itself).
        Returns the token text (shown once) and what is stored about it."""
        scopes = sorted(set(scopes))
        if not scopes:
            raise AdminError("a token needs at least one scope")
        missing = [s for s in scopes if s not in creator.permissions or s not in permissions_of(creator.admin.role)]
        if missing:
            raise AdminError(f"you cannot give a token scopes you do not hold yourself: {', '.join(missing)}")
        if not 0 < days <= MAX_TOKEN_DAYS:
            raise AdminError(f"a token expires after 1 to {MAX_TOKEN_DAYS} days")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = token_hash(token)
        now = self.clock.time()
        info = TokenInfo(digest[:16], creator.admin.name, tuple(scopes), now + days * 86400, now, note[:200])
        await self.tokens.set(*_ALL, digest, info.to_json())
        return token, info

    async def authenticate_token(self, token: str) -> Principal:
        """The principal a bearer token stands for; TokenRejected says why it cannot be used."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise TokenRejected("this is not a Stockade API token (they start with stk_)")
        digest = token_hash(token)
        data = await self.tokens.get(*_ALL, digest)
        if not isinstance(data, dict):
            raise TokenRejected("unknown or revoked token; create a new one with `stockade admin token`")
        info = TokenInfo.from_json(data)
        if not hmac.compare_digest(info.id, digest[:16]):
            raise TokenRejected("unknown or revoked token")
        if info.expires <= self.clock.time():
            raise TokenRejected("the token has expired; create a new one with `stockade admin token`")
        account = await self.get(info.admin)
        if account is None:
            raise TokenRejected(f"the admin {info.admin} who owned this token no longer exists")
        return Principal(account, frozenset(info.scopes) & permissions_of(account.role), info.id)

    async def tokens_of(self, name: str | None = None) -> list[TokenInfo]:
        infos = [TokenInfo.from_json(d) for d in (await self.tokens.get_all(*_ALL)).values() if isinstance(d, dict)]
        return sorted((i for i in infos if name is None or i.admin == name), key=lambda i: (i.created, i.id))

    async def revoke_token(self, name: str, token_id: str) -> bool:
        """Revoke one of `name`'s tokens by its id; False when it has no such token."""
        for digest, data in (await self.tokens.get_all(*_ALL)).items():
            if isinstance(data, dict) and data.get("id") == token_id and data.get("admin") == name:
                await self.tokens.set(*_ALL, digest, None)
                return True
        return False


def principal_of(account: AdminAccount) -> Principal:
    """An admin acting as itself (the console, the command line): every permission of its role."""
    return Principal(account, permissions_of(account.role))
