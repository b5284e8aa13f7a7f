"""XEP-0065 SOCKS5 bytestreams through the server's proxy, proxy.example.com.

    alice -> <iq type='get' to='proxy.example.com'><query xmlns='http://jabber.org/protocol/bytestreams'/></iq>
    proxy -> <streamhost jid='proxy.example.com' host='127.0.0.1' port='P'/>
    alice -> bob: the streamhost and a sid; bob connects to P and CONNECTs to SHA1(sid + alice + bob)
    alice connects to P with the same address, then
    alice -> <iq type='set' to='proxy.example.com'><query sid='sid'><activate>bob's JID</activate></query></iq>
    proxy -> result; from now on the bytes alice writes come out at bob's connection
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import TIMEOUT, client

from .conftest import DOMAIN, USERS, jid
from .test_component import component
from .test_presence import befriend

PROXY = f"proxy.{DOMAIN}"
NS = "http://jabber.org/protocol/bytestreams"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
BOT, BOT_SECRET = "bot.example.com", "bot-shared-secret-1"
PLUGINS = ("xep_0030", "xep_0065")


def proxy_server(**options: Any) -> RunningServer:
    config = {"modules": {"proxy65": {"enabled": True, "port": 0, **options}},
              "components": [{"domain": BOT, "secret": BOT_SECRET}],
              "component_listener": {"enabled": True, "port": 0}}
    srv = RunningServer(domains=[DOMAIN, "other.org"], config=config).start()
    for user, password in USERS.items():
        srv.add_user(jid(user), password)
    return srv


@pytest.fixture
def server() -> Iterator[RunningServer]:
    srv = proxy_server()
    try:
        yield srv
    finally:
        srv.stop()


def socks_port(server: RunningServer) -> int:
    return server.run(lambda: server.server.router.components[PROXY].streamhost()[1])


def address(sid: str, requester: Any, target: Any) -> str:
    return hashlib.sha1(f"{sid}{requester}{target}".encode()).hexdigest()


@contextlib.asynccontextmanager
async def socks(server: RunningServer, dest: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw SOCKS5 connection that has CONNECTed to `dest` (and was accepted)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", socks_port(server)), TIMEOUT)
    try:
        writer.write(b"\x05\x01\x00")
        assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\x05\x00"
        writer.write(b"\x05\x01\x00\x03" + bytes([len(dest)]) + dest.encode() + b"\x00\x00")
        answer = await asyncio.wait_for(reader.readexactly(4 + 1 + len(dest) + 2), TIMEOUT)
        assert answer == b"\x05\x00\x00\x03" + bytes([len(dest)]) + dest.encode() + b"\x00\x00"
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def closed_by_proxy(reader: asyncio.StreamReader) -> bytes:
    """Everything the proxy still sends until it closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), TIMEOUT):
            data += chunk
    return data


def activation(user: Any, sid: str | None, target: str | None, to: str = PROXY) -> Any:
    iq = user.make_iq_set(ito=to)
    query = ET.SubElement(iq.xml, f"{{{NS}}}query", {"sid": sid} if sid is not None else {})
    if target is not None:
        ET.SubElement(query, f"{{{NS}}}activate").text = target
    return iq


def streamhost_request(user: Any) -> Any:
    iq = user.make_iq_get(ito=PROXY)
    ET.SubElement(iq.xml, f"{{{NS}}}query")
    return iq


def error_of(reply: Any) -> tuple[str, str]:
    assert reply["type"] == "error", reply
    return reply["error"]["condition"], reply["error"]["text"]


# -- the transfer, as real clients do it --------------------------------------------------------

async def test_two_users_transfer_bytes_through_the_proxy(server):
    payload = os.urandom(300 * 1024)
    async with client(server, jid("alice"), USERS["alice"], plugins=PLUGINS) as alice, \
               client(server, jid("bob"), USERS["bob"], plugins=PLUGINS) as bob:
        await befriend(alice, bob)              # RFC 6121 8.5.3.1: IQs to bob's full JID need it
        bob.plugin["xep_0065"].auto_accept = True
        received = bytearray()
        complete = asyncio.Event()

        def on_data(data: bytes) -> None:
            received.extend(data)
            if len(received) >= len(payload):
                complete.set()
        bob.add_event_handler("socks5_data", on_data)

        sock = await asyncio.wait_for(alice.plugin["xep_0065"].handshake(bob.boundjid, timeout=TIMEOUT), TIMEOUT)
        assert sock is not None, "the bytestream was not established"
        await sock.write(payload)
        await asyncio.wait_for(complete.wait(), TIMEOUT)
        assert bytes(received) == payload
        sock.transport.close()


