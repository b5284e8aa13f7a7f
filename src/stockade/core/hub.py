"""Client sessions as the network layer sees them: bind, stanzas in, close.

Every stanza a client sends passes `ClientHub.handle_stanza`, which
1. stamps `from` with the session's full JID, overriding whatever the client wrote
   (RFC 6120 section 8.1.2.1): a client can never speak as someone else;
2. checks the addressing and the IQ/presence syntax (RFC 6120 section 8), answering bad stanzas
   with a stanza error;
3. asks the policy hooks (StanzaFromClient) for a verdict; any verdict but Allow is reported
   (VerdictGiven) and Deny answers the sender, Redact swaps the stanza, Quarantine holds it;
4. records the stanza in the compliance journal when it is on (a journal that cannot record
   refuses the stanza rather than let it pass unrecorded);
5. hands message and IQ stanzas to the router, presence to the presence module.
"""

from __future__ import annotations

import logging
from typing import Awaitable

from ..protocol.errors import StanzaError, StreamError, error_reply
from ..protocol.jid import JID, InvalidJid, normalise_resource, try_jid
from ..protocol.xml import Element
from .hooks import (HANDLED, MessageFromLocal, PresenceFromClient, SessionBound, SessionClosed,
                    SessionInterrupted, StanzaFromClient, VerdictGiven)
from .module_api import ServerContext
from .sessions import ClientSession, SessionChannel
from .verdict import Allow, Deny, Quarantine, Redact

log = logging.getLogger(__name__)

PRESENCE_TYPES = frozenset({"unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error"})


class ClientHub:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.forged_from_count = 0

    # -- binding --------------------------------------------------------------------------------
    async def bind(self, host: str, username: str, resource: str | None,
                   channel: SessionChannel) -> ClientSession:
        """Register a session for the resource (server-generated when None). Raises StanzaError."""
        sessions = self.ctx.sessions
        if resource is None:
            resource = sessions.new_resource()
        try:
            resource = normalise_resource(resource)
        except InvalidJid as exc:
            raise StanzaError("bad-request", f"that resource is not allowed: {exc}") from None
        jid = JID(username, host, resource)
        session = ClientSession(jid, channel, self.ctx.clock.time())
        old = sessions.register(session)
        if old is not None:
            # RFC 6120 7.7.2.2: the newer login wins; the old stream ends with <conflict/>.
            old.is_closed = True
            old.close(StreamError("conflict", "you logged in from somewhere else with the same resource"))
            await self.ctx.bus.fire_async(SessionClosed(old, "replaced"))
        await self.ctx.bus.fire_async(SessionBound(session))
        return session

    async def session_lost(self, session: ClientSession, reason: str) -> None:
        """The connection dropped without a closed stream: a module may keep the session for
        resumption (XEP-0198); otherwise it ends now."""
        if not session.is_closed and await self.ctx.bus.fire_async(SessionInterrupted(session, reason)) is HANDLED:
            return
        await self.close_session(session, reason)

    async def close_session(self, session: ClientSession, reason: str) -> None:
        """The session's stream ended: unregister it and let modules clean up (unavailable presence)."""
        if self.ctx.sessions.unregister(session):
            session.is_closed = True
            await self.ctx.bus.fire_async(SessionClosed(session, reason))
        session.is_closed = True

    # -- stanzas --------------------------------------------------------------------------------
    def handle_stanza(self, session: ClientSession, stanza: Element) -> Awaitable[None] | None:
        attrs = stanza.attrs
        claimed = attrs.get("from")
        full = session.full
        if claimed is not None and claimed != full:
            claimed_jid = try_jid(claimed)
            if claimed_jid is None or claimed_jid.bare != session.bare:
                self.forged_from_count += 1
                log.info("%s wrote from=%r; replaced with its own address", full, claimed)
        attrs["from"] = full
        name = stanza.name
        to = attrs.get("to")
        to_jid: JID | None = None
        if to is not None:
            to_jid = try_jid(to)
            if to_jid is None:
                return self._reject(session, stanza, StanzaError("jid-malformed", f"{to!r} is not a valid address"))
        if name == "iq":
            itype = attrs.get("type")
            if itype not in ("get", "set", "result", "error"):
                return self._reject(session, stanza, StanzaError("bad-request", "an IQ needs a type of get, set, result or error"))
            if not attrs.get("id"):
                return self._reject(session, stanza, StanzaError("bad-request", "an IQ needs an id"))
        elif name == "presence":
            ptype = attrs.get("type")
            if ptype is not None and ptype not in PRESENCE_TYPES:
                return self._reject(session, stanza, StanzaError("bad-request", f"unknown presence type {ptype!r}"))

        ctx = self.ctx
        bus = ctx.bus
        if bus.has(StanzaFromClient):
            verdict = bus.fire(StanzaFromClient(session, stanza))
            if verdict is not None and not isinstance(verdict, Allow):
                # Every verdict but Allow is reported (audit log, compliance journal) first.
                bus.fire(VerdictGiven(session.host, full, verdict, stanza, session))
                if isinstance(verdict, Deny):
                    return self._reject(session, stanza, verdict.error())
                if isinstance(verdict, Redact):
                    stanza = verdict.stanza
                elif isinstance(verdict, Quarantine):
                    return None
        # The compliance journal records what will be delivered, before delivery (DESIGN.md).
        journal = ctx.journal
        if journal is not None:
            refusal = journal.record_stanza(session, stanza)
            if refusal is not None:
                return self._reject(session, stanza, refusal)

        if name == "presence":
            return bus.fire_async(PresenceFromClient(session, stanza, to_jid))
        if name == "message":
            if bus.has(MessageFromLocal) and bus.fire(MessageFromLocal(stanza, session)) is HANDLED:
                return None
            return ctx.router.route_message(stanza, to_jid, session)
        return ctx.router.route_iq(stanza, to_jid, session)

    def _reject(self, session: ClientSession, stanza: Element, error: StanzaError) -> None:
        if stanza.attrs.get("type") == "error":
            return None
        reply = error_reply(stanza, error)
        reply.attrs["to"] = str(session.jid)
        reply.attrs.pop("from", None)
        if stanza.attrs.get("to"):
            reply.attrs["from"] = stanza.attrs["to"]
        session.send(reply)
        return None
