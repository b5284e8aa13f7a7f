"""Password policy: the rules a new password must pass, per host, wherever a password is set.

Rules, checked in this order (the first that fails is the one reported):

1. length: at least `min_length` characters;
2. common: not on the shipped list of the most used passwords (`common_passwords.txt`), also
   after lowercasing, dropping trailing digits and symbols ("Dragon2024!" is "dragon") and undoing
   the usual substitutions ("p@ssw0rd" is "password");
3. user name: does not contain the account's user name (off by default);
4. history: not one of the account's last `history` passwords (the current one included).

The history holds SCRAM verifiers only, never a password: the salt, the iteration count and the
StoredKey of SCRAM-SHA-256 (RFC 5802), in the key-value store "password_history". A candidate is
compared by deriving it again with each stored salt, as a PLAIN login would.

`PasswordRejected` says which rule failed and what to do; `AccountService` turns it into the
`AccountError` the command line and the admin API print.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..protocol.sasl.scram import ScramCredential, check_password

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..storage import KeyValueStore

HISTORY_STORE = "password_history"
HISTORY_HASH = "sha256"
_TRAILING = re.compile(r"[\d\W_]+$")
_UNLEET = str.maketrans({"@": "a", "4": "a", "0": "o", "3": "e", "$": "s", "5": "s", "1": "i", "!": "i",
                         "7": "t", "+": "t"})


class PasswordRejected(ValueError):
    """A password that breaks a rule; `rule` is "length", "common", "username" or "history"."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class PasswordRules:
    min_length: int = 8
    reject_common: bool = True
    reject_username: bool = False
    history: int = 5

    @classmethod
    def for_host(cls, config: ServerConfig, host: str) -> PasswordRules:
        """The [auth] defaults with the host's own settings ([[hosts]]) over them."""
        auth = config.auth
        rules = cls(min_length=auth.min_password_length, reject_common=auth.reject_common_passwords,
                    reject_username=auth.reject_username_in_password, history=auth.password_history)
        section = next((h for h in config.hosts if h.domain == host), None)
        if section is None:
            return rules
        own = {"min_length": section.min_password_length, "reject_common": section.reject_common_passwords,
               "reject_username": section.reject_username_in_password, "history": section.password_history}
        return cls(**{k: (v if v is not None else getattr(rules, k)) for k, v in own.items()})


@functools.lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list, lowercased (loaded once)."""
    text = resources.files(__package__).joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def is_common(password: str) -> bool:
    """Whether the password, or its base word with digits and symbols stripped from the end, or
    either with substitutions undone, is on the common list."""
    common = common_passwords()
    lower = password.lower()
    base = _TRAILING.sub("", lower)
    candidates = {lower, lower.translate(_UNLEET)}
    if len(base) >= 4:
        candidates |= {base, base.translate(_UNLEET)}
    return any(c in common for c in candidates)


def check_rules(rules: PasswordRules, username: str, password: str) -> None:
    """The rules that need no stored data (1-3). Raises PasswordRejected."""
    if len(password) < rules.min_length:
        raise PasswordRejected("length", f"the password is too short: use at least {rules.min_length} characters "
                                         f"(a passphrase of several unrelated words is easiest to remember)")
    if rules.reject_common and is_common(password):
        raise PasswordRejected("common", "the password is too common: it is, or is built on, one of the most used "
                                         "passwords, which attackers try first; choose a passphrase of several "
                                         "unrelated words")
    if rules.reject_username and len(username) >= 3 and username.lower() in password.lower():
        raise PasswordRejected("username", "the password contains the user name: choose one that does not")


def verifier(cred: ScramCredential) -> dict[str, Any]:
    """What the history keeps of a password: its SCRAM salt, iterations and StoredKey."""
    return {"hash": cred.hash_name, "salt": base64.b64encode(cred.salt).decode(), "iterations": cred.iterations,
            "stored_key": base64.b64encode(cred.stored_key).decode()}


def _credential(entry: dict[str, Any]) -> ScramCredential:
    return ScramCredential(entry["hash"], base64.b64decode(entry["salt"]), int(entry["iterations"]),
                           base64.b64decode(entry["stored_key"]), b"")


class PasswordPolicy:
    """The rules of every served host, and the password history they need."""

    def __init__(self, rules: dict[str, PasswordRules], history: KeyValueStore | None,
                 default: PasswordRules | None = None) -> None:
        self._rules = rules
        self._default = default or PasswordRules()
        self.history = history

    @classmethod
    def from_config(cls, config: ServerConfig, history: KeyValueStore | None) -> PasswordPolicy:
        return cls({d: PasswordRules.for_host(config, d) for d in config.domains}, history,
                   PasswordRules.for_host(config, ""))

    def rules(self, host: str) -> PasswordRules:
        return self._rules.get(host, self._default)

    def check(self, host: str, username: str, password: str) -> None:
        """Rules 1-3; raises PasswordRejected."""
        check_rules(self.rules(host), username, password)

    async def check_reuse(self, host: str, username: str, password: str,
                          current: dict[str, ScramCredential] | None) -> None:
        """Rule 4: not the current password nor one of the remembered ones. Raises PasswordRejected."""
        keep = self.rules(host).history
        if keep <= 0:
            return
        known: list[ScramCredential] = []
        if current:
            cred = current.get(HISTORY_HASH) or next(iter(current.values()))
            known.append(cred)
        if self.history is not None:
            entries = await self.history.get(host, username) or []
            known += [c for c in map(_credential, entries[:keep]) if all(c.salt != k.salt for k in known)]
        # PBKDF2 once per remembered password: off the event loop.
        if await asyncio.to_thread(lambda: any(check_password(password, c) for c in known)):
            raise PasswordRejected("history", f"the password was used before: the last {keep} password(s) of "
                                              f"{username}@{host} cannot be used again; choose a new one")

    async def remember(self, host: str, username: str, creds: list[ScramCredential]) -> None:
        """Add a newly set password (its verifier) to the account's history."""
        keep = self.rules(host).history
        if keep <= 0 or self.history is None:
            return
        cred = next((c for c in creds if c.hash_name == HISTORY_HASH), creds[0])
        entries = await self.history.get(host, username) or []
        await self.history.set(host, username, [verifier(cred), *entries][:keep])