async def test_the_proxy_is_listed_and_describes_itself(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=TIMEOUT)
        assert (PROXY, None, "SOCKS5 proxy") in items["disco_items"]["items"]
        info = await alice.plugin["xep_0030"].get_info(jid=PROXY, timeout=TIMEOUT)
        assert ("proxy", "bytestreams", None, "SOCKS5 Bytestreams Proxy") in info["disco_info"]["identities"]
        assert NS in info["disco_info"]["features"]


async def test_a_user_learns_where_to_connect(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await alice.query(streamhost_request(alice))
        host = reply.xml.find(f"{{{NS}}}query/{{{NS}}}streamhost")
        assert host.attrib == {"jid": PROXY, "host": "127.0.0.1", "port": str(socks_port(server))}


# -- who may use it -----------------------------------------------------------------------------

async def test_a_component_is_refused_the_streamhost_and_the_activation(server):
    async with component(server, BOT, BOT_SECRET) as bot:
        for iq in (streamhost_request(bot), activation(bot, "s1", jid("bob"))):
            iq["from"] = BOT
            with pytest.raises(IqError) as refused:
                await iq.send(timeout=TIMEOUT)
            error = next(c for c in refused.value.iq.xml if c.tag.endswith("}error"))
            assert error.find(f"{{{STANZAS}}}forbidden") is not None
            assert "users of this server" in error.findtext(f"{{{STANZAS}}}text")


async def test_activation_by_a_third_party_is_refused(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob, \
               client(server, jid("carol"), USERS["carol"]) as carol:
        dest = address("sid-1", alice.boundjid, bob.boundjid)
        async with socks(server, dest) as (bob_in, _), socks(server, dest) as (_, alice_out):
            # carol knows the sid and the target, but her own JID makes another address
            condition, text = error_of(await carol.query(activation(carol, "sid-1", str(bob.boundjid))))
            assert condition == "item-not-found" and "activate it from the JID that requested it" in text
            # nothing was relayed: the first bytes bob reads are the ones sent after alice's activation
            assert (await alice.query(activation(alice, "sid-1", str(bob.boundjid))))["type"] == "result"
            alice_out.write(b"hello bob")
            assert await asyncio.wait_for(bob_in.readexactly(9), TIMEOUT) == b"hello bob"


async def test_activation_is_refused_until_both_parties_are_connected(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        dest = address("sid-2", alice.boundjid, bob.boundjid)
        condition, _ = error_of(await alice.query(activation(alice, "sid-2", str(bob.boundjid))))
        assert condition == "item-not-found"
        async with socks(server, dest):
            condition, text = error_of(await alice.query(activation(alice, "sid-2", str(bob.boundjid))))
            assert condition == "not-allowed" and "only one party" in text
            async with socks(server, dest):
                assert (await alice.query(activation(alice, "sid-2", str(bob.boundjid))))["type"] == "result"
                condition, text = error_of(await alice.query(activation(alice, "sid-2", str(bob.boundjid))))
                assert condition == "not-allowed" and "already activated" in text


@pytest.mark.parametrize("sid, target, condition", [
    (None, "bob@example.com/phone", "bad-request"),
    ("sid-3", None, "bad-request"),
    ("sid-3", "   ", "bad-request"),
    ("sid-3", "bob@@example.com", "jid-malformed"),
])
async def test_a_malformed_activation_gets_an_error_with_a_text(server, sid, target, condition):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        got, text = error_of(await alice.query(activation(alice, sid, target)))
        assert got == condition and text


async def test_other_requests_to_the_proxy_are_refused(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        iq = alice.make_iq_get(ito=f"someone@{PROXY}")
        ET.SubElement(iq.xml, f"{{{NS}}}query")
        assert error_of(await alice.query(iq))[0] == "service-unavailable"
        iq = alice.make_iq_get(ito=PROXY)
        ET.SubElement(iq.xml, "{jabber:iq:version}query")
        assert error_of(await alice.query(iq))[0] == "service-unavailable"
        alice.send_message(mto=PROXY, mbody="hello?", mtype="chat")
        bounced = await alice.next_message()
        assert bounced["type"] == "error" and bounced["error"]["condition"] == "service-unavailable"


# -- the SOCKS5 side ----------------------------------------------------------------------------

async def test_a_third_connection_to_a_paired_address_is_refused(server):
    dest = address("sid-4", jid("alice") + "/a", jid("bob") + "/b")
    async with socks(server, dest), socks(server, dest):
        reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(server))
        try:
            writer.write(b"\x05\x01\x00" + b"\x05\x01\x00\x03\x28" + dest.encode() + b"\x00\x00")
            assert await closed_by_proxy(reader) == b"\x05\x00" + b"\x05\x02\x00\x01" + bytes(6)
        finally:
            writer.close()


@pytest.mark.parametrize("request_bytes, answer", [
    (b"\x05\x01\x02", b"\x05\xff"),                                           # only username/password offered
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b""),                           # SOCKS4
    (b"\x05\x01\x00" + b"\x05\x02\x00\x03\x28" + b"a" * 40 + b"\x00\x00",   # BIND
     b"\x05\x00" + b"\x05\x07\x00\x01" + bytes(6)),
    (b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x16",         # CONNECT to 127.0.0.1:22
     b"\x05\x00" + b"\x05\x08\x00\x01" + bytes(6)),
    (b"\x05\x01\x00" + b"\x05\x01\x00\x03\x0bexample.com\x00\x50",          # CONNECT to example.com:80
     b"\x05\x00" + b"\x05\x02\x00\x01" + bytes(6)),
    (b"\x05\x01\x00" + b"\x05\x01\x00\x03\x28" + b"a" * 40 + b"\x00\x50",   # a hash, but port 80
     b"\x05\x00" + b"\x05\x02\x00\x01" + bytes(6)),
])
async def test_anything_but_an_xep_0065_connect_is_refused_and_closed(server, request_bytes, answer):
    reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(server))
    try:
        writer.write(request_bytes)
        assert await closed_by_proxy(reader) == answer
    finally:
        writer.close()


async def test_an_unactivated_connection_is_closed_after_the_timeout():
    srv = proxy_server(activation_timeout=0.5)
    try:
        dest = address("sid-5", jid("alice") + "/a", jid("bob") + "/b")
        async with socks(srv, dest) as (alone, _):
            assert await closed_by_proxy(alone) == b""
        async with socks(srv, dest) as (first, _), socks(srv, dest) as (second, _):
            assert await closed_by_proxy(first) == b""        # paired, but nobody activated it
            assert await closed_by_proxy(second) == b""
        reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(srv))
        try:
            writer.write(b"\x05")                              # a handshake that never ends
            assert await closed_by_proxy(reader) == b""
        finally:
            writer.close()
    finally:
        srv.stop()


