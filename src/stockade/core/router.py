"""Routing of stanzas by their `to` address: RFC 6120 section 10 and RFC 6121 section 8.

    local domain, no localpart   -> the server itself (IQ handlers on the host)
    local account, bare JID      -> RFC 6121 8.5.2: the account's resources by type and priority,
                                    offline storage, or an error
    local account, full JID      -> RFC 6121 8.5.3: that resource, else by type as for the bare JID
    no such local account        -> RFC 6121 8.5.1: <service-unavailable/> (never reveals whether
                                    the account exists)
    a component's domain         -> the component (XEP-0114)
    any other domain             -> federation; until then <remote-server-not-found/>

With several worker processes (core/partition.py), a stanza for an account that lives in another
worker, or for a service of worker 0, is forwarded there before any of the above (`_forwarded`);
that worker routes it as if it had been sent there.

Message routing is synchronous (the hot path); IQ and presence routing may await a handler and
then return an awaitable the caller waits on before processing the sender's next stanza, so the
order of a client's stanzas is kept (RFC 6120 section 10.1).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

from ..protocol.errors import StanzaError, error_reply
from ..protocol.jid import JID, try_jid
from ..protocol.subscription import SUBSCRIPTION_TYPES
from ..protocol.xml import Element
from .bus import HookBus
from .hooks import (HANDLED, MessageDelivered, MessageToLocal, MessageUndeliverable, PresenceToLocal,
                    StanzaToLocal)
from .verdict import Deny
from .iq import IqDispatcher
from .partition import SERVICE_WORKER, Partition
from .sessions import ClientSession, SessionManager

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class ComponentLink(Protocol):
    """A connected external component."""
    domain: str

    def send(self, stanza: Element) -> None: ...


class Accounts(Protocol):
    def exists_cached(self, host: str, username: str) -> bool: ...
    async def exists(self, host: str, username: str) -> bool: ...


class Router:
    def __init__(self, domains: set[str], sessions: SessionManager, bus: HookBus, iq: IqDispatcher,
                 accounts: Accounts) -> None:
        self.domains = domains
        self.sessions = sessions
        self.bus = bus
        self.iq = iq
        self.accounts = accounts
        self.components: dict[str, ComponentLink] = {}
        self.configured_components: set[str] = set()   # known component domains, connected or not
        # RFC 6121 8.5.3.1: may this sender send an IQ get/set to that session? (set by presence)
        self.may_query_full_jid: Callable[[JID, ClientSession], bool] = lambda sender, target: True
        # federation: set when s2s exists; until then remote domains are unreachable
        self.remote: Callable[[Element, JID], None] | None = None
        # Several worker processes (core/partition.py): stanzas for an account that lives in
        # another worker, or for a service worker 0 runs, are forwarded there. None: one process.
        self.partition: Partition | None = None

    def is_here(self, bare: JID) -> bool:
        """Whether a local account's sessions are in this process (always, with one worker)."""
        partition = self.partition
        return partition is None or partition.is_here(bare)

    def _forwarded(self, stanza: Element, to: JID, origin: ClientSession | None = None,
                   wait: bool = False) -> bool | Awaitable[None]:
        """Forward `stanza` to the worker that serves `to`, if that is not this one (False).
        A sender that acknowledges its stanzas (XEP-0198) gets its ack only once that worker
        has routed the stanza and stored what it caused (ClientSession.track_write). With
        `wait`, the result is an awaitable for the same, which the caller waits on."""
        partition = self.partition
        if partition is None:
            return False
        if to.domain in self.domains:
            if to.local is None:
                return False
            worker = partition.home(to.domain, to.local)
        elif to.domain in partition.service_domains:
            worker = SERVICE_WORKER
        else:
            return False
        if worker == partition.index:
            return False
        done = partition.forward(worker, stanza, wait or (origin is not None and origin.waits_for_writes))
        if done is not None and origin is not None:
            origin.track_write(done)
        return done if wait and done is not None else True

    # -- entry point ----------------------------------------------------------------------------
    def route(self, stanza: Element, origin: ClientSession | None = None) -> Awaitable[None] | None:
        """Route a stanza whose `from` is trusted. Returns an awaitable when work is pending."""
        to = stanza.attrs.get("to")
        to_jid = try_jid(to) if to else None
        if to and to_jid is None:
            self.bounce(stanza, StanzaError("jid-malformed", "the 'to' address is not a valid JID"))
            return None
        name = stanza.name
        if name == "message":
            return self.route_message(stanza, to_jid, origin)
        if name == "iq":
            return self.route_iq(stanza, to_jid, origin)
        if name == "presence":
            if to_jid is None:
                return None
            return self.route_presence(stanza, to_jid)
        return None

    # -- messages -------------------------------------------------------------------------------
    def route_message(self, stanza: Element, to: JID | None,
                      origin: ClientSession | None) -> Awaitable[None] | None:
        if to is None:
            if origin is None:
                return None
            to = origin.bare     # RFC 6120 10.3: no 'to' means the sender's own account
        if self.partition is not None and self._forwarded(stanza, to, origin):
            return None
        domain = to.domain
        if domain in self.domains:
            if to.local is None:
                self._message_to_host(stanza)
            elif self.accounts.exists_cached(domain, to.local):
                return self._message_to_account(stanza, to, origin)
            else:
                return self._message_to_unknown(stanza, to, origin)
        elif domain in self.components:
            self.components[domain].send(stanza)
        else:
            self._to_remote(stanza, to)
        return None

    async def _message_to_unknown(self, stanza: Element, to: JID, origin: ClientSession | None) -> None:
        # Not in the in-memory set: created since start by another process, or no such account.
        if await self.accounts.exists(to.domain, to.local or ""):
            pending = self._message_to_account(stanza, to, origin)
            if pending is not None:
                await pending
        elif stanza.attrs.get("type", "normal") not in ("error", "headline", "groupchat"):
            self.bounce(stanza, StanzaError("service-unavailable"))

    def _message_to_host(self, stanza: Element) -> None:
        if stanza.attrs.get("type") not in ("error", "headline", "groupchat"):
            self.bounce(stanza, StanzaError("service-unavailable", "this server does not take messages itself"))

    def message_to_local(self, stanza: Element, to: JID, origin: ClientSession | None) -> Awaitable[None] | None:
        if self.partition is not None and self._forwarded(stanza, to, origin):
            return None
        if not self.accounts.exists_cached(to.domain, to.local or ""):
            if stanza.attrs.get("type", "normal") not in ("error", "headline", "groupchat"):
                self.bounce(stanza, StanzaError("service-unavailable"))
            return None
        return self._message_to_account(stanza, to, origin)

    def _message_to_account(self, stanza: Element, to: JID, origin: ClientSession | None) -> Awaitable[None] | None:
        """message_to_local for an account known to exist (route_message has just asked)."""
        mtype = stanza.attrs.get("type", "normal")
        bus = self.bus
        if not self.may_reach(stanza, to):
            return None
        if bus.fire(MessageToLocal(stanza, to, origin)) is HANDLED:
            return None
        if to.resource is not None:
            session = self.sessions.get(to)
            if session is not None:                       # 8.5.3.1
                session.send(stanza)
                bus.fire(MessageDelivered(stanza, to, [session]))
                return None
            if mtype in ("headline", "error"):            # 8.5.3.2.1
                return None
            if mtype != "chat":
                self.bounce(stanza, StanzaError("service-unavailable", "that resource is not online"))
                return None
        return self._message_to_bare(stanza, to, mtype)

    def _message_to_bare(self, stanza: Element, to: JID, mtype: str) -> Awaitable[None] | None:
        targets = self.sessions.available(to.bare)
        if len(targets) == 1:                              # the usual case: no choice to make
            if targets[0].priority < 0:
                targets = []
        elif targets:
            targets = [s for s in targets if s.priority >= 0]
            if targets and mtype != "headline":
                top = max(s.priority for s in targets)
                targets = [s for s in targets if s.priority == top]
        if targets:                                        # 8.5.2.1
            if mtype == "error":
                return None
            if mtype == "groupchat":
                self.bounce(stanza, StanzaError("service-unavailable"))
                return None
            for session in targets:
                session.send(stanza)
            self.bus.fire(MessageDelivered(stanza, to, targets))
            return None
        if mtype in ("headline", "error"):                 # 8.5.2.2
            return None
        if mtype == "groupchat":
            self.bounce(stanza, StanzaError("service-unavailable"))
            return None
        return self._undeliverable(stanza, to)

    async def _undeliverable(self, stanza: Element, to: JID) -> None:
        if await self.bus.fire_async(MessageUndeliverable(stanza, to)) is not HANDLED:
            self.bounce(stanza, StanzaError("service-unavailable", "the recipient cannot take messages now"))

    def may_reach(self, stanza: Element, to: JID) -> bool:
        """Ask the StanzaToLocal handlers (blocking, privacy); bounce or drop when they say no."""
        if not self.bus.has(StanzaToLocal):
            return True
        sender = try_jid(stanza.attrs.get("from"))
        if sender is None or sender.bare == to.bare:
            return True
        verdict = self.bus.fire(StanzaToLocal(stanza, to, sender))
        if verdict is None:
            return True
        if isinstance(verdict, Deny):
            self.bounce(stanza, verdict.error())
        return False

    # -- IQ -------------------------------------------------------------------------------------
    def route_iq(self, stanza: Element, to: JID | None, origin: ClientSession | None) -> Awaitable[None] | None:
        itype = stanza.attrs.get("type")
        if to is None:
            if origin is None:
                return None
            return self.iq.dispatch(stanza, origin.bare, origin, self)
        if self.partition is not None and self._forwarded(stanza, to, origin):
            return None
        domain = to.domain
        if domain in self.domains:
            if to.resource is None:
                if to.local is not None and not self.accounts.exists_cached(domain, to.local):
                    return self._iq_to_unknown(stanza, to, origin)
                if to.local is not None and self.bus.has(StanzaToLocal) and not self.may_reach(stanza, to):
                    return None
                return self.iq.dispatch(stanza, to, origin, self)
            session = self.sessions.get(to)
            if session is not None:
                if self.bus.has(StanzaToLocal) and not self.may_reach(stanza, to):
                    return None
                if itype in ("get", "set"):
                    sender = try_jid(stanza.attrs.get("from"))
                    if sender is None or not self.may_query_full_jid(sender, session):
                        # Delivering would reveal that the resource is online.
                        self.bounce(stanza, StanzaError("service-unavailable"))
                        return None
                session.send(stanza)
            elif to.local is None:
                return self.iq.dispatch(stanza, to, origin, self)
            elif itype in ("get", "set"):
                self.bounce(stanza, StanzaError("service-unavailable", "that resource is not online"))
            return None
        if domain in self.components:
            self.components[domain].send(stanza)
            return None
        self._to_remote(stanza, to)
        return None

    async def _iq_to_unknown(self, stanza: Element, to: JID, origin: ClientSession | None) -> None:
        if await self.accounts.exists(to.domain, to.local or ""):
            pending = self.iq.dispatch(stanza, to, origin, self)
            if pending is not None:
                await pending
        elif stanza.attrs.get("type") in ("get", "set"):
            self.bounce(stanza, StanzaError("service-unavailable"))

    # -- presence -------------------------------------------------------------------------------
    def route_presence(self, stanza: Element, to: JID) -> Awaitable[None] | None:
        """Send presence to `to` (the presence module decided it should go there)."""
        if self.partition is not None:
            # A subscription change writes the contact's roster: as in one process, the
            # sender's stanza is done (and acknowledged, XEP-0198) once that is stored.
            forwarded = self._forwarded(stanza, to, wait=stanza.attrs.get("type") in SUBSCRIPTION_TYPES)
            if forwarded is not False:
                return None if forwarded is True else forwarded
        domain = to.domain
        if domain in self.domains:
            if to.local is None:
                return None          # presence to the server itself: nothing to do
            from_jid = try_jid(stanza.attrs.get("from"))
            if from_jid is None:
                return None
            if self.bus.has(StanzaToLocal) and not self.may_reach(stanza, to):
                return None
            return self.bus.fire_async(PresenceToLocal(stanza, from_jid, to))
        if domain in self.components:
            self.components[domain].send(stanza)
            return None
        if stanza.attrs.get("type") not in ("error", "unavailable", "probe"):
            self._to_remote(stanza, to)
        return None

    # -- helpers --------------------------------------------------------------------------------
    def _to_remote(self, stanza: Element, to: JID) -> None:
        if to.domain in self.configured_components:
            self.bounce(stanza, StanzaError("service-unavailable", f"the service {to.domain} is not connected"))
        elif self.remote is not None:
            self.remote(stanza, to)
        else:
            self.bounce(stanza, StanzaError("remote-server-not-found",
                                            f"this server does not federate with {to.domain}"))

    def bounce(self, stanza: Element, error: StanzaError) -> None:
        """Answer `stanza` with an error to its sender; errors are never answered with errors."""
        if stanza.attrs.get("type") == "error" or not stanza.attrs.get("from"):
            return
        # A stanza without 'to' was addressed to the sender's own account: the answer carries no
        # 'from' (RFC 6120 10.3.3), which error_reply already leaves out.
        self.route(error_reply(stanza, error))

    def deliver_to_session(self, session: ClientSession, stanza: Element) -> None:
        session.send(stanza)
