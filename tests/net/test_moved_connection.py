"""A client connection that moved to another worker process (net/handoff.py) keeps no parser:
when it is relayed, its object lives as long as its client stays connected."""

from __future__ import annotations

from stockade.net.c2s import C2SConnection
from stockade.testing.server import RunningServer


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
