"""Hostile input gets the right stream or stanza error, and every other client keeps working."""

from __future__ import annotations

import asyncio

import pytest

from stockade.testing.raw import RawStream, header
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid


async def _still_chatting(server) -> None:
    async with client(server, jid("carol"), USERS["carol"]) as carol, \
               client(server, jid("dave"), USERS["dave"]) as dave:
        carol.send_message(mto=jid("dave"), mbody="still fine", mtype="chat")
        assert (await dave.next_message())["body"] == "still fine"


@pytest.mark.parametrize("payload, condition", [
    (b"<message><body>&lol;</body></message>", b"restricted-xml"),
    (b"<?evil instruction?>", b"restricted-xml"),
    (b"<!-- hidden -->", b"restricted-xml"),
    (b"<message><body>oops</message>", b"not-well-formed"),
    (b"<message xmlns:x='urn:x'><y:z/></message>", b"invalid-namespace"),
    (b"<message><body>" + b"A" * 300_000 + b"</body></message>", b"policy-violation"),
])
async def test_bad_xml_from_a_logged_in_client_ends_only_its_stream(server, payload, condition):
    raw = await RawStream.open(server)
    await raw.login("alice", USERS["alice"])
    await raw.send(payload)
    rest = await raw.read_to_close()
    assert b"<stream:error><" + condition in rest
    assert rest.endswith(b"</stream:stream>")
    await _still_chatting(server)


async def test_a_doctype_before_the_stream_is_refused(server):
    raw = await RawStream.open(server)
    await raw.send(b"<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>")
    rest = await raw.read_to_close()
    assert b"<restricted-xml" in rest and rest.endswith(b"</stream:stream>")


async def test_a_stanza_before_authentication_gets_not_authorized(server):
    raw = await RawStream.open(server)
    await raw.starttls()
    await raw.send(header(DOMAIN))
    await raw.read_until(b"</stream:features>")
    await raw.send(f"<message to='{jid('bob')}'><body>sneaky</body></message>".encode())
    rest = await raw.read_to_close()
    assert b"<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>" in rest


async def test_an_oversized_stanza_that_never_ends_is_cut_off(server):
    raw = await RawStream.open(server)
    await raw.login("alice", USERS["alice"])
    await raw.send(b"<message><body>")
    try:
        for _ in range(64):
            await raw.send(b"B" * 8192)
    except (ConnectionError, OSError):
        pass
    rest = await raw.read_to_close()
    assert b"<policy-violation" in rest


async def test_forged_from_is_replaced_by_the_real_sender(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        raw = await RawStream.open(server)
        await raw.login("alice", USERS["alice"], resource="raw")
        await raw.send(f"<message from='carol@{DOMAIN}/phone' to='{jid('bob')}' type='chat'>"
                       f"<body>I am carol</body></message>".encode())
        msg = await bob.next_message()
        assert str(msg["from"]) == f"{jid('alice')}/raw"
        await raw.close()


async def test_bad_addresses_and_iq_syntax_get_stanza_errors(server):
    raw = await RawStream.open(server)
    await raw.login("alice", USERS["alice"])
    await raw.send(b"<message to='a b@example.com' id='m1'><body>x</body></message>")
    assert b"<jid-malformed" in await raw.read_until(b"</message>")
    await raw.send(b"<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"<bad-request" in await raw.read_until(b"</iq>")
    await raw.send(b"<iq type='fetch' id='i2'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"<bad-request" in await raw.read_until(b"</iq>")
    await raw.send(b"<iq type='get' id='i3'/>")
    assert b"<bad-request" in await raw.read_until(b"</iq>")
    await raw.send(b"<presence type='dance'/>")
    assert b"<bad-request" in await raw.read_until(b"</presence>")
    await raw.send(b"<iq type='get' id='i4'><query xmlns='urn:unknown'/></iq>")
    assert b"<service-unavailable" in await raw.read_until(b"</iq>")
    # the stream survives all of it
    await raw.send(b"<iq type='get' id='i5'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"type=\"result\"" in await raw.read_until(r"</iq>|id=\"i5\"/>")
    await raw.close()


async def test_unfinished_negotiation_times_out():
    with RunningServer([DOMAIN], config={"c2s": {"negotiation_timeout": 1.0}}) as srv:
        raw = await RawStream.open(srv)
        await raw.send(header(DOMAIN))                # then nothing: a slow-loris
        rest = await raw.read_to_close(timeout=20)
        assert b"<connection-timeout" in rest


async def test_connections_per_address_are_capped():
    with RunningServer([DOMAIN], config={"c2s": {"max_connections_per_address": 3}}) as srv:
        open_ones = [await RawStream.open(srv) for _ in range(3)]
        for raw in open_ones:       # the first three are served
            await raw.send(header(DOMAIN))
            await raw.read_until(b"</stream:features>")
        extra = await RawStream.open(srv)
        rest = await extra.read_to_close()
        assert b"<policy-violation" in rest and b"too many connections" in rest
        for raw in open_ones:
            await raw.close()


async def test_many_bad_clients_do_not_disturb_a_conversation(server):
    async def attacker(i: int) -> None:
        raw = await RawStream.open(server)
        await raw.send(b"<?xml version='1.0'?><!DOCTYPE x><stream:stream" + b"<" * i)
        await raw.read_to_close()
    await asyncio.gather(*(attacker(i) for i in range(20)))
    await _still_chatting(server)
