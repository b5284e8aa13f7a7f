"""Per-group feature permissions over XMPP: alice is in "contractors", which example.com denies
every feature; bob is in no denied group. Each test shows alice refused, with the condition and a
text a person understands, and bob allowed, doing the same thing on the same server."""

from __future__ import annotations

import asyncio
from typing import Any

from slixmpp.exceptions import PresenceError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from stockade.protocol.jid import JID
from stockade.testing.xmpp import Client, client

from ..integration.test_muc_support import PLUGINS as MUC_PLUGINS, create, enter
from .conftest import DOMAIN, OTHER, USERS, jid, login, make_groups, ws_connect, ws_login

NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_MAM = "urn:xmpp:mam:2"
STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
UPLOAD = f"upload.{DOMAIN}"
ROOMS = f"conference.{DOMAIN}"


def refusal(reply: Any) -> tuple[str, str]:
    """(condition, text) of an error stanza, read from the XML: slixmpp does not know the RFC 6120
    condition <policy-violation/>."""
    assert reply["type"] == "error", reply
    error = reply.xml.find("{jabber:client}error")
    condition = next(c.tag.split("}")[1] for c in error if c.tag.startswith(STANZAS) and not c.tag.endswith("}text"))
    return condition, reply["error"]["text"]


def slot_request(c: Client, filename: str = "notes.txt", size: int = 11) -> Any:
    iq = c.make_iq_get(ito=UPLOAD)
    ET.SubElement(iq.xml, f"{{{NS_UPLOAD}}}request", {"filename": filename, "size": str(size),
                                                         "content-type": "text/plain"})
    return iq


def archive_query(c: Client, to: str | None = None) -> Any:
    iq = c.make_iq_set(ito=to)
    ET.SubElement(iq.xml, f"{{{NS_MAM}}}query", {"queryid": "q1"})
    return iq


