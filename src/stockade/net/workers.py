"""Worker processes of one node ([server] workers > 1): how they start and talk to each other.

    stockade serve                 worker 0: opens the ports, then starts workers 1..N-1
      |-- stockade serve (worker 1)   the same command, told its place by STOCKADE_WORKER
      `-- ...

Every worker accepts clients on the same ports (SO_REUSEPORT: the kernel spreads new connections
over them) and runs the whole server for the accounts whose home it is (core/partition.py).
Each pair of workers shares two Unix socket pairs, made by worker 0 before it starts the others:

- a stream of frames: the stanzas it forwards to the other (the router decided the recipient
  lives there) and control elements (ready, login failures for the brute-force limits, questions
  and answers). A frame is a length, a kind and the element's tree in `marshal`'s format (names,
  attributes, text, and the raw content the stanza was read with), so the other side rebuilds
  the same Element without parsing XML again: parsing was a fifth of what a message between two
  workers cost (docs/benchmarks.md, "Worker processes"). `marshal` reads only what a process of
  this same program wrote: the link is a socket pair worker 0 made before it started the others,
  and what a client sent is in it only as strings;
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
import marshal
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable
from weakref import ref

from ..protocol.xml import Element, Node
from .connection import Flusher

log = logging.getLogger(__name__)

NS_WORKER = "urn:stockade:worker:0"
SPEC_ENV = "STOCKADE_WORKER"          # the JSON WorkerSpec of a started worker
# Bytes of one frame. A stanza passed the sender's own size limit already (at most 16 MiB,
# [c2s] max_stanza_size); its frame holds its raw content and its text again, so up to about
# twice that.
MAX_FORWARDED = 1 << 26
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
    cores: list[int] = field(default_factory=list)      # the CPUs worker 0 started on ([server] pin_workers)

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "count": self.count, "ports": self.ports,
                           "links": {str(k): list(v) for k, v in self.links.items()}, "cores": self.cores})

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        return cls(index=data["index"], count=data["count"], ports=data["ports"],
                   links={int(k): (v[0], v[1]) for k, v in data["links"].items()}, cores=data["cores"])


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


# A frame on the link: its payload's length and kind, then the payload (`marshal`).
_HEAD = struct.Struct("!IB")
_STANZA = 1              # payload: the stanza's tree (`_tree`)
_CONTROL = 2             # payload: (name, attributes) of an element in NS_WORKER
# (name, namespace, attributes, raw content or None, children: text or trees)
Tree = tuple[str, str, dict[str, str], "bytes | None", list[Any]]


def _tree(el: Element) -> Tree:
    return (el.name, el.xmlns, el.attrs, el._inner,
            [_tree(c) if type(c) is Element else c for c in el.children])


def _element(tree: Tree, top: Element | None = None) -> Element:
    """The Element `_tree` was made from, its raw content kept. Below the top-level element,
    each element's owner is the top-level one, as the XML reader makes them: a change to one of
    them drops the cached raw content that includes it."""
    name, xmlns, attrs, inner, children = tree
    el = Element(name, xmlns, attrs)
    el._inner = inner
    if top is None:
        top = el
    else:
        el._owner = ref(top)         # weak, as the XML reader makes it (protocol/xml.py, Element)
    if children:
        kids: list[Node] = el.children
        for child in children:
            kids.append(_element(child, top) if type(child) is tuple else child)
    return el


def stanza_frame(stanza: Element) -> bytes:
    payload = marshal.dumps(_tree(stanza))
    return _HEAD.pack(len(payload), _STANZA) + payload


def control_frame(name: str, attrs: dict[str, str]) -> bytes:
    payload = marshal.dumps((name, attrs))
    return _HEAD.pack(len(payload), _CONTROL) + payload


class LinkError(Exception):
    """What came over a link is not a frame this program writes (a bug: the peer is itself)."""


class Link(asyncio.Protocol):
    """The stream of frames to one other worker."""

    def __init__(self, mesh: Mesh, peer: int) -> None:
        self.mesh = mesh
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._partial = bytearray()    # the start of a frame not yet complete
        self._needed = 0               # bytes _partial must reach before anything can be read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=LINK_HIGH_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        partial = self._partial
        if partial:
            partial += data
            if len(partial) < self._needed:
                return
            data = bytes(partial)
            self._partial = bytearray()
        try:
            self._frames(data)
        except LinkError as exc:
            log.error("the link to worker %d broke: %s", self.peer, exc)
            self.mesh.link_lost(self.peer)
            if self.transport is not None:
                self.transport.close()

    def _frames(self, data: bytes) -> None:
        on_stanza, on_control = self.mesh.on_stanza, self.mesh.on_control
        view = memoryview(data)
        pos, end = 0, len(data)
        while end - pos >= 5:
            size, kind = _HEAD.unpack_from(data, pos)
            if size > MAX_FORWARDED:
                raise LinkError(f"a frame of {size} bytes")
            stop = pos + 5 + size
            if stop > end:
                break
            try:
                value = marshal.loads(view[pos + 5:stop])
                if kind == _STANZA:
                    element, deliver = _element(value), on_stanza
                elif kind == _CONTROL:
                    name, attrs = value
                    element, deliver = Element(name, NS_WORKER, attrs), on_control
                else:
                    raise LinkError(f"a frame of unknown kind {kind}")
            except (ValueError, TypeError, EOFError) as exc:
                raise LinkError(f"an unreadable frame: {exc}") from None
            pos = stop
            deliver(self.peer, element)
        if pos < end:
            self._partial = bytearray(view[pos:])
            self._needed = 5 + _HEAD.unpack_from(data, pos)[0] if end - pos >= 5 else 5

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
        link.send(stanza_frame(stanza))
        return True

    def control(self, peer: int, name: str, attrs: dict[str, str] | None = None) -> None:
        link = self.links.get(peer)
        if link is not None and peer not in self._lost:
            link.send(control_frame(name, attrs or {}))

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
