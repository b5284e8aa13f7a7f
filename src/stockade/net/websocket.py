"""Client connections over WebSocket (RFC 7395): one XMPP element per text message.

The endpoint accepts the `xmpp` subprotocol only, reads messages into the same connection pump
as TCP clients (`ClientConnection`, framed stream), and writes each outgoing element as its own
text message through one writer task, so the order of output is kept.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol.errors import StreamError
from .connection import C2SContext, ClientConnection

log = logging.getLogger(__name__)

SUBPROTOCOL = "xmpp"


class WebSocketConnection(ClientConnection):
    __slots__ = ("websocket", "_out", "_queued", "_can_read", "_writer")
    transport = "websocket"

    def __init__(self, ctx: C2SContext, websocket: WebSocket, is_secure: bool) -> None:
        super().__init__(ctx, is_secure=is_secure, framed=True)
        self.websocket = websocket
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._can_read = asyncio.Event()
        self._can_read.set()
        self._writer = asyncio.ensure_future(self._write_loop())

    # -- transport hooks ------------------------------------------------------------------------
    def _write(self, units: list[bytes]) -> None:
        for unit in units:
            self._queued += len(unit)
            self._out.put_nowait(unit)

    def _buffered(self) -> int:
        return self._queued

    def _close_transport(self, wait_for_peer: bool) -> None:
        self._out.put_nowait(None)

    def _pause_input(self) -> None:
        self._can_read.clear()

    def _resume_input(self) -> None:
        self._can_read.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                unit = await self._out.get()
                if unit is None:
                    await self.websocket.close(1000)
                    return
                self._queued -= len(unit)
                await self.websocket.send_text(unit.decode())
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
                if text is None:
                    self.close(StreamError("unsupported-encoding", "XMPP over WebSocket uses text messages only"))
                    continue
                self.receive(text.encode())
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self.lost()
            if not self._writer.done():
                self._out.put_nowait(None)
                try:
                    await asyncio.wait_for(self._writer, 5)
                except (asyncio.TimeoutError, Exception):
                    self._writer.cancel()


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