# -- upload ---------------------------------------------------------------------------------------
async def test_a_contractor_gets_no_upload_slot_and_a_colleague_does(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        # alice -> <iq type='get' to='upload.example.com'><request filename='notes.txt' .../></iq>
        condition, text = refusal(await alice.query(slot_request(alice)))
        assert condition == "forbidden"
        assert text == "file upload is not allowed for members of group contractors; ask your administrator"
        # bob -> the same request: <slot><put/><get/></slot>
        reply = await bob.query(slot_request(bob))
        assert reply["type"] == "result"
        assert reply.xml.find(f"{{{NS_UPLOAD}}}slot/{{{NS_UPLOAD}}}put").get("url").startswith("https://")


# -- muc_create -----------------------------------------------------------------------------------
async def test_a_contractor_cannot_create_a_room_but_may_enter_one(server):
    async with login(server, "alice", plugins=MUC_PLUGINS) as alice, \
               login(server, "bob", plugins=MUC_PLUGINS) as bob:
        # alice -> <presence to='plans@conference.example.com/Alice'><x xmlns='...muc'/></presence>
        try:
            await enter(alice, f"plans@{ROOMS}", "Alice")
            raise AssertionError("alice created a room")
        except PresenceError as exc:
            assert exc.presence["error"]["condition"] == "forbidden"
            assert exc.presence["error"]["text"] == ("creating chat rooms is not allowed for members of group "
                                                     "contractors; ask your administrator")
        # bob creates it; alice enters the existing room
        await create(bob, f"plans@{ROOMS}", "Bob")
        own, _, _, _ = await enter(alice, f"plans@{ROOMS}", "Alice")
        assert own["type"] == "available" and str(own["from"]) == f"plans@{ROOMS}/Alice"


# -- history --------------------------------------------------------------------------------------
async def test_a_contractor_cannot_read_the_message_archive(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        bob.send_message(mto=jid("alice"), mbody="for the record", mtype="chat")
        await alice.next_message()
        # alice -> <iq type='set'><query xmlns='urn:xmpp:mam:2'/></iq>
        condition, text = refusal(await alice.query(archive_query(alice)))
        assert condition == "forbidden"
        assert text == ("reading the message archive is not allowed for members of group contractors; "
                        "ask your administrator")
        reply = await bob.query(archive_query(bob))
        assert reply["type"] == "result" and reply.xml.find(f"{{{NS_MAM}}}fin") is not None


async def test_a_contractor_cannot_read_a_room_archive(server):
    room = f"minutes@{ROOMS}"
    async with login(server, "alice", plugins=MUC_PLUGINS) as alice, \
               login(server, "bob", plugins=MUC_PLUGINS) as bob:
        await create(bob, room, "Bob", enablelogging=True)
        await enter(alice, room, "Alice")
        condition, text = refusal(await alice.query(archive_query(alice, room)))
        assert condition == "forbidden" and "reading the message archive is not allowed" in text
        reply = await bob.query(archive_query(bob, room))
        assert reply["type"] == "result"


async def test_a_contractor_entering_a_room_gets_no_discussion_history(server):
    room = f"standup@{ROOMS}"
    async with login(server, "bob", plugins=MUC_PLUGINS) as bob:
        await create(bob, room, "Bob")
        bob.send_message(mto=room, mbody="yesterday's numbers", mtype="groupchat")
        assert (await bob.next_message())["body"] == "yesterday's numbers"      # the room reflected it
        async with login(server, "carol", plugins=MUC_PLUGINS) as carol:
            _, _, _, history = await enter(carol, room, "Carol")
            assert [m["body"] for m in history] == ["yesterday's numbers"]
        async with login(server, "alice", plugins=MUC_PLUGINS) as alice:
            _, subject, _, history = await enter(alice, room, "Alice")
            assert history == [] and subject is not None                   # in the room, no history


# -- federation -----------------------------------------------------------------------------------
async def test_a_contractor_cannot_reach_other_servers(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        # alice -> <message to='partner@elsewhere.net'/>: refused by policy before routing
        alice.send_message(mto="partner@elsewhere.net", mbody="outside", mtype="chat")
        error = await alice.next_message()
        condition, text = refusal(error)
        assert condition == "policy-violation"
        assert text == ("messaging people on other servers is not allowed for members of group contractors; "
                        "ask your administrator")
        # an IQ too (sent raw: slixmpp's IQ futures cannot represent <policy-violation/>)
        errors: asyncio.Queue[Any] = asyncio.Queue()
        alice.register_handler(Callback("iq errors", StanzaPath("iq@type=error"), errors.put_nowait))
        alice.send_raw("<iq type='get' id='v1' to='elsewhere.net'><query xmlns='jabber:iq:version'/></iq>")
        reply = await alice.next_of(errors, lambda iq: iq["id"] == "v1")
        assert refusal(reply)[0] == "policy-violation"
        # bob's message takes the usual remote path: this server does not federate (yet)
        bob.send_message(mto="partner@elsewhere.net", mbody="outside", mtype="chat")
        assert refusal(await bob.next_message())[0] == "remote-server-not-found"


async def test_domains_served_here_are_not_federation(server):
    server.add_user(f"erin@{OTHER}", "erin-pw-55")
    async with login(server, "alice") as alice, \
               login(server, "bob") as bob, \
               client(server, f"erin@{OTHER}", "erin-pw-55") as erin:
        alice.send_message(mto=jid("bob"), mbody="same host", mtype="chat")
        assert (await bob.next_message())["body"] == "same host"
        alice.send_message(mto=f"erin@{OTHER}", mbody="another tenant of this server", mtype="chat")
        assert (await erin.next_message())["body"] == "another tenant of this server"
        disco = alice.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info", ito=UPLOAD)
        assert (await alice.query(disco))["type"] == "result"


# -- web_client -----------------------------------------------------------------------------------
async def test_a_contractor_cannot_sign_in_with_the_web_client(server):
    async with ws_connect(server) as ws:
        frames = await ws_login(ws, "alice", USERS["alice"])
        error = "".join(frames)
        assert "policy-violation" in error and "urn:ietf:params:xml:ns:xmpp-streams" in error, frames
        assert ("signing in with the web client is not allowed for members of group contractors; "
                "ask your administrator") in error
        assert "<jid>" not in error                           # never bound
    assert not server.run(lambda: server.server.sessions.is_online(JID("alice", DOMAIN, None)))
    # over TCP, alice signs in as usual; bob may use the web client
    async with login(server, "alice"):
        pass
    async with ws_connect(server) as ws:
        frames = await ws_login(ws, "bob", USERS["bob"])
        assert f"<jid>{jid('bob')}/web</jid>" in frames[-1]


# -- presence_outside_group -----------------------------------------------------------------------
async def befriend(a: Client, b: Client) -> None:
    """a and b subscribe to each other ('both')."""
    for x, y in ((a, b), (b, a)):
        x.send_presence(pto=y.boundjid.bare, ptype="subscribe")
        await y.next_of(y.subscription_requests)
        y.send_presence(pto=x.boundjid.bare, ptype="subscribed")
        await x.next_of(x.all_presence, lambda p: p["type"] == "subscribed")


def presence_from(c: Client, user: str) -> list[Any]:
    """Available presence of user@example.com that c received and did not take yet."""
    return [p for p in c.pending(c.presences) if p["from"].bare == jid(user) and p["type"] != "unavailable"]


async def test_presence_reaches_only_contacts_who_share_a_group(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob, login(server, "carol") as carol:
        await befriend(alice, bob)              # bob shares no group with alice
        await befriend(alice, carol)            # carol shares projectx with alice
        # alice changes her status: the broadcast goes to her subscribers, then back to her
        alice.send_presence(pstatus="in a meeting")
        seen = await carol.next_presence(jid("alice"), match=lambda p: p["status"] == "in a meeting")
        assert seen["type"] == "available"
        await alice.next_presence(str(alice.boundjid), match=lambda p: p["status"] == "in a meeting")
        await bob.roundtrip()                   # anything routed to bob before this has arrived
        assert presence_from(bob, "alice") == []
        # alice still sees bob (the rule is about her presence, not his)
        bob.send_presence(pstatus="at my desk")
        assert (await alice.next_presence(jid("bob"), match=lambda p: p["status"] == "at my desk")) is not None
    # probe answers: bob and carol log in while alice is online
    async with login(server, "alice") as alice:
        async with login(server, "carol") as carol:
            assert (await carol.next_presence(jid("alice")))["type"] == "available"
        async with login(server, "bob") as bob:
            await bob.roundtrip()               # the probes of bob's login are answered before this
            assert presence_from(bob, "alice") == []


async def test_presence_is_withheld_only_for_the_restricted_group(server):
    make_groups(server, {"helpdesk": ["dave"]})
    async with login(server, "bob") as bob, login(server, "dave") as dave:
        await befriend(bob, dave)               # neither is a contractor; no group in common
        dave.send_presence(pstatus="on call")
        assert (await bob.next_presence(jid("dave"), match=lambda p: p["status"] == "on call")) is not None
