"""Tenant isolation over XMPP: example.com (A) and other.org (B) are two tenants of one server.

A user of A reaches B's users the way a user of another server would: they can chat, but they
cannot read B's private data (roster, archive, private XML, vCard writes, PEP nodes shared with
contacts), see B's groups, enter B's members-only rooms or use B's upload service. The same local
name on both hosts is two accounts. A client never speaks as someone of the other tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slixmpp.xmlstream import ET

from stockade.testing.raw import RawStream
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client, client

from ..integration.test_muc_support import PLUGINS as MUC_PLUGINS, create, enter, enter_refused
from .conftest import make_groups

A, B = "example.com", "other.org"
ACCOUNTS = {f"alice@{A}": "alice-of-a-pw", f"dave@{A}": "dave-of-a-pw",
            f"alice@{B}": "alice-of-b-pw", f"bob@{B}": "bob-of-b-pw", f"carol@{B}": "carol-of-b-pw"}
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
PUBSUB = "http://jabber.org/protocol/pubsub"


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with RunningServer(domains=[A, B]) as srv:
        for address, password in ACCOUNTS.items():
            srv.add_user(address, password)
        yield srv


def login(server: RunningServer, address: str, **kwargs: Any):
    return client(server, address, ACCOUNTS[address], **kwargs)


async def iq(c: Client, itype: str, payload: str, to: str | None = None) -> Any:
    """c sends <iq type=itype to=to>payload</iq>; returns the answer, error or not."""
    request = c.make_iq_set(ito=to) if itype == "set" else c.make_iq_get(ito=to)
    request.xml.append(ET.fromstring(payload))
    return await c.query(request)


def condition(reply: Any) -> str:
    assert reply["type"] == "error", reply
    return reply["error"]["condition"]


async def befriend(a: Client, b: Client) -> None:
    for x, y in ((a, b), (b, a)):
        x.send_presence(pto=y.boundjid.bare, ptype="subscribe")
        await y.next_of(y.subscription_requests)
        y.send_presence(pto=x.boundjid.bare, ptype="subscribed")
        await x.next_of(x.all_presence, lambda p: p["type"] == "subscribed")


def roster_jids(reply: Any) -> set[str]:
    return {i.get("jid") for i in reply.xml.findall("{jabber:iq:roster}query/{jabber:iq:roster}item")}


# -- one local name, two accounts -----------------------------------------------------------------
async def test_the_same_name_on_two_hosts_is_two_accounts(server):
    # different passwords: each host checks its own
    wrong = Client(f"alice@{B}", ACCOUNTS[f"alice@{A}"], port=server.c2s_port, cert=server.cert_path)
    try:
        assert await wrong.login() is False
    finally:
        await wrong.close()
    # different rosters
    async with login(server, f"alice@{A}") as alice_a, login(server, f"dave@{A}") as dave:
        await befriend(alice_a, dave)
    async with login(server, f"alice@{B}") as alice_b:
        assert roster_jids(await iq(alice_b, "get", "<query xmlns='jabber:iq:roster'/>")) == set()
    # different offline messages: one for alice@B waits for alice@B only
    async with login(server, f"bob@{B}") as bob:
        bob.send_message(mto=f"alice@{B}", mbody="for alice of other.org", mtype="chat")
        await bob.roundtrip()
    async with login(server, f"alice@{A}") as alice_a:
        assert roster_jids(await iq(alice_a, "get", "<query xmlns='jabber:iq:roster'/>")) == {f"dave@{A}"}
        await alice_a.roundtrip()                   # offline messages come before this answer
        assert alice_a.pending(alice_a.messages) == []
    async with login(server, f"alice@{B}") as alice_b:
        msg = await alice_b.next_message()
        assert msg["body"] == "for alice of other.org" and str(msg["to"].bare) == f"alice@{B}"


# -- private data of B's users --------------------------------------------------------------------
async def test_a_user_of_a_cannot_read_the_private_data_of_b(server):
    async with login(server, f"alice@{A}") as alice, login(server, f"bob@{B}") as bob:
        secret = "<note xmlns='urn:example:notes'>the B plan</note>"
        assert (await iq(bob, "set", f"<query xmlns='jabber:iq:private'>{secret}</query>"))["type"] == "result"
        bob.send_message(mto=f"carol@{B}", mbody="archived at B", mtype="chat")
        await bob.roundtrip()
        # alice asks about bob's roster, archive, private XML: all <forbidden/>
        for itype, payload in (("get", "<query xmlns='jabber:iq:roster'/>"),
                               ("set", "<query xmlns='urn:xmpp:mam:2' queryid='peek'/>"),
                               ("get", "<query xmlns='jabber:iq:private'><note xmlns='urn:example:notes'/></query>"),
                               ("set", f"<query xmlns='jabber:iq:private'>{secret}</query>")):
            reply = await iq(alice, itype, payload, to=f"bob@{B}")
            assert condition(reply) == "forbidden", payload
            assert "the B plan" not in str(reply) and "archived at B" not in str(reply)
        await alice.roundtrip()
        assert all("archived at B" not in str(m) for m in alice.pending(alice.messages))
        # ... and her namesake's private XML is not hers
        reply = await iq(alice, "get", "<query xmlns='jabber:iq:private'><note xmlns='urn:example:notes'/></query>")
        assert reply["type"] == "result" and "the B plan" not in str(reply)


async def test_a_user_of_a_cannot_change_the_vcard_of_b(server):
    vcard = "<vCard xmlns='vcard-temp'><FN>{}</FN></vCard>"
    async with login(server, f"alice@{A}") as alice_a, login(server, f"alice@{B}") as alice_b:
        assert (await iq(alice_b, "set", vcard.format("Alice of B")))["type"] == "result"
        assert (await iq(alice_a, "set", vcard.format("Alice of A")))["type"] == "result"
        assert condition(await iq(alice_a, "set", vcard.format("Mallory"), to=f"alice@{B}")) == "forbidden"
        # vcard-temp is public (XEP-0054): reading is allowed, and shows B's own card
        card = await iq(alice_a, "get", "<vCard xmlns='vcard-temp'/>", to=f"alice@{B}")
        assert card.xml.find("{vcard-temp}vCard/{vcard-temp}FN").text == "Alice of B"
        own = await iq(alice_a, "get", "<vCard xmlns='vcard-temp'/>")
        assert own.xml.find("{vcard-temp}vCard/{vcard-temp}FN").text == "Alice of A"


async def test_pep_items_shared_with_contacts_stay_with_the_contacts(server):
    node = "urn:example:status"
    items = f"<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>"
    async with login(server, f"bob@{B}") as bob, login(server, f"carol@{B}") as carol, \
               login(server, f"alice@{A}") as alice:
        await befriend(bob, carol)
        publish = (f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='s1'>"
                   f"<status xmlns='urn:example'>at B</status></item></publish></pubsub>")
        assert (await iq(bob, "set", publish))["type"] == "result"   # the PEP default: access model presence
        assert "at B" in str(await iq(carol, "get", items, to=f"bob@{B}"))
        reply = await iq(alice, "get", items, to=f"bob@{B}")
        assert condition(reply) == "not-authorized" and "at B" not in str(reply)
        assert reply.xml.find(f"{{jabber:client}}error/{{{PUBSUB}#errors}}presence-subscription-required") is not None


# -- groups and shared rosters --------------------------------------------------------------------
async def test_shared_groups_of_b_do_not_reach_users_of_a(server):
    server.call(server.server.groups.create(A, "staff", shared=True))
    server.call(server.server.groups.set_members(A, "staff", add=["alice", "dave"]))
    server.call(server.server.groups.create(B, "staff", shared=True))
    server.call(server.server.groups.set_members(B, "staff", add=["alice", "bob", "carol"]))
    async with login(server, f"alice@{A}") as alice_a, login(server, f"alice@{B}") as alice_b:
        assert roster_jids(await iq(alice_a, "get", "<query xmlns='jabber:iq:roster'/>")) == {f"dave@{A}"}
        assert roster_jids(await iq(alice_b, "get", "<query xmlns='jabber:iq:roster'/>")) == {f"bob@{B}", f"carol@{B}"}
    assert [g.id for g in server.run(lambda: server.server.groups.groups_of(A, "bob"))] == []
    assert sorted(server.run(lambda: server.server.groups.shared_contacts(A, "alice"))) == ["dave"]


async def test_permissions_follow_the_groups_of_the_users_own_host(server):
    make_groups(server, {"contractors": ["alice"]}, host=B)
    server.call(server.server.permissions.set(B, "upload", ["contractors"]))
    perms = server.server.permissions
    assert server.run(lambda: perms.may(A, "alice", "upload")) is True
    assert server.run(lambda: perms.may(B, "alice", "upload")) is False


# -- rooms and uploads of B -----------------------------------------------------------------------
async def test_a_user_of_a_cannot_enter_a_members_only_room_of_b(server):
    room = f"board@conference.{B}"
    async with login(server, f"bob@{B}", plugins=MUC_PLUGINS) as bob, \
               login(server, f"carol@{B}", plugins=MUC_PLUGINS) as carol, \
               login(server, f"alice@{A}", plugins=MUC_PLUGINS) as alice:
        await create(bob, room, "Bob", membersonly=True, enablelogging=True)
        affiliate = (f"<query xmlns='http://jabber.org/protocol/muc#admin'>"
                     f"<item affiliation='member' jid='carol@{B}'/></query>")
        assert (await iq(bob, "set", affiliate, to=room))["type"] == "result"
        await enter(carol, room, "Carol")
        assert await enter_refused(alice, room, "Alice") == "registration-required"
        reply = await iq(alice, "set", "<query xmlns='urn:xmpp:mam:2'/>", to=room)
        assert condition(reply) == "forbidden"


async def test_a_user_of_a_cannot_create_a_room_on_the_service_of_b(server):
    async with login(server, f"alice@{A}", plugins=MUC_PLUGINS) as alice:
        assert await enter_refused(alice, f"alices-room@conference.{B}", "Alice") == "not-allowed"
        await create(alice, f"alices-room@conference.{A}", "Alice")        # on her own host's service


async def test_a_user_of_a_cannot_use_the_upload_service_of_b(server):
    request = "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='5' content-type='text/plain'/>"
    async with login(server, f"alice@{A}") as alice, login(server, f"bob@{B}") as bob:
        reply = await iq(alice, "get", request, to=f"upload.{B}")
        assert condition(reply) == "forbidden"
        assert reply["error"]["text"] == f"only users of {B} may upload files here; users of {A} upload to upload.{A}"
        assert (await iq(bob, "get", request, to=f"upload.{B}"))["type"] == "result"


# -- no speaking for the other tenant -------------------------------------------------------------
async def test_a_forged_from_of_b_is_replaced_by_the_real_sender(server):
    async with login(server, f"carol@{B}") as carol:
        raw = await RawStream.open(server, domain=A)
        try:
            await raw.login("alice", ACCOUNTS[f"alice@{A}"], resource="raw")
            await raw.send(f"<message from='bob@{B}/desk' to='carol@{B}' type='chat'><body>I am bob</body></message>")
            msg = await carol.next_message()
            assert msg["body"] == "I am bob" and str(msg["from"]) == f"alice@{A}/raw"
            # an IQ that claims to be bob asking about his own private XML is alice asking about bob's
            await raw.send(f"<iq type='get' id='p1' from='bob@{B}/desk' to='bob@{B}'>"
                           f"<query xmlns='jabber:iq:private'><note xmlns='urn:example:notes'/></query></iq>")
            answer = await raw.read_until(b"</iq>")
            assert b"<forbidden" in answer and f"to=\"alice@{A}/raw\"".encode() in answer
        finally:
            await raw.close()
