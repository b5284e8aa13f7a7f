"""What a client connection keeps once its login is over (net/connection.py)."""

from __future__ import annotations

from stockade.testing.xmpp import client

from .conftest import USERS


async def test_a_logged_in_idle_connection_keeps_no_queues(server):
    """Every step of a login ran in place (none waited), and what held the steps while one
    waited is let go: an idle connection keeps no empty deque (memory per connection)."""
    async with client(server, "alice@example.com", USERS["alice"]) as alice:
        await alice.roundtrip()
        connections = list(server.server.c2s_ctx.connections)
        assert len(connections) == 1
        (conn,) = connections
        assert conn.session is not None and not conn._busy
        assert conn._backlog is None and conn._input is None
