"""Revoke every session of an account: for a lost or stolen device, or a departing employee.

`revoke()` records the time of the revocation in the map store "session_revocations" (one
server-wide entry per account, "alice@example.com" -> {"at": unix seconds}) and ends every
session of the account that started before then: live ones get the stream error

    <not-authorized/> "all sessions of alice@example.com were revoked by an administrator; log in again"

and sessions waiting to be resumed (XEP-0198) end at once, so their resumption id no longer works:
a stolen device cannot resume. Logging in again with the password still works; change the
password too (`stockade user passwd`) when the device knows it.

`stockade user revoke` runs in another process: it only writes the record. The server reads the
records every `server.account_check_interval` seconds (`poll`, beside the check for removed
accounts) and ends the sessions that started before a revocation it has not applied yet, including
any resumed in between.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..protocol.errors import StreamError
from ..protocol.jid import JID

if TYPE_CHECKING:
    from ..storage import MapStore
    from .clock import Clock
    from .sessions import SessionManager

log = logging.getLogger("stockade.revocation")

STORE = "session_revocations"
_ALL = ("", "")                    # one server-wide map of the records


def revoked_text(host: str, username: str) -> str:
    return f"all sessions of {username}@{host} were revoked by an administrator; log in again"


class SessionRevocation:
    """Records revocations and, in the server (`sessions` given), ends the sessions they cover."""

    def __init__(self, store: MapStore, clock: Clock, sessions: SessionManager | None = None) -> None:
        self.store = store
        self.clock = clock
        self.sessions = sessions
        self._applied: dict[str, float] = {}     # account -> the last revocation time applied

    async def load(self) -> None:
        """At start-up no session exists yet: every recorded revocation counts as applied."""
        for account, record in (await self.store.get_all(*_ALL)).items():
            if isinstance(record, dict):
                self._applied[account] = float(record.get("at", 0))

    async def revoke(self, host: str, username: str) -> int:
        """Record a revocation of every session of the account, now, and end those this process
        has. Returns how many sessions were ended here."""
        at = self.clock.time()
        account = f"{username}@{host}"
        await self.store.set(*_ALL, account, {"at": at})
        log.warning("all sessions of %s revoked by an administrator", account)
        return self._apply(account, at)

    async def poll(self) -> list[str]:
        """Apply the revocations recorded by another process (the command line) since the last
        poll. Returns the accounts whose sessions were checked."""
        done = []
        for account, record in (await self.store.get_all(*_ALL)).items():
            at = float(record.get("at", 0)) if isinstance(record, dict) else 0.0
            if at > self._applied.get(account, 0.0):
                ended = self._apply(account, at)
                log.info("applied the revocation of %s's sessions: %d ended", account, ended)
                done.append(account)
        return done

    async def apply_recorded(self, host: str, username: str) -> int:
        """Apply the account's recorded revocation now, when this process has not yet (another
        worker process recorded it: admin/live.py). Returns how many sessions were ended."""
        account = f"{username}@{host}"
        record = await self.store.get(*_ALL, account)
        at = float(record.get("at", 0)) if isinstance(record, dict) else 0.0
        if at <= self._applied.get(account, 0.0):
            return 0
        return self._apply(account, at)

    def revoked_at(self, host: str, username: str) -> float:
        """When the account's sessions were last revoked (as far as this process knows), or 0."""
        return self._applied.get(f"{username}@{host}", 0.0)

    def _apply(self, account: str, at: float) -> int:
        self._applied[account] = max(at, self._applied.get(account, 0.0))
        if self.sessions is None:
            return 0
        username, _, host = account.partition("@")
        ended = 0
        # No await in this loop: every session (live or hibernating) ends in the same turn.
        for session in self.sessions.of_user(JID(username, host, None)):
            if session.created <= at and not session.is_closed:
                session.close(StreamError("not-authorized", revoked_text(host, username)))
                ended += 1
        return ended
