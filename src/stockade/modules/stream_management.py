"""XEP-0198: Stream Management: acknowledgements and resumption.

A client that enables stream management counts what it receives and tells the server (<a h/>);
the server keeps every stanza it sent until the client has acknowledged it. When the connection
drops, a resumable session stays registered ("hibernating") for `resume_timeout` seconds: stanzas
for it are queued, and a client that reconnects and sends <resume previd h/> gets the unacknowledged
ones again. When the session finally ends, its unacknowledged messages are routed again (to
another resource or to offline storage) or bounced with an error: never dropped.

The server's own count ('h' in <a/> and <resumed/>) includes a stanza only once the server has
finished handling it, storage writes included, so an acknowledged stanza is durable.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..config.options import option
from ..core.hooks import HANDLED, MessageHeld, SessionClosed, SessionInterrupted
from ..core.module_api import ModuleAPI
from ..core.sessions import ClientSession
from ..protocol import ns
from ..protocol.errors import StanzaError, StreamError, error_reply
from ..protocol.xml import Element

NS = "urn:xmpp:sm:3"
KEY = "sm"
MOD = 1 << 32       # 'h' is an unsigned 32-bit counter that wraps


@dataclass(frozen=True)
class Options:
    resume_timeout: float = option(300.0, help="Seconds a dropped session with stream management waits to be resumed before it ends.", min=0.0, max=86400.0)
    max_unacked: int = option(10_000, help="Stanzas kept for a client that does not acknowledge them; more ends its session.", min=10, max=1_000_000)
    request_every: int = option(5, help="Ask the client for an acknowledgement after this many unacknowledged stanzas.", min=1, max=1000)


COPY_NAMESPACES = ("urn:xmpp:mam:2", "urn:xmpp:carbons:2", "http://jabber.org/protocol/pubsub#event")


def is_copy(stanza: Element) -> bool:
    """Messages that only carry a copy of something kept elsewhere (archive query results,
    carbons, PEP notifications): not worth storing offline."""
    return any(isinstance(c, Element) and c.xmlns in COPY_NAMESPACES for c in stanza.children)


class SmState:
    """Stream management state of one session."""

    def __init__(self, session: ClientSession, resumable: bool, in_base: int) -> None:
        self.session = session
        self.id = secrets.token_urlsafe(16) if resumable else ""
        self.in_base = in_base                   # session.handled_count when enabled
        self.unacked: deque[Element] = deque()   # sent, not yet acknowledged, oldest first
        self.out_count = 0                       # stanzas sent since enable (mod 2^32)
        self.request_pending = False
        self.hibernating: asyncio.TimerHandle | None = None

    @property
    def in_count(self) -> int:
        return (self.session.handled_count - self.in_base) % MOD

    def acknowledge(self, h: int) -> bool:
        """Drop what the client has acknowledged; False when h claims more than was sent."""
        acked = (self.out_count - len(self.unacked)) % MOD
        newly = (h - acked) % MOD
        if newly > len(self.unacked):
            return False
        for _ in range(newly):
            self.unacked.popleft()
        self.request_pending = False
        return True


class SmChannel:
    """Wraps a session's channel: counts and keeps outgoing stanzas, asks for acknowledgements.
    While hibernating (`inner` is None) stanzas are only kept."""

    def __init__(self, state: SmState, inner: Any, module: StreamManagement) -> None:
        self.state = state
        self.inner = inner
        self.module = module

    @property
    def connection(self) -> Any:
        return self.inner.connection if self.inner is not None else None

    @property
    def address(self) -> str:
        return self.inner.address if self.inner is not None else "(hibernating)"

    @property
    def is_secure(self) -> bool:
        return self.inner.is_secure if self.inner is not None else True

    def send_stanza(self, stanza: Element) -> None:
        state = self.state
        state.unacked.append(stanza)
        state.out_count = (state.out_count + 1) % MOD
        if len(state.unacked) > self.module.max_unacked:
            self.close(StreamError("policy-violation", "too many unacknowledged stanzas"))
            return
        if self.inner is not None:
            self.inner.send_stanza(stanza)
            if not state.request_pending and len(state.unacked) >= self.module.request_every:
                state.request_pending = True
                self.inner.send_element(Element("r", NS))
        elif stanza.name == "message":
            self.module.module.ctx.bus.fire(MessageHeld(stanza, state.session.bare, "hibernating"))

    def send_bytes(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.send_bytes(data)

    def close(self, error: StreamError | None = None) -> None:
        if self.inner is not None:
            self.inner.close(error)
        else:
            self.module.end_hibernation(self.state, "closed while hibernating")


class StreamManagement:
    def __init__(self, module: ModuleAPI) -> None:
        self.module = module
        self.resume_timeout = module.options.resume_timeout
        self.max_unacked = module.options.max_unacked
        self.request_every = module.options.request_every
        self.resumable: dict[str, SmState] = {}

    # -- nonzas ---------------------------------------------------------------------------------
    def handle(self, conn: Any, element: Element) -> Any:
        name = element.name
        session: ClientSession | None = conn.session
        if name == "resume":
            return self.resume(conn, element)
        if session is None:
            conn.send_element(self._failed("unexpected-request"))
            return True
        state: SmState | None = session.extra.get(KEY)
        if name == "enable":
            if state is not None:
                conn.send_element(self._failed("unexpected-request"))
                return True
            return self.enable(conn, session, element)
        if state is None:
            return name in ("r", "a") and self._not_enabled(conn)
        if name == "r":
            return self._answer_request(conn, session, state)
        if name == "a":
            try:
                h = int(element.get("h", ""))
            except ValueError:
                h = -1
            if not 0 <= h < MOD or not state.acknowledge(h):
                conn.close(StreamError("undefined-condition",
                                       f"handled-count-too-high: acknowledged {h}, sent {state.out_count}"))
            return True
        return False

    def _not_enabled(self, conn: Any) -> bool:
        conn.send_element(self._failed("unexpected-request"))
        return True

    async def _answer_request(self, conn: Any, session: ClientSession, state: SmState) -> bool:
        await session.writes_done()         # acknowledged means durable
        conn.send_element(Element("a", NS, {"h": str(state.in_count)}))
        return True

    def enable(self, conn: Any, session: ClientSession, element: Element) -> bool:
        resume = element.get("resume") in ("true", "1") and self.resume_timeout > 0
        state = SmState(session, resume, session.handled_count)
        session.extra[KEY] = state
        session.waits_for_writes = True
        session.channel = SmChannel(state, session.channel, self)
        attrs = {}
        if resume:
            self.resumable[state.id] = state
            attrs = {"id": state.id, "resume": "true", "max": str(int(self.resume_timeout))}
        conn.send_element(Element("enabled", NS, attrs))
        return True

    def resume(self, conn: Any, element: Element) -> bool:
        identity = conn.authenticated
        state = self.resumable.get(element.get("previd", ""))
        if identity is None or conn.session is not None:
            conn.send_element(self._failed("unexpected-request"))
            return True
        if state is None or (state.session.host, state.session.username) != identity:
            conn.send_element(self._failed("item-not-found", "no session to resume with that id"))
            return True
        try:
            h = int(element.get("h", ""))
        except ValueError:
            h = -1
        if not 0 <= h < MOD or not state.acknowledge(h):
            conn.send_element(self._failed("bad-request", "the acknowledged count is not valid"))
            return True
        session = state.session
        old = session.channel
        if state.hibernating is not None:
            state.hibernating.cancel()
            state.hibernating = None
        elif isinstance(old, SmChannel) and old.inner is not None:
            # The old connection is still up (the client noticed the drop before we did).
            old_conn = old.inner
            old.inner = None
            old_conn.session = None
            old_conn.close(StreamError("conflict", "the session was resumed on another connection"))
        conn.adopt(session)
        session.channel = SmChannel(state, conn, self)
        conn.send_element(Element("resumed", NS, {"h": str(state.in_count), "previd": state.id}))
        for stanza in list(state.unacked):
            conn.send_stanza(stanza)
        if state.unacked:
            state.request_pending = True
            conn.send_element(Element("r", NS))
        self.module.log.info("%s resumed its session with %d stanzas to resend", session.jid, len(state.unacked))
        return True

    @staticmethod
    def _failed(condition: str, text: str = "") -> Element:
        failed = Element("failed", NS)
        failed.add(condition, ns.STANZA_ERRORS)
        if text:
            failed.add("text", ns.STANZA_ERRORS, {"xml:lang": "en"}, text)
        return failed

    # -- connection loss and the end of a session -----------------------------------------------
    async def interrupted(self, event: SessionInterrupted) -> object:
        session = event.session
        state: SmState | None = session.extra.get(KEY)
        if state is None or not state.id:
            return None
        channel = session.channel
        if isinstance(channel, SmChannel):
            channel.inner = None
        loop = asyncio.get_running_loop()
        state.hibernating = loop.call_later(self.resume_timeout, self.end_hibernation, state, "not resumed in time")
        self.module.log.info("%s is hibernating for %.0f s, waiting to be resumed", session.jid, self.resume_timeout)
        return HANDLED

    def end_hibernation(self, state: SmState, reason: str) -> None:
        state.hibernating = None
        self.resumable.pop(state.id, None)
        hub = self.module.ctx.hub
        asyncio.ensure_future(hub.close_session(state.session, reason))

    async def closed(self, event: SessionClosed) -> None:
        """Route again what the client never acknowledged (XEP-0198 section 4)."""
        state: SmState | None = event.session.extra.pop(KEY, None)
        if state is None:
            return
        self.resumable.pop(state.id, None)
        if state.hibernating is not None:
            state.hibernating.cancel()
        unacked, state.unacked = list(state.unacked), deque()
        router = self.module.router
        for stanza in unacked:
            self._reroute(router, event.session, stanza)

    def _reroute(self, router: Any, session: ClientSession, stanza: Element) -> None:
        stype = stanza.attrs.get("type")
        if stanza.name == "message" and is_copy(stanza):
            return          # archive results and carbons: the originals are kept elsewhere
        if stanza.name == "message" and stype in (None, "normal", "chat"):
            copy = stanza.copy()
            if copy.find("delay", ns.DELAY) is None:
                stamp = datetime.fromtimestamp(self.module.clock.time(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                copy.add("delay", ns.DELAY, {"from": session.host, "stamp": stamp})
            copy.attrs["to"] = str(session.bare)       # another resource, or offline storage
            pending = router.message_to_local(copy, session.bare, None)
            if pending is not None:
                asyncio.ensure_future(pending)
        elif stanza.name == "iq" and stype in ("get", "set"):
            router.route(error_reply(stanza, StanzaError("recipient-unavailable", "the recipient went away")))
        # presence, headlines and errors are not worth sending again


def setup(module: ModuleAPI) -> None:
    sm = StreamManagement(module)
    module.provide(sm)
    module.add_stream_feature(Element("sm", NS))
    module.on_nonza(NS, sm.handle)
    module.on(SessionInterrupted, sm.interrupted)
    module.on(SessionClosed, sm.closed, priority=100)
