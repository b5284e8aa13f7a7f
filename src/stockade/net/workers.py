"""Worker processes of one node ([server] workers > 1): how they start and talk to each other.

    stockade serve                 worker 0: opens the ports, then starts workers 1..N-1
      |-- stockade serve (worker 1)   the same command, told its place by STOCKADE_WORKER
      `-- ...

Every worker accepts clients on the same ports (SO_REUSEPORT: the kernel spreads new connections
over them) and runs the whole server for the accounts whose home it is (core/partition.py).
Each pair of workers shares two Unix socket pairs, made by worker 0 before it starts the others:

- a stream of XML, like a stream between two servers: each side writes a header once, then the
  stanzas it forwards to the other (the router decided the recipient lives there) and control
  elements in NS_WORKER (ready, login failures for the brute-force limits). Stanzas keep their
  serialised form: the receiving side reads them in bulk with the same reader as client input;
- a packet socket that carries connections: after SASL, a client whose account lives in another
  worker moves there with its file descriptor (net/handoff.py).

What is written in one event-loop turn goes out in one write, as for clients; when the other
worker falls behind, client input here pauses until it caught up (`Link.pause_writing`). A worker that
exits takes its sessions with it: worker 0 then stops the node (worker_node.py), and
whatever restarts the service starts it whole again.
"""

from __future__ import annotations

import array
import asyncio
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from ..protocol import ns
from ..protocol.xml import Element, StreamHeader, StreamReader, XmlError
from .connection import Flusher

log = logging.getLogger(__name__)

NS_WORKER = "urn:stockade:worker:0"
SPEC_ENV = "STOCKADE_WORKER"          # the JSON WorkerSpec of a started worker
LINK_HEADER = f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}'>".encode()
MAX_FORWARDED = 1 << 24               # a stanza passed the sender's own size limit already
MAX_HANDOFF = 65536                   # bytes of one handoff record (its header)
# Bytes waiting to be written to another worker before client input pauses (Link.pause_writing).
# Far above what one event-loop turn forwards under load (asyncio's default of 64 KiB was
# reached in the 1:1 benchmark and cost it about a tenth); reached when a worker is hung.
LINK_HIGH_WATER = 4 << 20


@dataclass
class WorkerSpec:
    """What a worker is told when it starts: its place, the ports, its ends of the links."""
    index: int
    count: int
    ports: dict[str, int]
    links: dict[int, tuple[int, int]] = field(default_factory=dict)   # peer -> (stream fd, handoff fd)

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "count": self.count, "ports": self.ports,
                           "links": {str(k): list(v) for k, v in self.links.items()}})

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        return cls(index=data["index"], count=data["count"], ports=data["ports"],
                   links={int(k): (v[0], v[1]) for k, v in data["links"].items()})


def make_links(count: int) -> dict[int, dict[int, tuple[socket.socket, socket.socket]]]:
    """Socket pairs for every pair of workers: result[i][j] is worker i's ends towards j."""
    ends: dict[int, dict[int, tuple[socket.socket, socket.socket]]] = {i: {} for i in range(count)}
    for i in range(count):
        for j in range(i + 1, count):
            stream_i, stream_j = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            handoff_i, handoff_j = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            ends[i][j] = (stream_i, handoff_i)
            ends[j][i] = (stream_j, handoff_j)
    return ends


class Link(asyncio.Protocol):
    """The XML stream to one other worker."""

    def __init__(self, mesh: Mesh, peer: int) -> None:
        self.mesh = mesh
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.reader = StreamReader(max_stanza_size=MAX_FORWARDED, max_depth=64, max_attrs=256)
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=LINK_HIGH_WATER)  # type: ignore[attr-defined]
        transport.write(LINK_HEADER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            events = self.reader.feed(data)
        except XmlError as exc:      # a bug, not an attack: the peer is this program
            log.error("the link to worker %d broke: %s", self.peer, exc.text)
            self.mesh.link_lost(self.peer)
            return
        on_stanza, on_control = self.mesh.on_stanza, self.mesh.on_control
        for item in events:
            if type(item) is Element:
                if item.xmlns == NS_WORKER:
                    on_control(self.peer, item)
                else:
                    on_stanza(self.peer, item)
            elif not isinstance(item, StreamHeader):
                self.mesh.link_lost(self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.mesh.on_congestion(self.peer, False)
        self.mesh.link_lost(self.peer)

    # The other worker does not read what is written to it as fast as it comes (it is busy or
    # hung): asyncio's write buffer passed its high mark. Client input in this worker pauses
    # until it drained (storage/backlog.py), rather than let the buffer grow without bound.
    def pause_writing(self) -> None:
        self.mesh.on_congestion(self.peer, True)

    def resume_writing(self) -> None:
        self.mesh.on_congestion(self.peer, False)

    def send(self, data: bytes) -> None:
        if not self._out:
            self.mesh.flusher.mark(self)       # written once per event-loop turn
        self._out.append(data)

    def flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))


