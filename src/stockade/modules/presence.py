"""RFC 6121 sections 3 and 4: presence broadcast, probes, directed presence and subscriptions.

Outbound (from a local client):
- no 'to': available presence is broadcast to contacts with a 'from' or 'both' subscription and to
  the user's own available resources; the first one (initial presence) also fetches the
  contacts' presence and releases offline messages and stored subscription requests.
  Unavailable goes to the same people plus everyone that got directed presence (4.6.3).
- subscription stanzas go through the tables of protocol/subscription.py, stamped with the
  user's bare JID (RFC 6120 8.1.2.1).
- other presence with 'to' is directed presence (4.6), remembered for the unavailable broadcast.

Inbound (to a local account): subscription stanzas through the inbound tables; probes answered
only for subscribers (4.3.2); availability delivered to the addressed resources. Nothing about a
user's presence reaches anyone who is not subscribed to it or was not sent it directly.
"""

from __future__ import annotations

from typing import Iterable

from ..core.hooks import (HANDLED, PresenceFromClient, PresenceToLocal, SessionAvailable, SessionClosed)
from ..core.module_api import ModuleAPI
from ..core.sessions import ClientSession
from ..protocol import ns
from ..protocol.jid import JID
from ..protocol.subscription import (SUBSCRIPTION_TYPES, PresenceAction, SubState, inbound, outbound,
                                     removal_stanzas)
from ..protocol.xml import Element, parse
from .roster import PresenceHooks, RosterService


def _presence(frm: JID, to: JID, type_: str | None = None) -> Element:
    attrs = {"from": str(frm), "to": str(to)}
    if type_:
        attrs["type"] = type_
    return Element("presence", ns.CLIENT, attrs)


def _addressed(stanza: Element, to: JID) -> Element:
    """A copy of a broadcast presence addressed to `to`."""
    copy = stanza.copy()
    copy.attrs["to"] = str(to)
    return copy


def parse_priority(stanza: Element) -> int:
    text = stanza.find_text("priority", ns.CLIENT)
    if text is None:
        return 0
    try:
        return max(-128, min(127, int(text.strip())))
    except ValueError:
        return 0


