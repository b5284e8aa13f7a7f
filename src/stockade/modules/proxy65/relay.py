"""The SOCKS5 side of the proxy: connections, their pairing by address, activation and relaying.

Life of a bytestream:

    1. The target and the initiator each connect and CONNECT to the same address (the hex SHA-1
       of SID + initiator JID + target JID). The first waits, the second completes the pair; a
       third connection to an address that already has two is refused.
    2. Nothing is relayed until the initiator activates the pair over XMPP (service.py), which
       also checks the per-user limit. Until then both connections are paused.
    3. Bytes flow both ways, with back-pressure (a reader is paused while its peer's socket does
       not drain) and a limit on the bytes of one transfer.
    4. When one side closes or ends its stream, the other is closed once what was relayed to it
       is written.

A connection that is not activated within the activation timeout is closed, paired or not.
The timer is the event loop's: it is a real network timing, not the server's logical clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from ...protocol.errors import StanzaError
from .socks5 import MAX_REQUEST, NOT_ALLOWED, SUCCEEDED, Connect, Refused, Socks5Handshake, reply

log = logging.getLogger(__name__)

# Reasons a connection's reading is paused; it reads again when none is left.
WAITING = "waiting for activation"
BACKPRESSURE = "peer not draining"


@dataclass(frozen=True)
class Limits:
    activation_timeout: float
    max_connections: int
    max_transfers_per_user: int
    max_bytes: int            # per transfer, both directions; 0: no limit


@dataclass(eq=False)
class Pair:
    """The (at most two) connections that asked for one address."""
    address: str
    conns: list[SocksConnection] = field(default_factory=list)
    owner: str | None = None          # bare JID of the initiator, once activated
    relayed: int = 0


class Relay:
    """Every SOCKS5 connection of the proxy, and the pairs they form."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.connections: set[SocksConnection] = set()
        self.pairs: dict[str, Pair] = {}
        self.active: Counter[str] = Counter()        # bare JID -> activated transfers

    def protocol(self) -> SocksConnection:
        return SocksConnection(self)

    # -- pairing ---------------------------------------------------------------------------------
    def join(self, conn: SocksConnection, address: str) -> Pair | None:
        pair = self.pairs.get(address)
        if pair is None:
            pair = self.pairs[address] = Pair(address)
        elif len(pair.conns) >= 2 or pair.owner is not None:
            return None
        pair.conns.append(conn)
        return pair

    def leave(self, conn: SocksConnection) -> None:
        pair = conn.pair
        if pair is None:
            return
        conn.pair = None
        if conn in pair.conns:
            pair.conns.remove(conn)
        if pair.owner is not None:
            # An activated transfer ends with either side; the other is closed after its writes.
            for other in pair.conns:
                other.close()
            self._end(pair)
        elif not pair.conns and self.pairs.get(pair.address) is pair:
            del self.pairs[pair.address]

    def _end(self, pair: Pair) -> None:
        if self.pairs.get(pair.address) is pair:
            del self.pairs[pair.address]
            self.active[pair.owner] -= 1
            if self.active[pair.owner] <= 0:
                del self.active[pair.owner]

    # -- activation (from the initiator, over XMPP) ----------------------------------------------
    def activate(self, address: str, owner: str) -> None:
        """Start relaying for the pair at `address`; `owner` is the initiator's bare JID. Raises
        StanzaError with the conditions of XEP-0065 section 6.3.4."""
        pair = self.pairs.get(address)
        if pair is None:
            # Also what a third party gets: its own JID makes a different address.
            raise StanzaError("item-not-found", "no connection waits for this bytestream: check the sid and "
                                                "the target, and activate it from the JID that requested it")
        if pair.owner is not None:
            raise StanzaError("not-allowed", "this bytestream is already activated")
        if len(pair.conns) < 2:
            raise StanzaError("not-allowed", "only one party is connected to the proxy; both must connect "
                                             "before the bytestream is activated")
        if self.active[owner] >= self.limits.max_transfers_per_user:
            raise StanzaError("resource-constraint", f"you already have {self.active[owner]} transfers through "
                                                     "this proxy; wait until one ends")
        pair.owner = owner
        self.active[owner] += 1
        first, second = pair.conns
        first.start(second)
        second.start(first)

    # -- limits on relayed bytes -----------------------------------------------------------------
    def relayed(self, pair: Pair, size: int) -> int:
        """Account for `size` bytes about to be relayed; returns how many may go (the byte limit
        cuts the last chunk)."""
        allowed = size
        if self.limits.max_bytes:
            allowed = max(0, min(size, self.limits.max_bytes - pair.relayed))
        pair.relayed += allowed
        return allowed

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close(abort=True)


