"""SCRAM-SHA-256 (RFC 5802, RFC 7677), client side, without channel binding.

PBKDF2 is slow on purpose (thousands of HMAC rounds). The load generator must not pay it during a
timed login, so salted passwords are kept in a `SaltedPasswords` cache keyed by (password, salt,
iterations), filled before the timed part from the credentials the benchmark provisioned. When a
server offers a salt that is not in the cache the client computes it (and the cache counts it as a
miss, which a report can show).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

HASH = "sha256"
MECHANISM = "SCRAM-SHA-256"
GS2_HEADER = b"n,,"
CHANNEL_BINDING = base64.b64encode(GS2_HEADER).decode()   # "biws"
NONCE_BYTES = 18


class ScramError(Exception):
    """The server's SCRAM message was malformed or its signature was wrong."""


class SaltedPasswords:
    """PBKDF2 results, computed at most once per (password, salt, iterations)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bytes, int], bytes] = {}
        self.misses = 0

    def add(self, password: str, salt: bytes, iterations: int, salted: bytes) -> None:
        self._cache[(password, salt, iterations)] = salted

    def get(self, password: str, salt: bytes, iterations: int) -> bytes:
        key = (password, salt, iterations)
        salted = self._cache.get(key)
        if salted is None:
            self.misses += 1
            salted = hashlib.pbkdf2_hmac(HASH, password.encode(), salt, iterations)
            self._cache[key] = salted
        return salted


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """One exchange: `first()`, then `final(server_first)`, then `verify(server_final)`."""

    def __init__(self, username: str, password: str, salted: SaltedPasswords) -> None:
        self._password = password
        self._salted = salted
        self._nonce = base64.b64encode(os.urandom(NONCE_BYTES)).decode()
        self._first_bare = f"n={_escape(username)},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return GS2_HEADER + self._first_bare.encode()

    def final(self, server_first: bytes) -> bytes:
        try:
            attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        except (ValueError, KeyError) as exc:
            raise ScramError(f"bad server-first message {server_first!r}") from exc
        if not nonce.startswith(self._nonce):
            raise ScramError("the server nonce does not extend ours")
        salted = self._salted.get(self._password, salt, iterations)
        without_proof = f"c={CHANNEL_BINDING},r={nonce}"
        auth_message = f"{self._first_bare},{server_first.decode()},{without_proof}".encode()
        client_key = hmac.digest(salted, b"Client Key", HASH)
        stored_key = hashlib.new(HASH, client_key).digest()
        signature = hmac.digest(stored_key, auth_message, HASH)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", HASH)
        self._server_signature = hmac.digest(server_key, auth_message, HASH)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        """Check the server's signature (v=...): the server really knew our keys."""
        if not server_final.startswith(b"v=") or base64.b64decode(server_final[2:]) != self._server_signature:
            raise ScramError(f"bad server signature {server_final!r}")
