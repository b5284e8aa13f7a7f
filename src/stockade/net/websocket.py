"""Client connections over WebSocket (RFC 7395): one XMPP element per text message.

The endpoint accepts the `xmpp` subprotocol only, reads messages into the same connection pump
as TCP clients (`ClientConnection`, framed stream), and writes each outgoing element as its own
text message through one writer task, so the order of output is kept.

With several worker processes the endpoint runs in worker 0 only. A client whose account lives
in another worker is relayed there once SASL succeeded (net/handoff.py): the home worker gets one
end of a new socket pair, and from then on worker 0 only copies messages, parsing none of them.

    browser ==WebSocket== worker 0 (WebSocketConnection) --socket pair-- home (RelayedWebSocket)
                          each message + NUL  ->                 <- each element + NUL

On the socket pair every message is followed by a NUL byte, which XML never contains (not even
as a character reference), so the pieces between NULs are exactly the messages, and the home
worker parses each as a document of its own, as the endpoint does without a relay. A message
from the browser that contains U+0000 reaches the home worker with U+0001 in its place (one
byte for one, equally forbidden in XML): it cannot forge a message boundary, and the home worker
ends the stream with <not-well-formed/>, the answer it gets without a relay. A binary message,
which only the home worker's stream could answer with a stream error, closes the WebSocket with
1003 (RFC 6455: unsupported data).

The home worker runs the stream, the session and the policy; its connection is a "websocket"
one there too (the web_client permission, policy/permissions.py). Closing either side closes the
other; `<close/>` and stream errors travel as messages like any other. Each direction pauses
when the other cannot keep up: worker 0 reads no more from the browser while the socket's
buffer is full, and no more from the socket while the browser has not taken what was sent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol.errors import StreamError
from .c2s import C2SConnection
from .connection import C2SContext, ClientConnection

log = logging.getLogger(__name__)

SUBPROTOCOL = "xmpp"
CLOSE_NORMAL = 1000               # RFC 6455 close codes
CLOSE_UNSUPPORTED_DATA = 1003
END = b"\0"                       # ends each message on a relay's socket pair
# Bytes of a relayed client's output that worker 0 holds for the browser: above the high mark
# it reads no more from the home worker until they are below the low mark (asyncio's defaults).
RELAY_HIGH_WATER = 64 * 1024
RELAY_LOW_WATER = 16 * 1024


class WebSocketConnection(ClientConnection):
    __slots__ = ("websocket", "_out", "_queued", "_can_read", "_writer", "_relay")
    kind = "websocket"

    def __init__(self, ctx: C2SContext, websocket: WebSocket, is_secure: bool) -> None:
        super().__init__(ctx, is_secure=is_secure, framed=True)
        self.websocket = websocket
        self._out: asyncio.Queue[bytes | int] = asyncio.Queue()    # a message, or a close code
        self._queued = 0
        self._can_read = asyncio.Event()
        self._can_read.set()
        self._writer = asyncio.ensure_future(self._write_loop())
        self._relay: _Relay | None = None

    def relay(self, sock: socket.socket) -> None:
        """The client authenticated here and its account lives in another worker, which took the
        other end of `sock` (net/handoff.py): copy messages between the WebSocket and `sock`."""
        self.moved_away()
        relay = self._relay = _Relay(self)
        self._can_read.set()          # whatever paused the input here is over: the relay paces it
        sock.setblocking(False)

        async def attach() -> None:
            try:
                await asyncio.get_running_loop().connect_accepted_socket(lambda: relay, sock)
            except OSError as exc:
                log.info("a WebSocket client from %s closed while moving: %s", self.address, exc)
                sock.close()
                relay.connection_lost(exc)
        self.ctx.spawn(attach())

    # -- transport hooks ------------------------------------------------------------------------
    def _write(self, units: list[bytes]) -> None:
        for unit in units:
            self._queued += len(unit)
            self._out.put_nowait(unit)

    def _buffered(self) -> int:
        return self._queued

    def _close_transport(self, wait_for_peer: bool) -> None:
        self._out.put_nowait(CLOSE_NORMAL)

    def _pause_input(self) -> None:
        self._can_read.clear()

    def _resume_input(self) -> None:
        self._can_read.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                unit = await self._out.get()
                if type(unit) is int:
                    await self.websocket.close(unit)
                    return
                self._queued -= len(unit)
                await self.websocket.send_text(unit.decode())
                relay = self._relay
                if relay is not None and relay.is_paused and self._queued <= RELAY_LOW_WATER:
                    relay.resume()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    async def run(self) -> None:
        """Read messages until the client goes away."""
        websocket = self.websocket
        try:
            while True:
                await self._can_read.wait()
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                relay = self._relay
                if relay is not None:
                    if text is None:
                        log.info("closing the WebSocket of %s: it sent a binary message", self.address)
                        self._out.put_nowait(CLOSE_UNSUPPORTED_DATA)
                        break
                    relay.send(text)
                    continue
                if text is None:
                    self.close(StreamError("unsupported-encoding", "XMPP over WebSocket uses text messages only"))
                    continue
                self.receive(text.encode())
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self.lost()
            if self._relay is not None:
                self._relay.close()
            if not self._writer.done():
                self._out.put_nowait(CLOSE_NORMAL)
                try:
                    await asyncio.wait_for(self._writer, 5)
                except (asyncio.TimeoutError, Exception):
                    self._writer.cancel()


def _split(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """The messages that `data` completes on a relay's socket pair (after `pending`, the start of
    one read before), and the start of the next one."""
    pieces = data.split(END)
    if pending:
        pieces[0] = pending + pieces[0]
    rest = pieces.pop()
    return pieces, rest


class _Relay(asyncio.Protocol):
    """Worker 0's end of the socket pair of a relayed WebSocket client."""

    def __init__(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.transport: Any = None
        self.is_paused = False            # reading from the home worker: the browser is behind
        self._pending = b""
        self._early: list[bytes] = []     # messages from the browser before the socket is attached
        self._is_closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self._is_closed:
            transport.close()
            return
        early, self._early = self._early, []
        if early:
            self.transport.write(b"".join(early))

    def send(self, text: str) -> None:
        """A message from the browser, for the home worker."""
        if "\0" in text:
            text = text.replace("\0", "\1")     # a forged boundary: see the module docstring
        data = (text + "\0").encode()
        transport = self.transport
        if transport is None:
            self._early.append(data)
        elif not transport.is_closing():
            transport.write(data)

    def data_received(self, data: bytes) -> None:
        """Elements from the home worker: one message each."""
        units, self._pending = _split(self._pending, data)
        if not units:
            return
        conn = self.conn
        conn._write(units)
        if conn._queued > RELAY_HIGH_WATER and not self.is_paused:
            self.is_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        self.is_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None                       # the home worker closed: close (connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        """The home worker ended the connection: close the WebSocket once the browser has what
        came before."""
        self._is_closed = True
        self.conn._close_transport(False)

    # The home worker does not read as fast as the browser sends: stop reading the browser.
    def pause_writing(self) -> None:
        self.conn._pause_input()

    def resume_writing(self) -> None:
        self.conn._resume_input()

    def close(self) -> None:
        """The browser went away: end the connection in the home worker."""
        self._is_closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class RelayedWebSocket(C2SConnection):
    """In the home worker: a WebSocket client that worker 0 relays (see the module docstring), on
    the socket pair's end like a TCP client on its socket, but framed: each message is followed
    by a NUL byte, both ways."""

    __slots__ = ("_pending",)
    kind = "websocket"

    def __init__(self, ctx: C2SContext, is_secure: bool, address: str) -> None:
        super().__init__(ctx, is_secure, address=address, framed=True)
        self._pending = b""

    def data_received(self, data: bytes) -> None:
        messages, self._pending = _split(self._pending, data)
        for message in messages:
            self.receive(message)

    def _write(self, units: list[bytes]) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            units.append(b"")             # a NUL after each unit, in one join (the list is ours)
            transport.write(END.join(units))

    def _close_transport(self, wait_for_peer: bool) -> None:
        # Worker 0 closes the WebSocket (its closing handshake) once it has sent what came before.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def serve_websocket(ctx: C2SContext, websocket: WebSocket, is_secure: bool,
                          allowed_origins: list[str]) -> None:
    """The endpoint: check the subprotocol and origin, then pump."""
    offered = websocket.scope.get("subprotocols", [])
    if SUBPROTOCOL not in offered:
        await websocket.close(code=1002, reason="use the xmpp subprotocol (RFC 7395)")
        return
    origin = websocket.headers.get("origin")
    if allowed_origins and origin not in allowed_origins:
        log.warning("refusing a WebSocket from origin %r", origin)
        await websocket.close(code=1008, reason="origin not allowed")
        return
    await websocket.accept(subprotocol=SUBPROTOCOL)
    conn = WebSocketConnection(ctx, websocket, is_secure)
    client: Any = websocket.client
    conn.opened(client.host if client else "?")    # a refused connection gets its stream error
    await conn.run()