class SocksConnection(asyncio.Protocol):
    """One TCP connection to the proxy: handshake, wait for activation, relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.handshake: Socks5Handshake | None = Socks5Handshake()
        self.pair: Pair | None = None
        self.peer: SocksConnection | None = None
        self.early = b""                     # sent before activation, relayed once activated
        self.paused: set[str] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    # -- asyncio callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport               # type: ignore[assignment]
        relay = self.relay
        if len(relay.connections) >= relay.limits.max_connections:
            log.warning("SOCKS5 proxy: %d connections already open; refusing another", len(relay.connections))
            transport.abort()
            self.closed = True
            return
        relay.connections.add(self)
        self.timer = asyncio.get_running_loop().call_later(relay.limits.activation_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.handshake is not None:
            self._handshake(data)
        elif self.peer is not None:
            self._relay(data)
        else:
            self._keep_early(data)

    def eof_received(self) -> bool:
        # A file transfer is one-way: the sender's end of stream ends the transfer. Returning
        # False closes this side; leave() then closes the peer once its queued bytes are written.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.relay.connections.discard(self)
        self.relay.leave(self)

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause(BACKPRESSURE)

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume(BACKPRESSURE)

    # -- steps -----------------------------------------------------------------------------------
    def _handshake(self, data: bytes) -> None:
        assert self.handshake is not None and self.transport is not None
        answer, outcome = self.handshake.feed(data)
        if answer:
            self.transport.write(answer)
        if isinstance(outcome, Refused):
            log.info("SOCKS5 proxy: refused a connection: %s", outcome.reason)
            self.close()
        elif isinstance(outcome, Connect):
            self.handshake = None
            pair = self.relay.join(self, outcome.address)
            if pair is None:
                log.warning("SOCKS5 proxy: a third connection asked for a paired bytestream; refused")
                self.transport.write(reply(NOT_ALLOWED))
                self.close()
                return
            self.pair = pair
            self.pause(WAITING)
            self.transport.write(reply(SUCCEEDED, outcome.address.encode("ascii")))
            self._keep_early(outcome.rest)
        elif self.handshake.buffered > MAX_REQUEST:
            self.close(abort=True)

    def _keep_early(self, data: bytes) -> None:
        # A well-behaved client sends nothing before activation; reading is paused meanwhile, so
        # this holds at most what arrived with the request.
        if len(self.early) + len(data) > 65536:
            log.info("SOCKS5 proxy: a client sent too much before activation; closed")
            self.close(abort=True)
            return
        self.early += data

    def start(self, peer: SocksConnection) -> None:
        """Activation: relay to `peer` from now on."""
        self.peer = peer
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        early, self.early = self.early, b""
        if early:
            self._relay(early)
        self.resume(WAITING)

    def _relay(self, data: bytes) -> None:
        peer, pair = self.peer, self.pair
        if peer is None or pair is None or peer.transport is None or peer.closed:
            return
        allowed = self.relay.relayed(pair, len(data))
        if allowed:
            peer.transport.write(data[:allowed] if allowed < len(data) else data)
        if allowed < len(data):
            log.info("SOCKS5 proxy: a transfer of %s reached the limit of %d bytes; closed",
                     pair.owner, self.relay.limits.max_bytes)
            self.close()
            peer.close()

    def _timed_out(self) -> None:
        self.timer = None
        if self.peer is None and not self.closed:
            log.info("SOCKS5 proxy: a connection was not activated within %.0f s; closed",
                     self.relay.limits.activation_timeout)
            self.close(abort=True)

    # -- reading and closing ---------------------------------------------------------------------
    def pause(self, reason: str) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self.paused:
            return
        self.paused.discard(reason)
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self, abort: bool = False) -> None:
        """Close after what is queued has been written (or at once with `abort`)."""
        if self.transport is None:
            return
        if abort:
            self.transport.abort()
        elif not self.transport.is_closing():
            self.transport.close()
        self.closed = True
