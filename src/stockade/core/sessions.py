"""Client sessions: one per bound resource, and the registry that finds them by JID."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterator, Protocol

from ..protocol.entropy import token_hex
from ..protocol.errors import StreamError
from ..protocol.jid import JID
from ..protocol.xml import Element


class SessionChannel(Protocol):
    """What the network layer gives a session: a way to write and a way to end."""
    address: str
    is_secure: bool

    @property
    def connection(self) -> Any:
        """The network connection underneath (a wrapper such as stream management delegates)."""

    def send_stanza(self, stanza: Element) -> None: ...
    def send_bytes(self, data: bytes) -> None: ...
    def close(self, error: StreamError | None = None) -> None: ...


class ClientSession:
    """A bound resource of a local account (RFC 6120 section 7) and its presence state."""

    __slots__ = ("jid", "full", "bare", "host", "username", "resource", "channel", "presence", "priority",
                 "is_available", "is_interested", "directed", "created", "extra", "is_closed",
                 "outbound_filter", "handled_count", "client_info", "waits_for_writes", "_writes")

    def __init__(self, jid: JID, channel: SessionChannel, created: float) -> None:
        assert jid.local is not None and jid.resource is not None
        self.jid = jid
        self.full = str(jid)                    # the full JID as written in 'from' (cached: hot path)
        self.bare = jid.bare
        self.host = jid.domain
        self.username = jid.local
        self.resource = jid.resource
        self.channel = channel
        self.presence: Element | None = None    # last available presence broadcast (RFC 6121 4.2)
        self.priority = 0
        self.is_available = False               # sent initial presence, not yet unavailable
        self.is_interested = False              # requested the roster (an "interested resource")
        self.directed: set[JID] = set()         # entities that got directed presence (4.6)
        self.created = created
        self.extra: dict[str, Any] = {}         # per-module state, keyed by module name
        self.is_closed = False
        # A filter that may hold back or drop stanzas for this client (client state indication);
        # it returns True when it took the stanza. None costs nothing on the delivery path.
        self.outbound_filter: Callable[[Element], bool] | None = None
        self.handled_count = 0                  # stanzas from the client fully processed (XEP-0198 'h')
        self.client_info: dict[str, str] = {}   # software name/version when known
        self._writes: list[Awaitable[Any]] = []  # storage writes caused by this client's stanzas
        # Stream management (XEP-0198) acknowledges this client's stanzas only once their
        # writes are durable; without it nobody waits for them, and they are not tracked.
        self.waits_for_writes = False

    def send(self, stanza: Element) -> None:
        """Write a stanza to this client (batched with others in the same event-loop turn)."""
        if not self.is_closed:
            if self.outbound_filter is not None and self.outbound_filter(stanza):
                return
            self.channel.send_stanza(stanza)

    def close(self, error: StreamError | None = None) -> None:
        self.channel.close(error)

    def track_write(self, write: Awaitable[Any]) -> None:
        """Remember a storage write caused by a stanza from this client, so that acknowledging
        the stanza (XEP-0198) can wait until it is durable. Nothing is kept for a session that
        does not acknowledge stanzas (`waits_for_writes`)."""
        if not self.waits_for_writes:
            return
        writes = self._writes
        writes.append(write)
        if len(writes) >= 64:      # nobody waited for a while: forget the ones already done
            self._writes = [w for w in writes if not (isinstance(w, asyncio.Future) and w.done())]

    async def writes_done(self) -> None:
        """Wait for the storage writes tracked so far (failures are reported where they happen)."""
        while self._writes:
            writes, self._writes = self._writes, []
            await asyncio.gather(*writes, return_exceptions=True)

    def __repr__(self) -> str:
        return f"<ClientSession {self.jid} from {self.channel.address}>"


class SessionManager:
    """Registry of live sessions: bare JID -> resource -> session."""

    def __init__(self) -> None:
        self._users: dict[JID, dict[str, ClientSession]] = {}
        self._count = 0

    def new_resource(self) -> str:
        return "stockade-" + token_hex(6)

    def register(self, session: ClientSession) -> ClientSession | None:
        """Add a session; returns the session it replaces (same full JID), which the caller ends
        with <conflict/> (RFC 6120 section 7.7.2.2, the "override" policy)."""
        resources = self._users.setdefault(session.bare, {})
        old = resources.get(session.resource)
        resources[session.resource] = session
        if old is None:
            self._count += 1
        return old

    def unregister(self, session: ClientSession) -> bool:
        """Remove the session if it is still the registered one for its full JID."""
        resources = self._users.get(session.bare)
        if not resources or resources.get(session.resource) is not session:
            return False
        del resources[session.resource]
        self._count -= 1
        if not resources:
            del self._users[session.bare]
        return True

    def get(self, full: JID) -> ClientSession | None:
        resources = self._users.get(full.bare)
        return resources.get(full.resource) if resources and full.resource is not None else None

    def of_user(self, bare: JID) -> list[ClientSession]:
        resources = self._users.get(bare)
        return list(resources.values()) if resources else []

    def count(self, bare: JID) -> int:
        """How many sessions the account has (no list made: the message path asks per message)."""
        resources = self._users.get(bare)
        return len(resources) if resources else 0

    def available(self, bare: JID) -> list[ClientSession]:
        """Sessions of the account that have sent available presence."""
        resources = self._users.get(bare)
        if not resources:
            return []
        if len(resources) == 1:                  # most accounts: one session, no comprehension
            (session,) = resources.values()
            return [session] if session.is_available else []
        return [s for s in resources.values() if s.is_available]

    def is_online(self, bare: JID) -> bool:
        return bare in self._users

    def __iter__(self) -> Iterator[ClientSession]:
        for resources in list(self._users.values()):
            yield from list(resources.values())

    def __len__(self) -> int:
        return self._count

    def users(self) -> list[JID]:
        return list(self._users)