class Presence(PresenceHooks):
    def __init__(self, module: ModuleAPI, roster: RosterService) -> None:
        self.module = module
        self.roster = roster
        self.router = module.router
        self.sessions = module.sessions

    # -- from local clients ---------------------------------------------------------------------
    async def from_client(self, event: PresenceFromClient) -> object:
        session, stanza, to = event.session, event.stanza, event.to
        ptype = stanza.attrs.get("type")
        if to is None:
            if ptype is None:
                await self.available(session, stanza)
            elif ptype == "unavailable":
                await self.unavailable(session, stanza, echo=True)
            return HANDLED
        if ptype in SUBSCRIPTION_TYPES:
            await self.outbound_subscription(session.bare, to.bare, ptype, stanza)
        elif ptype is None or ptype == "unavailable":
            await self.directed(session, stanza, to, ptype)
        elif ptype == "probe":
            stanza.attrs["from"] = str(session.bare)
            await self._route(stanza, to)
        else:
            await self._route(stanza, to)
        return HANDLED

    async def available(self, session: ClientSession, stanza: Element) -> None:
        is_initial = not session.is_available
        stanza.attrs.pop("to", None)
        session.presence = stanza
        session.priority = parse_priority(stanza)
        session.is_available = True
        roster = await self.roster.get(session.bare)
        local = self.module.ctx.domains
        for jid, item in list(roster.items.items()):
            if item.subscription in ("from", "both") and jid != session.bare:
                if jid.domain in local and not self.sessions.is_online(jid) and self.router.is_here(jid):
                    continue     # nobody there to tell
                await self._route(_addressed(stanza, jid), jid)
        for other in self.sessions.available(session.bare):
            other.send(_addressed(stanza, other.jid))
            if is_initial and other is not session and other.presence is not None:
                session.send(_addressed(other.presence, session.jid))
        if not is_initial:
            return
        for jid, item in list(roster.items.items()):
            if item.subscription in ("to", "both") and jid != session.bare:
                await self._probe(session, jid)
        for stored in await self.roster.stored_requests(session.bare):
            session.send(parse(stored))
        await self.module.ctx.bus.fire_async(SessionAvailable(session))

    async def _probe(self, session: ClientSession, contact: JID) -> None:
        if contact.domain in self.module.ctx.domains and self.router.is_here(contact):
            # A local contact's presence is known here: no probe stanza needed (RFC 6121 4.3).
            # Its roster is in memory whenever it is online; offline contacts have nothing to send.
            # (A contact in another worker process gets a probe, as a remote one does.)
            if not self.sessions.is_online(contact):
                return
            if not await self.roster.shares_presence_with(contact, session.bare):
                return
            for other in self.sessions.available(contact):
                if other.presence is not None:
                    # Same checks as any delivery: a block in either direction stops it.
                    if self.router.may_reach(_presence(session.bare, contact, "probe"), contact) and \
                            self.router.may_reach(_addressed(other.presence, session.jid), session.jid):
                        session.send(_addressed(other.presence, session.jid))
            return
        await self._route(_presence(session.bare, contact, "probe"), contact)

    async def unavailable(self, session: ClientSession, stanza: Element | None, echo: bool) -> None:
        if stanza is None:
            stanza = _presence(session.jid, session.bare, "unavailable")
        stanza.attrs.pop("to", None)
        stanza.attrs["from"] = str(session.jid)
        was_available = session.is_available
        session.is_available = False
        session.presence = None
        directed, session.directed = session.directed, set()
        sent: set[JID] = set()
        if was_available:
            roster = self.roster.cached(session.bare) or await self.roster.get(session.bare)
            for jid, item in list(roster.items.items()):
                if item.subscription in ("from", "both") and jid != session.bare:
                    sent.add(jid)
                    await self._route(_addressed(stanza, jid), jid)
            for other in self.sessions.available(session.bare):
                other.send(_addressed(stanza, other.jid))
            if echo:
                session.send(_addressed(stanza, session.jid))
        for jid in directed:
            if jid not in sent:
                await self._route(_addressed(stanza, jid), jid)

    async def directed(self, session: ClientSession, stanza: Element, to: JID, ptype: str | None) -> None:
        await self._route(stanza, to)
        if ptype == "unavailable":
            session.directed.discard(to)
            return
        roster = self.roster.cached(session.bare)
        item = roster.items.get(to.bare) if roster else None
        is_subscriber = item is not None and item.subscription in ("from", "both")
        if not (is_subscriber and session.is_available):
            session.directed.add(to)     # 4.6.3: gets our unavailable presence later

    async def outbound_subscription(self, owner: JID, contact: JID, ptype: str, stanza: Element | None) -> None:
        async with self.roster.lock(owner):
            state = await self.roster.state(owner, contact)
            outcome = outbound(state, ptype)
            await self.roster.apply_state(owner, contact, outcome.new_state, push=outcome.push)
        if outcome.presence is PresenceAction.UNAVAILABLE:
            await self._send_presence_to(owner, contact, available=False)
        if outcome.deliver:
            out = _presence(owner, contact, ptype)
            if stanza is not None:
                out.children = [c.copy() if isinstance(c, Element) else c for c in stanza.children]
                if "id" in stanza.attrs:
                    out.attrs["id"] = stanza.attrs["id"]
            await self._route(out, contact)
        if outcome.presence is PresenceAction.CURRENT:
            await self._send_presence_to(owner, contact, available=True)

    async def removed_contact(self, owner: JID, contact: JID, old_state: SubState) -> None:
        """The user removed the contact from the roster (RFC 6121 2.5.2)."""
        for ptype in removal_stanzas(old_state):
            if ptype == "unsubscribed" and old_state.has_from:
                await self._send_presence_to(owner, contact, available=False)
            await self._route(_presence(owner, contact, ptype), contact)

    async def _send_presence_to(self, owner: JID, contact: JID, available: bool) -> None:
        for session in self.sessions.available(owner):
            if available and session.presence is not None:
                await self._route(_addressed(session.presence, contact), contact)
            elif not available:
                await self._route(_presence(session.jid, contact, "unavailable"), contact)

    async def _route(self, stanza: Element, to: JID) -> None:
        pending = self.router.route_presence(stanza, to)
        if pending is not None:
            await pending

    # -- to local accounts ----------------------------------------------------------------------
    async def to_local(self, event: PresenceToLocal) -> object:
        stanza, sender, to = event.stanza, event.from_jid, event.to
        if not await self.module.accounts.exists(to.domain, to.local or ""):
            return HANDLED                        # 8.5.1: silently ignored
        ptype = stanza.attrs.get("type")
        if ptype in SUBSCRIPTION_TYPES:
            if to.resource is not None and ptype != "subscribe":
                return HANDLED                    # 8.5.3.2.1: ignored
            await self.inbound_subscription(to.bare, sender.bare, ptype, stanza)
        elif ptype == "probe":
            await self.answer_probe(to, sender, stanza)
        elif to.resource is not None:
            session = self.sessions.get(to)
            if session is not None:
                session.send(stanza)
        else:
            for session in self.sessions.available(to):
                session.send(stanza)
        return HANDLED

    async def inbound_subscription(self, owner: JID, contact: JID, ptype: str, stanza: Element) -> None:
        stanza.attrs["from"] = str(contact)
        stanza.attrs["to"] = str(owner)
        async with self.roster.lock(owner):
            state = await self.roster.state(owner, contact)
            outcome = inbound(state, ptype)
            if ptype == "subscribe" and outcome.deliver:
                await self.roster.store_request(owner, contact, stanza)
            await self.roster.apply_state(owner, contact, outcome.new_state, push=outcome.push)
        if outcome.deliver:
            for session in self.sessions.available(owner):
                session.send(stanza)
        if outcome.reply is not None:
            await self._route(_presence(owner, contact, outcome.reply), contact)
        if outcome.presence is PresenceAction.CURRENT:
            await self._send_presence_to(owner, contact, available=True)
        elif outcome.presence is PresenceAction.UNAVAILABLE:
            await self._send_presence_to(owner, contact, available=False)

    async def answer_probe(self, owner_jid: JID, prober: JID, stanza: Element) -> None:
        owner = owner_jid.bare
        if await self.roster.shares_presence_with(owner, prober.bare):
            sessions = self.sessions.available(owner)
            if owner_jid.resource is not None:
                sessions = [s for s in sessions if s.jid == owner_jid]
            sent = False
            for session in sessions:
                if session.presence is not None:
                    await self._route(_addressed(session.presence, prober), prober)
                    sent = True
            if not sent:
                reply = _presence(owner, prober, "unavailable")
                if "id" in stanza.attrs:
                    reply.attrs["id"] = stanza.attrs["id"]
                await self._route(reply, prober)
            return
        for session in self._directed_to(owner, prober):
            await self._route(_presence(session.jid, prober), prober)     # 4.6.6: mere presence
            return
        await self._route(_presence(owner, prober, "unsubscribed"), prober)

    def _directed_to(self, owner: JID, prober: JID) -> Iterable[ClientSession]:
        for session in self.sessions.available(owner):
            if prober in session.directed or prober.bare in session.directed:
                yield session

    # -- session end ----------------------------------------------------------------------------
    async def session_closed(self, event: SessionClosed) -> None:
        session = event.session
        if session.is_available or session.directed:
            await self.unavailable(session, None, echo=False)

    def may_query_full_jid(self, sender: JID, target: ClientSession) -> bool:
        """RFC 6121 8.5.3.1: IQs to a full JID only from entities that may see its presence."""
        if sender.local is None or sender.bare == target.bare:
            return True
        roster = self.roster.cached(target.bare)
        if roster is not None:
            item = roster.items.get(sender.bare)
            if item is not None and item.subscription in ("from", "both"):
                return True
        if sender in target.directed or sender.bare in target.directed:
            return True
        # A service running in this server (a MUC room) forwards IQs between its occupants: the
        # sender is an occupant JID of a room the target joined (sent directed presence to). The
        # same for an external component, which with several workers is connected to worker 0.
        router = self.router
        if sender.domain in router.components or sender.domain in router.configured_components:
            return any(j.bare == sender.bare for j in target.directed)
        return False


def setup(module: ModuleAPI) -> None:
    roster = module.service(RosterService)
    presence = Presence(module, roster)
    module.provide(presence)
    module.ctx.services[PresenceHooks] = presence
    module.router.may_query_full_jid = presence.may_query_full_jid
    module.on(PresenceFromClient, presence.from_client)
    module.on(PresenceToLocal, presence.to_local)
    module.on(SessionClosed, presence.session_closed)
