"""The pump between a client socket and its protocol stream (asyncio Protocol, no feature logic).

Each connection owns one `ClientStream` (protocol/stream.py). Bytes in go to the stream; the
events it returns are acted on in order. When acting needs to wait (a credential lookup, a bind, an
IQ handler), the remaining events and any newer input wait behind it, so a client's stanzas are
processed in the order sent (RFC 6120 section 10.1). Output is batched: writes made during one
event-loop turn go to the socket as one `transport.write()` (see `Flusher`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..protocol.errors import StanzaError, StreamError
from ..protocol.stream import (BindRequest, ClientStream, NonzaReceived, SaslStep, StanzaReceived,
                               StartTls, StreamClosed, StreamOptions)
from ..protocol.xml import Element
from ..core.sessions import ClientSession

if TYPE_CHECKING:
    from ..core.auth import Authenticator
    from ..core.hub import ClientHub

log = logging.getLogger(__name__)

CLOSE_WAIT = 2.0     # seconds to wait for the peer to close after we closed the stream


class Flusher:
    """Connections with pending output are written once per event-loop turn: one syscall and one
    TLS record for everything queued, instead of one per stanza."""

    def __init__(self) -> None:
        self._dirty: list[C2SConnection] = []
        self._scheduled = False

    def mark(self, conn: C2SConnection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


class C2SContext:
    """What every client connection of a listener shares."""

    def __init__(self, *, hub: ClientHub, auth: Authenticator, stream_options: Callable[[bool], StreamOptions],
                 tls_context: ssl.SSLContext | None, negotiation_timeout: float,
                 max_per_address: int, max_write_buffer: int,
                 nonza_handler: Callable[[ClientSession, Element], Awaitable[bool] | bool] | None = None) -> None:
        self.hub = hub
        self.auth = auth
        self.stream_options = stream_options
        self.tls_context = tls_context
        self.negotiation_timeout = negotiation_timeout
        self.max_per_address = max_per_address
        self.max_write_buffer = max_write_buffer
        self.nonza_handler = nonza_handler
        self.flusher = Flusher()
        self.per_address: dict[str, int] = {}
        self.connections: set[C2SConnection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run work for a connection in the background, tracked so that shutdown can wait for it."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


class C2SConnection(asyncio.Protocol):
    """One client connection: STARTTLS port (`direct_tls=False`) or direct TLS port."""

    def __init__(self, ctx: C2SContext, direct_tls: bool) -> None:
        self.ctx = ctx
        self.direct_tls = direct_tls
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self.is_secure = direct_tls
        self.stream = ClientStream(ctx.stream_options(direct_tls))
        self.session: ClientSession | None = None
        self.sasl = None
        self._busy = False
        self._backlog: deque[Any] = deque()      # events waiting behind an async step
        self._input: deque[bytes] = deque()      # bytes received while busy
        self._paused = False
        self._dirty = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False

    # -- asyncio callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else str(peer)
        ctx = self.ctx
        ctx.connections.add(self)
        count = ctx.per_address.get(self.address, 0) + 1
        ctx.per_address[self.address] = count
        self._counted = True
        if count > ctx.max_per_address:
            log.warning("refusing connection from %s: %d connections already open", self.address, count - 1)
            self._end(StreamError("policy-violation", "too many connections from your address"))
            return
        self._timer = asyncio.get_running_loop().call_later(ctx.negotiation_timeout, self._negotiation_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._busy:
            self._input.append(data)
            if len(self._input) > 8 and not self._paused and self.transport is not None:
                self.transport.pause_reading()
                self._paused = True
            return
        self._feed(data)

    def eof_received(self) -> bool | None:
        if self._closing and self.transport is not None:
            self.transport.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        ctx = self.ctx
        ctx.connections.discard(self)
        if self._counted:
            left = ctx.per_address.get(self.address, 1) - 1
            if left <= 0:
                ctx.per_address.pop(self.address, None)
            else:
                ctx.per_address[self.address] = left
            self._counted = False
        if self._timer is not None:
            self._timer.cancel()
        session, self.session = self.session, None
        if session is not None:
            session.is_closed = True
            ctx.spawn(ctx.hub.close_session(session, "disconnected"))

    # -- SessionChannel (what core sees) --------------------------------------------------------
    def send_stanza(self, stanza: Element) -> None:
        self.stream.send(stanza)
        self._mark()

    def send_bytes(self, data: bytes) -> None:
        self.stream.send_raw(data)
        self._mark()

    def close(self, error: StreamError | None = None) -> None:
        self._end(error)

    # -- input processing -----------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        events = self.stream.receive_data(data)
        if events:
            self._backlog.extend(events)
            self._run_backlog()
        self._mark()

    def _run_backlog(self) -> None:
        backlog = self._backlog
        while backlog and not self._closing:
            pending = self._handle(backlog.popleft())
            if pending is not None:
                self._busy = True
                self.ctx.spawn(self._wait(pending))
                return

    async def _wait(self, pending: Awaitable[Any]) -> None:
        try:
            await pending
        except Exception:
            log.exception("processing a stanza from %s failed", self.session or self.address)
        self._busy = False
        self._run_backlog()
        while not self._busy and self._input and not self._closing:
            self._feed(self._input.popleft())
        if not self._busy and self._paused and self.transport is not None and not self._closing:
            self._paused = False
            self.transport.resume_reading()
        self._mark()

    def _handle(self, event: Any) -> Awaitable[Any] | None:
        if isinstance(event, StanzaReceived):
            if self.session is None:
                return None
            return self.ctx.hub.handle_stanza(self.session, event.stanza)
        if isinstance(event, SaslStep):
            return self._sasl(event)
        if isinstance(event, BindRequest):
            return self._bind(event)
        if isinstance(event, StartTls):
            return self._starttls()
        if isinstance(event, NonzaReceived):
            return self._nonza(event.element)
        if isinstance(event, StreamClosed):
            if event.error is not None:
                log.info("stream from %s closed with %s: %s", self.session or self.address,
                         event.error.condition, event.error.text)
            self._finish(wait_for_peer=not event.by_peer)
        return None

    async def _sasl(self, event: SaslStep) -> None:
        stream = self.stream
        if self.sasl is None or event.mechanism is not None:
            self.sasl = self.ctx.auth.session(stream.host or "", self.address, self.is_secure)
        result = await self.sasl.step(event.mechanism, event.data)
        stream.sasl_reply(result)
        if stream.is_closed:
            self._finish()

    async def _bind(self, event: BindRequest) -> None:
        stream = self.stream
        assert stream.username is not None and stream.host is not None
        try:
            session = await self.ctx.hub.bind(stream.host, stream.username, event.resource, self)
        except StanzaError as exc:
            stream.bind_failed(exc)
            return
        if self._closing:
            await self.ctx.hub.close_session(session, "disconnected")
            return
        self.session = session
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held = stream.bound(session.jid)
        self._backlog.extendleft(reversed(held))

    async def _starttls(self) -> None:
        ctx = self.ctx
        transport = self.transport
        assert transport is not None and ctx.tls_context is not None
        self.flush()
        loop = asyncio.get_running_loop()
        try:
            new_transport = await loop.start_tls(transport, self, ctx.tls_context, server_side=True,
                                                 ssl_handshake_timeout=ctx.negotiation_timeout)
        except (OSError, ssl.SSLError, ConnectionError, asyncio.TimeoutError) as exc:
            log.info("TLS handshake with %s failed: %s", self.address, exc)
            self._closing = True
            transport.abort()
            return
        if new_transport is None:
            return
        self.transport = new_transport  # type: ignore[assignment]
        self.is_secure = True
        self.stream.tls_established()

    def _nonza(self, element: Element) -> Awaitable[Any] | None:
        handler = self.ctx.nonza_handler
        if handler is not None and self.session is not None:
            result = handler(self.session, element)
            if result is True or result is False:
                if result:
                    return None
            else:
                return self._await_nonza(result, element)
        self._end(StreamError("unsupported-stanza-type", f"<{element.name} xmlns='{element.xmlns}'/> is not supported"))
        return None

    async def _await_nonza(self, result: Awaitable[bool], element: Element) -> None:
        if not await result:
            self._end(StreamError("unsupported-stanza-type", f"<{element.name} xmlns='{element.xmlns}'/> is not supported"))

    # -- output and closing ---------------------------------------------------------------------
    def _mark(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.ctx.flusher.mark(self)

    def flush(self) -> None:
        self._dirty = False
        transport = self.transport
        if transport is None:
            return
        data = self.stream.data_to_send()
        if data and not transport.is_closing():
            transport.write(data[0] if len(data) == 1 else b"".join(data))
            if transport.get_write_buffer_size() > self.ctx.max_write_buffer:
                log.warning("closing %s: it does not read what is sent to it", self.session or self.address)
                self._closing = True
                transport.abort()
                return
        if self.stream.is_closed and not self._closing:
            self._finish()

    def _negotiation_timeout(self) -> None:
        self._timer = None
        if self.session is None:
            log.info("closing %s: no authentication within %.0f s", self.address, self.ctx.negotiation_timeout)
            self._end(StreamError("connection-timeout", "authentication and resource binding took too long"))

    def _end(self, error: StreamError | None) -> None:
        if self._closing:
            return
        self.stream.close(error)
        self._finish()

    def _finish(self, wait_for_peer: bool = True) -> None:
        """Write what is pending and close the socket."""
        if self._closing:
            return
        self._closing = True
        transport = self.transport
        if transport is None:
            return
        data = self.stream.data_to_send()
        if data and not transport.is_closing():
            transport.write(b"".join(data))
        # RFC 6120 4.4: give the peer a moment to read our closing tag and close its side. Closing
        # at once with unread input would reset the connection and could lose the error text.
        # Input is ignored meanwhile (data_received returns early once _closing is set).
        if transport.is_closing():
            pass
        elif wait_for_peer and CLOSE_WAIT > 0:
            asyncio.get_running_loop().call_later(CLOSE_WAIT, transport.close)
        else:
            transport.close()
        session, self.session = self.session, None
        if session is not None:
            session.is_closed = True
            self.ctx.spawn(self.ctx.hub.close_session(session, "closed"))
