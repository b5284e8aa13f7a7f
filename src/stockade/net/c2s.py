"""Client connections over TCP: the STARTTLS port (RFC 6120) and the direct TLS port (XEP-0368)."""

from __future__ import annotations

import asyncio
import logging
import ssl

from .connection import CLOSE_WAIT, C2SContext, ClientConnection, Flusher

__all__ = ["C2SConnection", "C2SContext", "Flusher"]

log = logging.getLogger(__name__)


class C2SConnection(ClientConnection, asyncio.Protocol):
    """One client on a TCP port: plaintext until STARTTLS (`direct_tls=False`), or TLS from the start."""

    __slots__ = ("transport", "_given_address")

    def __init__(self, ctx: C2SContext, direct_tls: bool, address: str | None = None, framed: bool = False) -> None:
        super().__init__(ctx, is_secure=direct_tls, framed=framed)
        self.transport: asyncio.Transport | None = None
        # The client's address when the socket is not the client's own: a connection another
        # worker moved or relays here (net/handoff.py).
        self._given_address = address

    # -- asyncio callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        address = self._given_address
        if address is None:
            peer = transport.get_extra_info("peername")
            address = peer[0] if isinstance(peer, tuple) else str(peer)
        self.opened(address)

    def data_received(self, data: bytes) -> None:
        self.receive(data)

    def eof_received(self) -> bool | None:
        if self._closing and self.transport is not None:
            self.transport.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost()

    # -- transport hooks ------------------------------------------------------------------------
    def _write(self, units: list[bytes]) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(units[0] if len(units) == 1 else b"".join(units))

    def _buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _close_transport(self, wait_for_peer: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if wait_for_peer and CLOSE_WAIT > 0:
            asyncio.get_running_loop().call_later(CLOSE_WAIT, transport.close)
        else:
            transport.close()

    def _abort_transport(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _pause_input(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def _resume_input(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def _upgrade_tls(self) -> bool:
        ctx = self.ctx
        transport = self.transport
        assert transport is not None and ctx.tls_context is not None
        try:
            new_transport = await asyncio.get_running_loop().start_tls(
                transport, self, ctx.tls_context, server_side=True,
                ssl_handshake_timeout=ctx.negotiation_timeout)
        except (OSError, ssl.SSLError, ConnectionError, asyncio.TimeoutError) as exc:
            log.info("TLS handshake with %s failed: %s", self.address, exc)
            self._closing = True
            transport.abort()
            return False
        if new_transport is None:
            return False
        self.transport = new_transport  # type: ignore[assignment]
        return True