class Mesh:
    """This worker's links to all the others."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.links: dict[int, Link] = {}
        self.flusher = Flusher()
        self._handoff_socks: dict[int, socket.socket] = {}
        self._handoff_queue: dict[int, list[tuple[bytes, int]]] = {}     # (record, descriptor) to send
        # Set by the owner (app.py) before start():
        self.on_stanza: Callable[[int, Element], None] = lambda peer, stanza: None
        self.on_control: Callable[[int, Element], None] = lambda peer, element: None
        self.on_handoff: Callable[[dict[str, Any], socket.socket], None] = lambda header, sock: None
        self.on_lost: Callable[[int], None] = lambda peer: None
        self.on_congestion: Callable[[int, bool], None] = lambda peer, is_over: None
        self._lost: set[int] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for peer, (stream_fd, handoff_fd) in self.spec.links.items():
            sock = socket.socket(fileno=stream_fd)
            sock.setblocking(False)
            link = Link(self, peer)
            await loop.connect_accepted_socket(lambda link=link: link, sock)
            self.links[peer] = link
            handoff = socket.socket(fileno=handoff_fd)
            handoff.setblocking(False)
            self._handoff_socks[peer] = handoff
            loop.add_reader(handoff.fileno(), self._handoff_readable, peer)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for peer, sock in self._handoff_socks.items():
            loop.remove_reader(sock.fileno())
            loop.remove_writer(sock.fileno())
            sock.close()
        self._handoff_socks.clear()
        self._lost.update(self.links)
        for link in self.links.values():
            if link.transport is not None:
                link.transport.close()

    # -- stanzas and control ------------------------------------------------------------------
    def forward(self, peer: int, stanza: Element) -> bool:
        """Send a stanza for the peer's router. False when that worker is gone."""
        link = self.links.get(peer)
        if link is None or peer in self._lost:
            return False
        # With its namespace written out: the form the archive's and journal's copies made
        # already (Element.serialize_stanza), reused rather than made again.
        link.send(stanza.serialize_stanza())
        return True

    def control(self, peer: int, name: str, attrs: dict[str, str] | None = None) -> None:
        link = self.links.get(peer)
        if link is not None and peer not in self._lost:
            link.send(Element(name, NS_WORKER, attrs or {}).serialize(ns.CLIENT))

    def broadcast(self, name: str, attrs: dict[str, str] | None = None) -> None:
        for peer in self.links:
            self.control(peer, name, attrs)

    def link_lost(self, peer: int) -> None:
        if peer in self._lost:
            return
        self._lost.add(peer)
        self.on_lost(peer)

    def is_up(self, peer: int) -> bool:
        return peer in self.links and peer not in self._lost

    # -- connections ----------------------------------------------------------------------------
    def hand_off(self, peer: int, header: dict[str, Any], sock: socket.socket) -> bool:
        """Send a client's socket to the peer, which takes the connection over. The socket here
        is closed (the peer's copy keeps the connection open). False when the peer is gone."""
        handoff = self._handoff_socks.get(peer)
        if handoff is None or peer in self._lost:
            return False
        record = json.dumps(header).encode()
        fd = os.dup(sock.fileno())
        queue = self._handoff_queue.get(peer)
        if queue:
            queue.append((record, fd))
            return True
        if not self._send_handoff(peer, handoff, record, fd):
            self._handoff_queue[peer] = [(record, fd)]
            asyncio.get_running_loop().add_writer(handoff.fileno(), self._handoff_writable, peer)
        return True

    def _send_handoff(self, peer: int, handoff: socket.socket, record: bytes, fd: int) -> bool:
        try:
            handoff.sendmsg([record], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        except BlockingIOError:
            return False
        except OSError as exc:
            log.error("could not pass a connection to worker %d: %s", peer, exc)
            self.link_lost(peer)
        os.close(fd)
        return True

    def _handoff_writable(self, peer: int) -> None:
        handoff = self._handoff_socks[peer]
        queue = self._handoff_queue.get(peer) or []
        while queue:
            record, fd = queue[0]
            if not self._send_handoff(peer, handoff, record, fd):
                return
            queue.pop(0)
        self._handoff_queue.pop(peer, None)
        asyncio.get_running_loop().remove_writer(handoff.fileno())

    def _handoff_readable(self, peer: int) -> None:
        handoff = self._handoff_socks.get(peer)
        if handoff is None:
            return
        while True:
            try:
                record, fds, _flags, _addr = socket.recv_fds(handoff, MAX_HANDOFF, 4)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("the connection channel to worker %d broke: %s", peer, exc)
                asyncio.get_running_loop().remove_reader(handoff.fileno())
                self.link_lost(peer)
                return
            if not record and not fds:                 # the peer closed its end
                asyncio.get_running_loop().remove_reader(handoff.fileno())
                self.link_lost(peer)
                return
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                log.error("worker %d passed a connection record without exactly one socket", peer)
                continue
            sock = socket.socket(fileno=fds[0])
            try:
                header = json.loads(record)
            except ValueError:
                sock.close()
                log.error("worker %d passed an unreadable connection record", peer)
                continue
            self.on_handoff(header, sock)
