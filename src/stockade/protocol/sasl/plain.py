"""SASL PLAIN (RFC 4616), offered only on encrypted streams.

The password is checked against the stored SCRAM keys (or by the directory, when the account
lives there); it is never stored.
"""

from __future__ import annotations

from . import Failure, NeedCredential, Step


class PlainServer:
    """One PLAIN exchange: the single client message carries authzid, user name and password."""

    mechanism = "PLAIN"

    def __init__(self) -> None:
        self.username: str | None = None
        self.password: str | None = None
        self._done = False

    def step(self, data: bytes) -> Step:
        if self._done:
            return Failure("malformed-request", "PLAIN takes exactly one message")
        self._done = True
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return Failure("incorrect-encoding", "the PLAIN message is not UTF-8")
        parts = text.split("\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return Failure("malformed-request", "PLAIN expects authzid NUL user NUL password")
        authzid, self.username, self.password = parts
        return NeedCredential(self.username, authzid or None)
