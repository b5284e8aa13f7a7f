"""XEP-0280 Message Carbons and XEP-0352 Client State Indication."""

from __future__ import annotations

import asyncio

from slixmpp.xmlstream import ET

from stockade.testing.xmpp import client

from .conftest import USERS, jid
from .test_presence import befriend

CARBONS = "urn:xmpp:carbons:2"


def carbon(msg, direction: str):
    el = msg.xml.find(f"{{{CARBONS}}}{direction}/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
    return el


async def test_carbons_copy_sent_and_received_messages_to_other_resources(server):
    async with client(server, jid("alice") + "/desk", USERS["alice"]) as desk, \
               client(server, jid("alice") + "/phone", USERS["alice"], plugins=("xep_0280",)) as phone, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        copies: asyncio.Queue = asyncio.Queue()       # slixmpp reports carbons as their own events
        phone.add_event_handler("carbon_sent", copies.put_nowait)
        phone.add_event_handler("carbon_received", copies.put_nowait)
        await phone.plugin["xep_0280"].enable()
        desk.send_message(mto=jid("bob"), mbody="from my desk", mtype="chat")
        assert (await bob.next_message())["body"] == "from my desk"
        sent = await phone.next_of(copies, lambda m: carbon(m, "sent") is not None)
        assert str(sent["from"]) == jid("alice")
        inner = carbon(sent, "sent")
        assert inner.find("{jabber:client}body").text == "from my desk" and inner.get("to") == jid("bob")
        # bob answers the desk: the phone gets a <received/> copy
        bob.send_message(mto=jid("alice") + "/desk", mbody="answer to desk", mtype="chat")
        assert (await desk.next_message())["body"] == "answer to desk"
        received = await phone.next_of(copies, lambda m: carbon(m, "received") is not None)
        assert carbon(received, "received").find("{jabber:client}body").text == "answer to desk"
        # a private message is not copied
        secret = desk.make_message(mto=jid("bob"), mbody="just this device", mtype="chat")
        secret.xml.append(ET.Element(f"{{{CARBONS}}}private"))
        secret.send()
        assert (await bob.next_message())["body"] == "just this device"
        await phone.roundtrip()
        assert phone.pending(copies) == []
        # the desk never enabled carbons: it gets no copies of the phone's messages
        phone.send_message(mto=jid("bob"), mbody="from the phone", mtype="chat")
        assert (await bob.next_message())["body"] == "from the phone"
        await desk.roundtrip()
        assert all(carbon(m, "sent") is None for m in desk.pending(desk.messages))


def held(server, user_jid: str) -> list[str]:
    """What the server holds back for an inactive session (read on the server's loop)."""
    def read() -> list[str]:
        from stockade.protocol.jid import parse_jid
        (session,) = server.server.sessions.of_user(parse_jid(user_jid))
        state = session.extra.get("csi")
        return [] if state is None else [s.attrs.get("type", "available") + ":" + (s.find_text("status") or "")
                                          for s in state.held]
    return server.run(read)


async def test_an_inactive_client_gets_presence_later_and_only_the_latest(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        await befriend(alice, bob)
        alice.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
        await alice.roundtrip()
        for status in ("one", "two", "three"):
            bob.send_presence(pstatus=status)
        await bob.roundtrip()                 # bob's presence has been processed by now
        assert held(server, jid("alice")) == ["available:three"]
        assert all(p["status"] not in ("one", "two", "three") for p in alice.pending(alice.presences))
        # a real message flushes what was held, then arrives
        bob.send_message(mto=jid("alice"), mbody="wake up", mtype="chat")
        assert (await alice.next_presence(jid("bob"), match=lambda p: p["status"] == "three")) is not None
        assert (await alice.next_message())["body"] == "wake up"
        assert all(p["status"] not in ("one", "two") for p in alice.pending(alice.presences))
        # <active/> flushes and stops holding
        bob.send_presence(pstatus="four")
        await bob.roundtrip()
        assert held(server, jid("alice")) == ["available:four"]
        alice.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
        assert (await alice.next_presence(jid("bob"), match=lambda p: p["status"] == "four")) is not None
        assert held(server, jid("alice")) == []
