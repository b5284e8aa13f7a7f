"""A client connection that moved to another worker process (net/handoff.py): it keeps no parser
(when it is relayed, its object lives as long as its client stays connected), and a relay reads
a client the storage backlog had paused."""

from __future__ import annotations

import json
import socket
import time

from stockade.core.partition import Partition
from stockade.net.c2s import C2SConnection
from stockade.net.handoff import Handoff
from stockade.net.workers import Mesh, WorkerSpec, make_links
from stockade.testing.server import RunningServer

TIMEOUT = 30.0


def test_a_connection_that_moved_away_frees_its_parser():
    with RunningServer(["example.com"]) as srv:
        def move() -> tuple[object, object]:
            conn = C2SConnection(srv.server.c2s_ctx, False)
            reader = conn.stream._reader
            before = reader._parser
            conn.moved_away()
            return before, reader._parser
        before, after = srv.run(move)
        assert before is not None and after is None


def test_a_relayed_connection_that_the_storage_backlog_had_paused_reads_again():
    """A client held back while the database writers were behind (storage/backlog.py) when it
    moves to another worker over a relay (a TLS connection: its TLS state stays here) is read
    again by the relay, which paces it from then on: the moved connection itself never resumes
    (it is closed for this worker), so without that the client stalled for good."""
    ends = make_links(2)
    mine = {peer: (s.detach(), h.detach()) for peer, (s, h) in ends[0].items()}
    stream_1, handoff_1 = ends[1][0]
    with RunningServer(["example.com"]) as srv, \
            socket.create_connection(("127.0.0.1", srv.c2s_port), timeout=TIMEOUT) as client:
        ctx = srv.server.c2s_ctx
        mesh = Mesh(WorkerSpec(0, 2, {}, mine))
        srv.call(mesh.start())
        srv.run(lambda: ctx.writes.over("archive", True))       # the archive writer is behind
        client.sendall(b"<?xml version='1.0'?><stream:stream to='example.com' version='1.0' "
                       b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        client.recv(4096)                                       # the stream header and features

        def held_back() -> list[C2SConnection]:
            return [c for c in ctx.connections if isinstance(c, C2SConnection) and c.transport is not None
                    and not c.transport.is_reading()]
        deadline = time.monotonic() + TIMEOUT
        while not srv.run(held_back):
            assert time.monotonic() < deadline, "the connection was never held back"
            time.sleep(0.01)
        [conn] = srv.run(held_back)
        handoff = Handoff(Partition(0, 2, lambda worker, stanza, confirm: None, set()), mesh)
        srv.run(lambda: handoff._relay(conn, 1, {"host": "example.com", "username": "alice"}))
        handoff_1.settimeout(TIMEOUT)
        record, fds, _flags, _addr = socket.recv_fds(handoff_1, 65536, 1)
        assert json.loads(record)["username"] == "alice"
        with socket.socket(fileno=fds[0]) as relayed:
            relayed.settimeout(TIMEOUT)
            client.sendall(b"<presence/>")
            received = b""
            while b"<presence/>" not in received:
                chunk = relayed.recv(4096)
                assert chunk, "the relay closed"
                received += chunk
        srv.run(lambda: ctx.writes.over("archive", False))
        srv.run(mesh.close)
    stream_1.close()
    handoff_1.close()
