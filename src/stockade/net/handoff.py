"""Moving a client connection to its account's home worker, right after SASL success.

With several workers (core/partition.py), a client lands in whichever worker the kernel gave
its connection to, but its session must live in its account's home worker. Once SASL has
succeeded (the username is known, and the client waits for nothing but to restart the stream),
the connection moves:

- a plaintext connection (the benchmark listener on loopback only) moves whole: its socket is
  passed to the home worker, which reads and writes it from then on;
- a TLS connection cannot move (the TLS state lives in this process), so this worker keeps it
  and relays: the home worker gets one end of a new socket pair, as if it were the client's
  socket, and this worker copies bytes between the other end and the TLS connection, pausing
  either side when the other cannot keep up;
- a WebSocket client (worker 0 alone serves HTTPS) is relayed the same way, framed: each
  message crosses the socket pair followed by a NUL byte, and the home worker runs a framed
  connection on its end (net/websocket.py, `RelayedWebSocket`; the record says
  `"framing": "websocket"`).

The record that goes with the socket says who the client is: host, username, address, whether
the connection is encrypted (`secure`), and which worker counts it for its address
(`counted_by`: the home worker releases it there when the connection ends). The home worker's
connection starts where this one stopped: authenticated as the account, waiting for the
client's new stream header (protocol/stream.py, `moved_in`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from ..core.partition import Partition
from ..protocol.errors import StreamError
from .c2s import C2SConnection
from .websocket import RelayedWebSocket, WebSocketConnection

if TYPE_CHECKING:
    from .c2s import C2SContext
    from .connection import ClientConnection
    from .workers import Mesh

log = logging.getLogger(__name__)

WEBSOCKET = "websocket"          # the record's "framing" of a relayed WebSocket client


def _restarting() -> StreamError:
    """The end of a connection that cannot reach its worker: that worker is gone, and the node
    is stopping (worker_node.py)."""
    return StreamError("internal-server-error", "the server is restarting; connect again")


class Handoff:
    """This worker's side of moving connections: out after SASL, in from the other workers."""

    def __init__(self, partition: Partition, mesh: Mesh) -> None:
        self.partition = partition
        self.mesh = mesh
        self.c2s: C2SContext | None = None        # set once the listeners exist

    # -- out ------------------------------------------------------------------------------------
    def after_auth(self, conn: ClientConnection, host: str, username: str) -> None:
        """Called when `conn` authenticated: move it when its account lives in another worker
        (or close it when it cannot get there)."""
        worker = self.partition.home(host, username)
        if worker == self.partition.index:
            return
        can_move = isinstance(conn, WebSocketConnection) or (isinstance(conn, C2SConnection) and conn.transport is not None)
        if not can_move:
            conn.close(StreamError("internal-server-error", "this kind of connection cannot reach your account's "
                                                             "worker process; connect over TCP"))
            return
        if conn.has_pending_input():
            conn.close(StreamError("policy-violation", "data sent before the outcome of authentication"))
            return
        if not self.mesh.is_up(worker):
            conn.close(_restarting())
            return
        conn.flush()                                 # <success/>
        header: dict[str, Any] = {"host": host, "username": username, "address": conn.address,
                                  "secure": conn.is_secure, "counted_by": conn.counted_by}
        if isinstance(conn, WebSocketConnection):
            log.debug("moving %s@%s from %s to worker %d (WebSocket relayed)", username, host, conn.address, worker)
            self._relay_websocket(conn, worker, header)
            return
        assert isinstance(conn, C2SConnection) and conn.transport is not None
        transport = conn.transport
        if conn.is_secure or transport.get_write_buffer_size():
            log.debug("moving %s@%s from %s to worker %d (relayed)", username, host, conn.address, worker)
            self._relay(conn, worker, header)
        else:
            log.debug("moving %s@%s from %s to worker %d (socket passed)", username, host, conn.address, worker)
            transport.pause_reading()
            sock = transport.get_extra_info("socket")
            if not self.mesh.hand_off(worker, header, sock):
                conn.close(_restarting())
                return
            conn.moved_away()
            transport.abort()                        # our descriptor only: the worker has its own

    def _pass_pair(self, worker: int, header: dict[str, Any]) -> socket.socket | None:
        """Make a socket pair and pass one end to `worker` with `header`: this worker's end, or
        None when that worker is gone."""
        here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sent = self.mesh.hand_off(worker, header, there)
        finally:
            there.close()
        if not sent:
            here.close()
            return None
        return here

    def _relay_websocket(self, conn: WebSocketConnection, worker: int, header: dict[str, Any]) -> None:
        here = self._pass_pair(worker, {**header, "framing": WEBSOCKET})
        if here is None:
            conn.close(_restarting())
            return
        conn.relay(here)

    def _relay(self, conn: C2SConnection, worker: int, header: dict[str, Any]) -> None:
        here = self._pass_pair(worker, header)
        if here is None:
            conn.close(_restarting())
            return
        transport = conn.transport
        assert transport is not None
        client = _ClientSide(transport)
        transport.set_protocol(client)
        if not transport.is_reading():     # paused here (storage backlog): the relay paces it now
            transport.resume_reading()
        conn.moved_away()
        here.setblocking(False)
        worker_side = _WorkerSide(client)
        client.peer = worker_side
        task = asyncio.ensure_future(asyncio.get_running_loop().connect_accepted_socket(lambda: worker_side, here))
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or client.close())

    # -- in -------------------------------------------------------------------------------------
    def arrived(self, header: dict[str, Any], sock: socket.socket) -> None:
        """A connection another worker moved here (Mesh.on_handoff)."""
        c2s = self.c2s
        try:
            host, username, address = header["host"], header["username"], header["address"]
            secure = bool(header["secure"])
        except (KeyError, TypeError):
            log.error("a connection record without host, username, address and secure: %r", header)
            sock.close()
            return
        if c2s is None or host not in c2s.hub.ctx.domains or self.partition.home(host, username) != self.partition.index:
            log.error("a connection for %s@%s arrived in the wrong worker", username, host)
            sock.close()
            return
        framing = header.get("framing")
        if framing not in (None, WEBSOCKET):
            log.error("a connection for %s@%s arrived with an unknown framing: %r", username, host, framing)
            sock.close()
            return
        sock.setblocking(False)
        conn = RelayedWebSocket(c2s, secure, address) if framing == WEBSOCKET else \
            C2SConnection(c2s, secure, address=address)
        counted_by = header.get("counted_by")
        if isinstance(counted_by, int) and c2s.address_gate is not None and 0 <= counted_by < c2s.address_gate.count:
            conn.admission(c2s.address_gate.counts_of(counted_by), None)    # admitted where it landed
        conn.stream.moved_in(host, username)

        async def attach() -> None:
            try:
                await asyncio.get_running_loop().connect_accepted_socket(lambda: conn, sock)
            except OSError as exc:
                log.info("a connection from %s closed while moving here: %s", address, exc)
                sock.close()
                conn.lost()                          # no longer counted for its address
        c2s.spawn(attach())


class _ClientSide(asyncio.Protocol):
    """The TLS connection of a relayed client: what it sends goes to the home worker."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.peer: _WorkerSide | None = None
        self._early: list[bytes] = []     # input before the worker side is connected

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        """The client will send nothing more: tell the worker. A TLS connection closes now (it
        cannot stay half open); a plain one stays open for what the worker still sends."""
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
            return self.transport.get_extra_info("sslcontext") is None
        self.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    def pause_writing(self) -> None:           # the client reads slowly: stop reading the worker
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def attached(self) -> None:
        early, self._early = self._early, []
        assert self.peer is not None and self.peer.transport is not None
        for data in early:
            self.peer.transport.write(data)

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


class _WorkerSide(asyncio.Protocol):
    """The socket pair's end towards the home worker: what it writes goes to the client."""

    def __init__(self, client: _ClientSide) -> None:
        self.client = client
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.client.transport.is_closing():
            transport.close()
            return
        self.client.attached()

    def data_received(self, data: bytes) -> None:
        client = self.client.transport
        if not client.is_closing():
            client.write(data)

    def eof_received(self) -> bool | None:
        self.client.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def pause_writing(self) -> None:           # the worker is behind: stop reading the client
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()
