"""SASL (RFC 4422) for XMPP (RFC 6120 section 6): server-side mechanisms, sans-IO.

A mechanism is a small state machine: `step(client_data) -> Challenge | Success | Failure`.
Credential lookups are the caller's job: mechanisms name the user they need (`username`) and the
caller hands them a `ScramCredential` or a password checker before the next step. Only SCRAM salted
keys are stored; PLAIN is verified against the same keys (see `plain.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

FAILURE_CONDITIONS = frozenset({
    "aborted", "account-disabled", "credentials-expired", "encryption-required",
    "incorrect-encoding", "invalid-authzid", "invalid-mechanism", "malformed-request",
    "mechanism-too-weak", "not-authorized", "temporary-auth-failure",
})


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    username: str          # the normalised localpart that authenticated
    data: bytes = b""      # additional data with success (SCRAM server signature)


@dataclass(frozen=True, slots=True)
class Failure:
    condition: str
    text: str = ""
    username: str | None = None    # who it was for, when known (for throttling and logs)

    def __post_init__(self) -> None:
        if self.condition not in FAILURE_CONDITIONS:
            raise ValueError(f"unknown SASL failure condition {self.condition!r}")


@dataclass(frozen=True, slots=True)
class NeedCredential:
    """The mechanism needs the stored credential of `username` before it can go on."""
    username: str
    authzid: str | None


Step = Challenge | Success | Failure | NeedCredential
