"""SCRAM-SHA-1 and SCRAM-SHA-256, server side (RFC 5802, RFC 7677), without channel binding.

Exchange:  client-first  `n,,n=user,r=cnonce`        -> NeedCredential(user)
           provide(credential)                        -> Challenge `r=cnonce+snonce,s=salt,i=iter`
           client-final `c=biws,r=nonce,p=proof`      -> Success(`v=signature`) | Failure

Only the salted keys (StoredKey, ServerKey) are ever stored. For an unknown user the exchange runs
to the end against a made-up credential (deterministic per user name, so repeated probes look the
same) and fails with not-authorized: the answer never tells whether an account exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import precis_i18n

from ..entropy import token_urlsafe
from . import Challenge, Failure, NeedCredential, Step, Success

HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
DEFAULT_ITERATIONS = 4096
_PASSWORD = precis_i18n.get_profile("OpaqueString")


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the server stores for one user and one hash: never the password."""
    hash_name: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def normalise_password(password: str) -> bytes:
    try:
        return _PASSWORD.enforce(password).encode()
    except UnicodeError:
        # Passwords a client can type but PRECIS rejects are still hashed, byte for byte.
        return password.encode()


def derive(password: str, hash_name: str, salt: bytes | None = None,
           iterations: int = DEFAULT_ITERATIONS) -> ScramCredential:
    """Salted keys for `password` (PBKDF2 with `iterations` rounds)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(hash_name, normalise_password(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramCredential(hash_name, salt, iterations, hashlib.new(hash_name, client_key).digest(),
                           hmac.digest(salted, b"Server Key", hash_name))


def check_password(password: str, cred: ScramCredential) -> bool:
    """Whether `password` matches the stored keys (used by PLAIN)."""
    candidate = derive(password, cred.hash_name, cred.salt, cred.iterations)
    return hmac.compare_digest(candidate.stored_key, cred.stored_key)


def _fake_credential(hash_name: str, username: str, secret: bytes) -> ScramCredential:
    seed = hmac.digest(secret, username.encode(), "sha256")
    key = hmac.digest(seed, b"key", hash_name)
    return ScramCredential(hash_name, seed[:16], DEFAULT_ITERATIONS, key, key)


def decode_saslname(name: str) -> str | None:
    """RFC 5802 saslname: '=2C' is ',' and '=3D' is '='; any other '=' is malformed."""
    out, i = [], 0
    while i < len(name):
        ch = name[i]
        if ch == "=":
            code = name[i + 1:i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                return None
            i += 3
        elif ch == ",":
            return None
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _attrs(message: str) -> dict[str, str] | None:
    attrs: dict[str, str] = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            return None
        attrs.setdefault(part[0], part[2:])
    return attrs


class ScramServer:
    """One server-side SCRAM exchange."""

    def __init__(self, mechanism: str, fake_secret: bytes, nonce: str | None = None) -> None:
        self.mechanism = mechanism
        self.hash_name = HASHES[mechanism]
        self._fake_secret = fake_secret
        self._snonce = nonce or token_urlsafe(18)
        self._state = "start"
        self.username: str | None = None

    def step(self, data: bytes) -> Step:
        if self._state == "start":
            return self._client_first(data)
        if self._state == "final":
            return self._client_final(data)
        return Failure("malformed-request", "unexpected SCRAM message")

    def _client_first(self, data: bytes) -> Step:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return Failure("incorrect-encoding", "the SCRAM message is not UTF-8")
        parts = text.split(",", 2)
        if len(parts) != 3:
            return Failure("malformed-request", "the SCRAM client-first message is malformed")
        cbflag, authzid_field, bare = parts
        if cbflag.startswith("p="):
            return Failure("malformed-request", "channel binding is not offered by this server")
        if cbflag not in ("n", "y"):
            return Failure("malformed-request", "bad SCRAM GS2 header")
        authzid = None
        if authzid_field:
            if not authzid_field.startswith("a="):
                return Failure("malformed-request", "bad SCRAM authzid field")
            authzid = decode_saslname(authzid_field[2:])
            if authzid is None:
                return Failure("malformed-request", "bad SCRAM authzid encoding")
        attrs = _attrs(bare)
        if attrs is None or "n" not in attrs or "r" not in attrs or "m" in attrs:
            return Failure("malformed-request", "the SCRAM client-first message is malformed")
        username = decode_saslname(attrs["n"])
        if not username or not attrs["r"]:
            return Failure("malformed-request", "bad SCRAM user name or nonce")
        self._gs2_header = f"{cbflag},{authzid_field},"
        self._client_first_bare = bare
        self._cnonce = attrs["r"]
        self.username = username
        self._state = "credential"
        return NeedCredential(username, authzid)

    def provide(self, cred: ScramCredential | None, username: str | None = None) -> Step:
        """Continue with the stored credential of the user (None: unknown user, fail at the end)."""
        if self._state != "credential":
            return Failure("malformed-request", "unexpected SCRAM state")
        if username is not None:
            self.username = username
        self._known = cred is not None
        self._cred = cred or _fake_credential(self.hash_name, self.username or "", self._fake_secret)
        nonce = self._cnonce + self._snonce
        self._server_first = f"r={nonce},s={base64.b64encode(self._cred.salt).decode()},i={self._cred.iterations}"
        self._nonce = nonce
        self._state = "final"
        return Challenge(self._server_first.encode())

    def _client_final(self, data: bytes) -> Step:
        self._state = "done"
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return Failure("incorrect-encoding", "the SCRAM message is not UTF-8", self.username)
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attrs = _attrs(without_proof) if sep else None
        if attrs is None or "c" not in attrs or "r" not in attrs:
            return Failure("malformed-request", "the SCRAM client-final message is malformed", self.username)
        try:
            binding = base64.b64decode(attrs["c"], validate=True)
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            return Failure("incorrect-encoding", "bad base64 in the SCRAM message", self.username)
        if binding != self._gs2_header.encode():
            return Failure("not-authorized", "channel binding data does not match", self.username)
        if attrs["r"] != self._nonce:
            return Failure("not-authorized", "the SCRAM nonce does not match", self.username)
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(self._cred.stored_key, auth_message, self.hash_name)
        if len(proof) != len(signature):
            return Failure("not-authorized", "", self.username)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        ok = hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(), self._cred.stored_key)
        if not ok or not self._known:
            return Failure("not-authorized", "", self.username)
        server_sig = hmac.digest(self._cred.server_key, auth_message, self.hash_name)
        return Success(self.username or "", b"v=" + base64.b64encode(server_sig))
