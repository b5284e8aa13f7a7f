"""The live sessions the admin API lists, counts and ends, and the changes it makes that every
process must read at once.

With one process this is the process's own session registry. With several worker processes
(worker_node.py) the admin API runs in worker 0, and the other workers are asked over the links
between them (`WorkerNode.ask`): each answers for its own sessions with the same functions
(`answers`). Every account's sessions live in its home worker (core/partition.py), so the
workers' figures add up (nobody is online in two of them), and a session is ended, or an
account's sessions revoked, by asking that one worker.

    live = LiveSessions(sessions, revocations, stanzas_received=counter)
    await live.described("example.com")        # every session of the host, in every worker
    await live.changed("permissions")           # every worker has read the new rules

A worker that cannot answer (gone, hung) makes the action fail with 503 rather than show a
partial list as if it were whole.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..protocol.errors import StreamError
from ..protocol.jid import JID, InvalidJid, normalise_local, normalise_resource
from ..worker_node import WorkerUnavailable
from .actions import SESSION_ENDED_TEXT, ActionRefused

if TYPE_CHECKING:
    from ..core.revocation import SessionRevocation
    from ..core.sessions import SessionManager
    from ..modules.approved_clients import ApprovedClients

log = logging.getLogger(__name__)

# What another process may have changed in the database, and what re-reads it (app.py).
CHANGES = ("accounts", "groups", "permissions", "policy")


class LiveSessions:
    def __init__(self, sessions: SessionManager, revocations: SessionRevocation, *,
                 approved_clients: ApprovedClients | None = None,
                 stanzas_received: Callable[[], int] | None = None) -> None:
        self.sessions = sessions
        self.revocations = revocations
        self.approved_clients = approved_clients
        self.stanzas_received = stanzas_received
        # Re-readers of what another process changed, by CHANGES name (app.py sets them).
        self.rereaders: dict[str, Callable[[], Awaitable[Any]]] = {}
        self.node: Any = None                # worker_node.WorkerNode with several workers

    # -- this process (also the answers to the other workers) -----------------------------------
    def described_here(self, host: str) -> list[dict[str, Any]]:
        described = {d["jid"]: d for d in self.approved_clients.sessions()} if self.approved_clients else {}
        out = []
        for session in self.sessions:
            if session.host != host or session.is_closed:
                continue
            info = described.get(session.full) or session.client_info
            out.append({"jid": session.full, "user": session.username, "resource": session.resource,
                        "address": str(session.channel.address or ""), "client": info.get("name", "") or "",
                        "version": info.get("version", "") or "", "since": session.created})
        return out

    def counts_here(self, hosts: list[str]) -> dict[str, list[int]]:
        """Per host: [users online, sessions]."""
        users: dict[str, set[str]] = {h: set() for h in hosts}
        sessions = dict.fromkeys(hosts, 0)
        for session in self.sessions:
            if session.host in users:
                users[session.host].add(session.username)
                sessions[session.host] += 1
        return {h: [len(users[h]), sessions[h]] for h in hosts}

    def online_here(self, host: str) -> list[str]:
        return sorted({s.username for s in self.sessions if s.host == host})

    def end_here(self, host: str, user: str, resource: str) -> dict[str, str] | None:
        """End one session with <policy-violation/>; what it was, or None when there is none."""
        try:
            session = self.sessions.get(JID(normalise_local(user), host, normalise_resource(resource)))
        except InvalidJid:
            session = None
        if session is None or session.is_closed:
            return None
        before = {"jid": session.full, "client": session.client_info.get("name", "") or "",
                  "version": session.client_info.get("version", "") or ""}
        session.close(StreamError("policy-violation", SESSION_ENDED_TEXT))
        return before

    def count_here(self, host: str, username: str) -> int:
        return len(self.sessions.of_user(JID(username, host, None)))

    def stanzas_here(self) -> int:
        return self.stanzas_received() if self.stanzas_received is not None else 0

    async def reread(self, change: str) -> None:
        """Read again what worker 0 changed (CHANGES)."""
        reader = self.rereaders.get(change)
        if reader is None:
            raise LookupError(f"nothing re-reads {change!r}")
        await reader()

    def answers(self) -> dict[str, Callable[..., Any]]:
        """What the other workers may ask this one (WorkerNode.answers)."""
        return {"sessions": self.described_here, "session_counts": self.counts_here, "online": self.online_here,
                "end_session": self.end_here, "count_of": self.count_here, "stanzas": self.stanzas_here, "reread": self.reread,
                "revoked": self.revocations.apply_recorded}

    # -- the whole node -------------------------------------------------------------------------
    async def _others(self, what: str, /, **args: Any) -> list[Any]:
        if self.node is None:
            return []
        try:
            return await self.node.ask_others(what, **args)
        except WorkerUnavailable as exc:
            raise _unavailable(exc) from None

    async def _home(self, host: str, username: str, what: str, /, **args: Any) -> tuple[bool, Any]:
        """(True, the answer) when the account lives in another worker; (False, None) when here."""
        node = self.node
        worker = None if node is None else node.partition.home(host, username)
        if worker is None or worker == node.index:
            return False, None
        try:
            return True, await node.ask(worker, what, **args)
        except WorkerUnavailable as exc:
            raise _unavailable(exc) from None

    async def described(self, host: str) -> list[dict[str, Any]]:
        out = self.described_here(host)
        for answer in await self._others("sessions", host=host):
            out += answer
        return sorted(out, key=lambda s: s["jid"])

    async def counts(self, hosts: list[str]) -> dict[str, list[int]]:
        total = self.counts_here(hosts)
        for answer in await self._others("session_counts", hosts=hosts):
            for host, (users, sessions) in answer.items():
                total[host][0] += users
                total[host][1] += sessions
        return total

    async def online(self, host: str) -> set[str]:
        users = set(self.online_here(host))
        for answer in await self._others("online", host=host):
            users.update(answer)
        return users

    async def end(self, host: str, username: str, resource: str) -> dict[str, str] | None:
        """End the session `username` (normalised) has on `resource`; what it was, or None."""
        elsewhere, answer = await self._home(host, username, "end_session", host=host, user=username,
                                             resource=resource)
        return answer if elsewhere else self.end_here(host, username, resource)

    async def count_of(self, host: str, username: str) -> int:
        """How many sessions the account has (waiting to be resumed ones too)."""
        elsewhere, answer = await self._home(host, username, "count_of", host=host, username=username)
        return answer if elsewhere else self.count_here(host, username)

    async def revoke(self, host: str, username: str) -> int:
        """Record the revocation of every session of the account and end them in its home
        worker; how many were ended."""
        ended = await self.revocations.revoke(host, username)
        elsewhere, answer = await self._home(host, username, "revoked", host=host, username=username)
        return ended + answer if elsewhere else ended

    async def stanzas(self) -> int:
        """Stanzas received from clients since the start, in every worker."""
        return self.stanzas_here() + sum(await self._others("stanzas"))

    async def changed(self, what: str) -> None:
        """An admin action changed `what` (CHANGES) in the database: every other worker reads
        it before the action is answered."""
        assert what in CHANGES, what
        await self._others("reread", change=what)


def _unavailable(exc: WorkerUnavailable) -> ActionRefused:
    return ActionRefused(503, f"{exc}; try again in a moment")


__all__ = ["CHANGES", "LiveSessions"]