# -- limits -------------------------------------------------------------------------------------

async def test_a_user_may_run_only_so_many_transfers_at_once():
    srv = proxy_server(max_transfers_per_user=1)
    try:
        async with client(srv, jid("alice"), USERS["alice"]) as alice, \
                   client(srv, jid("bob"), USERS["bob"]) as bob:
            first, second = (address(s, alice.boundjid, bob.boundjid) for s in ("one", "two"))
            async with socks(srv, first) as (bob_in, _), socks(srv, first) as (_, alice_out), \
                       socks(srv, second), socks(srv, second):
                assert (await alice.query(activation(alice, "one", str(bob.boundjid))))["type"] == "result"
                condition, text = error_of(await alice.query(activation(alice, "two", str(bob.boundjid))))
                assert condition == "resource-constraint" and "wait until one ends" in text
                # alice ends the first transfer; bob's side is closed with it ...
                alice_out.close()
                assert await closed_by_proxy(bob_in) == b""
                # ... and the second may start
                assert (await alice.query(activation(alice, "two", str(bob.boundjid))))["type"] == "result"
    finally:
        srv.stop()


async def test_a_transfer_is_cut_at_the_byte_limit():
    srv = proxy_server(max_bytes_per_transfer=100_000)
    try:
        async with client(srv, jid("alice"), USERS["alice"]) as alice, \
                   client(srv, jid("bob"), USERS["bob"]) as bob:
            dest = address("big", alice.boundjid, bob.boundjid)
            async with socks(srv, dest) as (bob_in, _), socks(srv, dest) as (alice_in, alice_out):
                assert (await alice.query(activation(alice, "big", str(bob.boundjid))))["type"] == "result"
                alice_out.write(os.urandom(250_000))
                assert len(await closed_by_proxy(bob_in)) == 100_000
                assert await closed_by_proxy(alice_in) == b""
    finally:
        srv.stop()


async def test_the_proxy_holds_a_limited_number_of_connections():
    srv = proxy_server(max_connections=2)
    try:
        async with socks(srv, "a" * 40), socks(srv, "b" * 40):
            reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(srv))
            try:
                writer.write(b"\x05\x01\x00")
                assert await closed_by_proxy(reader) == b""
            finally:
                writer.close()
    finally:
        srv.stop()
