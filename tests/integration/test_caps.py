"""XEP-0115 capabilities of the server, offered in the stream features after authentication.

    server -> <stream:features>... <c xmlns='http://jabber.org/protocol/caps' hash='sha-1'
                                     node='https://stockade.example/caps' ver='V'/></stream:features>
    alice  -> <iq type='get' to='example.com'><query xmlns='disco#info'/></iq>
    server -> the identities and features whose XEP-0115 hash is V
    alice  -> <iq type='get' to='example.com'><query xmlns='disco#info' node='https://stockade.example/caps#V'/></iq>
    server -> the same identities and features, with that node
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


from stockade.testing.raw import RawStream
from stockade.testing.xmpp import TIMEOUT, Client

from .conftest import DOMAIN, USERS, jid

NODE = "https://stockade.example/caps"
PLUGINS = ("xep_0030", "xep_0115")


@contextlib.asynccontextmanager
async def caps_client(server: Any, user: str) -> AsyncIterator[tuple[Client, Any]]:
    """A slixmpp client with the XEP-0115 plugin, and the server's <c/> as that plugin saw it in
    the stream features (it reports it as an 'entity_caps' event from the domain)."""
    c = Client(jid(user), USERS[user], port=server.c2s_port, cert=server.cert_path, plugins=PLUGINS)
    seen: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_caps(presence: Any) -> None:
        if presence["from"] == DOMAIN and not seen.done():
            seen.set_result(presence["caps"])
    c.add_event_handler("entity_caps", on_caps)
    try:
        assert await c.login()
        yield c, await asyncio.wait_for(seen, TIMEOUT)
    finally:
        await c.close()


async def test_the_stream_features_carry_the_hash_of_the_servers_disco_info(server):
    async with caps_client(server, "alice") as (alice, caps):
        assert caps["node"] == NODE and caps["hash"] == "sha-1" and caps["ver"]
        info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
        assert "http://jabber.org/protocol/caps" in info["disco_info"]["features"]
        computed = alice.plugin["xep_0115"].generate_verstring(info["disco_info"], "sha-1")
        assert caps["ver"] == computed


async def test_the_caps_element_is_offered_only_after_authentication(server):
    raw = await RawStream.open(server)
    try:
        await raw.starttls()
        await raw.send(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                       b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")
        before = await raw.read_until(b"</stream:features>")
        assert b"http://jabber.org/protocol/caps" not in before
        await raw.close()
        raw = await RawStream.open(server)
        await raw.starttls()
        assert b"success" in await raw.authenticate("alice", USERS["alice"])
        await raw.send(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                       b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")
        after = await raw.read_until(b"</stream:features>")
        assert b'<c xmlns="http://jabber.org/protocol/caps" hash="sha-1" node="' + NODE.encode() in after
    finally:
        await raw.close()


async def test_every_client_sees_the_same_ver(server):
    async with caps_client(server, "alice") as (_, first), caps_client(server, "bob") as (_, second):
        assert first["ver"] == second["ver"]


async def test_the_caps_node_answers_with_the_same_info_and_verifies(server):
    async with caps_client(server, "alice") as (alice, caps):
        node = f"{NODE}#{caps['ver']}"
        iq = alice.make_iq_get(ito=DOMAIN)
        iq["disco_info"]["node"] = node
        reply = await alice.query(iq)
        assert reply["type"] == "result", reply
        assert reply["disco_info"]["node"] == node
        assert await alice.plugin["xep_0115"]._validate_caps(reply["disco_info"], "sha-1", caps["ver"])

