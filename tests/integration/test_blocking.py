"""XEP-0191 blocking command: the blocklist, pushes, and what a block stops in both directions."""

from __future__ import annotations

import asyncio

from slixmpp.jid import JID as SlixJID
from slixmpp.xmlstream import ET

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client, client

from .conftest import DOMAIN, USERS, jid
from .test_presence import befriend

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
PLUGINS = ("xep_0030", "xep_0191", "xep_0199")


def blocking_client(server, user: str, resource: str | None = None, **kwargs):
    address = user if "@" in user else jid(user)
    password = USERS.get(address.split("@")[0], "eve-pw-555")
    return client(server, f"{address}/{resource}" if resource else address, password, plugins=PLUGINS, **kwargs)


def watch_pushes(c: Client) -> asyncio.Queue:
    pushes: asyncio.Queue = asyncio.Queue()
    c.add_event_handler("blocked", pushes.put_nowait)
    c.add_event_handler("unblocked", pushes.put_nowait)
    return pushes


def items(iq, name: str) -> set[str]:
    return {str(item["jid"]) for item in iq[name]}


async def block(c: Client, *jids: str) -> None:
    await c.plugin["xep_0191"].block([SlixJID(j) for j in jids])


async def unblock(c: Client, *jids: str) -> None:
    await c.plugin["xep_0191"].unblock([SlixJID(j) for j in jids])


async def nothing_more(receiver: Client, *senders: Client) -> None:
    """Every sender's stanzas have been handled, then everything for `receiver` has arrived."""
    for sender in senders:
        await sender.roundtrip()
    await receiver.roundtrip()


async def test_block_unblock_and_list_with_pushes_to_every_interested_resource(server):
    async with blocking_client(server, "alice", "laptop") as laptop, \
               blocking_client(server, "alice", "phone") as phone, \
               blocking_client(server, "alice", "tablet") as tablet:
        pushes = {c: watch_pushes(c) for c in (laptop, phone, tablet)}
        assert await laptop.plugin["xep_0191"].get_blocked_jids() == set()
        assert await phone.plugin["xep_0191"].get_blocked_jids() == set()     # tablet never asks
        await block(laptop, jid("bob"), "other.org")
        for c in (laptop, phone):
            push = await c.next_of(pushes[c])
            assert push["type"] == "set" and items(push, "block") == {jid("bob"), "other.org"}
        assert {str(j) for j in await phone.plugin["xep_0191"].get_blocked_jids()} == {jid("bob"), "other.org"}
        await unblock(phone, jid("bob"))
        for c in (laptop, phone):
            assert items(await c.next_of(pushes[c]), "unblock") == {jid("bob")}
        iq = laptop.make_iq_set()
        iq.enable("unblock")                                   # empty <unblock/>: unblock all
        assert (await laptop.query(iq))["type"] == "result"
        for c in (laptop, phone):
            push = await c.next_of(pushes[c])
            assert push.xml.find(f"{{{NS_BLOCKING}}}unblock") is not None and items(push, "unblock") == set()
        assert await laptop.plugin["xep_0191"].get_blocked_jids() == set()
        await tablet.roundtrip()
        assert tablet.pending(pushes[tablet]) == []
        info = await laptop.plugin["xep_0030"].get_info(jid=DOMAIN)
        assert NS_BLOCKING in info["disco_info"]["features"]


async def test_a_blocked_users_message_is_bounced_and_never_stored(server):
    async with blocking_client(server, "alice") as alice:
        await block(alice, jid("bob"))
        async with blocking_client(server, "bob") as bob:
            bob.send_message(mto=jid("alice"), mbody="while you are here", mtype="chat")
            error = await bob.next_message()
            assert error["type"] == "error" and error["error"]["condition"] == "service-unavailable"
            # nothing that tells bob he is blocked: the same error an unknown account gives
            assert not error["error"]["text"]
            await nothing_more(alice, bob)
            assert alice.pending(alice.messages) == []
    async with blocking_client(server, "bob") as bob:
        bob.send_message(mto=jid("alice"), mbody="for your offline storage", mtype="chat")
        error = await bob.next_message()
        assert error["error"]["condition"] == "service-unavailable"
    async with blocking_client(server, "alice") as alice:
        await alice.roundtrip()                       # offline messages come with initial presence
        assert alice.pending(alice.messages) == []


async def test_presence_and_iq_from_a_blocked_user_do_not_arrive(server):
    async with blocking_client(server, "alice") as alice, blocking_client(server, "bob") as bob, \
               blocking_client(server, "dave") as dave:
        await befriend(alice, bob)
        await block(alice, jid("bob"), jid("dave"))
        bob.send_presence(pstatus="still here")
        dave.send_presence(pto=jid("alice"), ptype="subscribe")
        await nothing_more(alice, bob, dave)
        assert [p for p in alice.pending(alice.presences) if p["status"] == "still here"] == []
        assert alice.pending(alice.subscription_requests) == []
        assert [p for p in dave.pending(dave.all_presence) if p["type"] == "error"] == []   # silently
        iq = bob.make_iq_get(ito=jid("alice"))
        iq.enable("disco_info")
        reply = await bob.query(iq)
        assert reply["type"] == "error" and reply["error"]["condition"] == "service-unavailable"


async def test_the_blocker_goes_offline_for_the_blocked_contact_until_unblocked(server):
    async with blocking_client(server, "alice") as alice, blocking_client(server, "bob") as bob:
        await befriend(alice, bob)
        alice.send_presence(pstatus="around")
        await bob.next_presence(str(alice.boundjid), match=lambda p: p["status"] == "around")
        await block(alice, jid("bob"))
        gone = await bob.next_presence(str(alice.boundjid), match=lambda p: p["type"] == "unavailable")
        assert gone["from"] == alice.boundjid
        alice.send_presence(pstatus="busy")
        await nothing_more(bob, alice)
        assert [p for p in bob.pending(bob.presences) if p["status"] == "busy"] == []
        await unblock(alice, jid("bob"))
        back = await bob.next_presence(str(alice.boundjid), match=lambda p: p["status"] == "busy")
        assert back["type"] == "available"


async def test_the_blocker_cannot_reach_the_blocked_jid_but_still_its_server(server):
    async with blocking_client(server, "alice") as alice, blocking_client(server, "bob") as bob:
        await block(alice, jid("bob"), DOMAIN)
        alice.send_message(mto=jid("bob"), mbody="are you there?", mtype="chat")
        error = await alice.next_message()
        assert error["type"] == "error" and error["error"]["condition"] == "not-acceptable"
        assert error.xml.find(f"{{jabber:client}}error/{{{NS_BLOCKING_ERRORS}}}blocked") is not None
        assert error["body"] == "are you there?"
        ping = alice.make_iq_get(ito=str(bob.boundjid))
        ping.enable("ping")
        reply = await alice.query(ping)
        assert reply["error"]["condition"] == "not-acceptable"
        await alice.roundtrip()                     # a blocked own domain still answers its users
        alice.send_message(mto=jid("carol"), mbody="anyone at example.com", mtype="chat")
        assert (await alice.next_message())["error"]["condition"] == "not-acceptable"
        await nothing_more(bob, alice)
        assert bob.pending(bob.messages) == []
        await unblock(alice, DOMAIN, jid("bob"))    # the unblock request itself gets through
        alice.send_message(mto=jid("bob"), mbody="better now", mtype="chat")
        assert (await bob.next_message())["body"] == "better now"


async def test_domain_and_full_jid_blocks(server):
    server.add_user("eve@other.org", "eve-pw-555")
    async with blocking_client(server, "alice") as alice, \
               blocking_client(server, "eve@other.org") as eve, \
               blocking_client(server, "bob", "phone") as bob_phone, \
               blocking_client(server, "bob", "laptop") as bob_laptop:
        await block(alice, "other.org", jid("bob") + "/phone")
        eve.send_message(mto=jid("alice"), mbody="from a blocked domain", mtype="chat")
        bob_phone.send_message(mto=jid("alice"), mbody="from a blocked resource", mtype="chat")
        for sender in (eve, bob_phone):
            assert (await sender.next_message())["error"]["condition"] == "service-unavailable"
        bob_laptop.send_message(mto=jid("alice"), mbody="from another resource", mtype="chat")
        assert (await alice.next_message())["body"] == "from another resource"
        await nothing_more(alice, eve, bob_phone)
        assert alice.pending(alice.messages) == []


async def test_bad_blocking_requests_are_refused_with_a_reason(server):
    async with blocking_client(server, "alice") as alice, blocking_client(server, "bob") as bob:
        def request(c: Client, name: str, *jids: str, to: str | None = None):
            iq = c.make_iq_get(ito=to) if name == "blocklist" else c.make_iq_set(ito=to)
            el = ET.SubElement(iq.xml, f"{{{NS_BLOCKING}}}{name}")
            for j in jids:
                ET.SubElement(el, f"{{{NS_BLOCKING}}}item", {"jid": j})
            return c, iq
        for (c, iq), condition in ((request(alice, "block"), "bad-request"),
                                   (request(alice, "block", "bad@@jid"), "jid-malformed"),
                                   (request(alice, "block", jid("alice") + "/other"), "not-acceptable"),
                                   (request(bob, "blocklist", to=jid("alice")), "forbidden"),
                                   (request(bob, "block", jid("carol"), to=jid("alice")), "forbidden")):
            reply = await c.query(iq)
            assert reply["type"] == "error" and reply["error"]["condition"] == condition, reply
            assert reply["error"]["text"]
        assert await alice.plugin["xep_0191"].get_blocked_jids() == set()


async def test_a_blocklist_is_bounded():
    with RunningServer([DOMAIN], config={"modules": {"blocking": {"max_items": 2}}}) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        async with blocking_client(srv, "alice") as alice:
            await block(alice, jid("bob"), jid("carol"))
            iq = alice.make_iq_set()
            ET.SubElement(ET.SubElement(iq.xml, f"{{{NS_BLOCKING}}}block"), f"{{{NS_BLOCKING}}}item",
                          {"jid": jid("dave")})
            reply = await alice.query(iq)
            assert reply["error"]["condition"] == "not-acceptable" and "2" in reply["error"]["text"]


async def test_blocklists_survive_a_restart_and_apply_to_offline_users(tmp_path):
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        srv.add_user(jid("bob"), USERS["bob"])
        async with blocking_client(srv, "alice") as alice:
            await block(alice, jid("bob"))
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        async with blocking_client(srv, "bob") as bob:
            bob.send_message(mto=jid("alice"), mbody="after the restart", mtype="chat")
            assert (await bob.next_message())["error"]["condition"] == "service-unavailable"
        async with blocking_client(srv, "alice") as alice:
            assert {str(j) for j in await alice.plugin["xep_0191"].get_blocked_jids()} == {jid("bob")}
            await alice.roundtrip()
            assert alice.pending(alice.messages) == []


async def test_logging_in_does_not_leak_presence_across_a_block(server):
    async with blocking_client(server, "alice") as alice, blocking_client(server, "bob") as bob:
        await befriend(alice, bob)
        await block(alice, jid("bob"))
    async with blocking_client(server, "alice") as alice:
        alice.send_presence(pstatus="alice is in")
        await alice.roundtrip()
        async with blocking_client(server, "bob") as bob:       # bob's login probes alice
            await nothing_more(bob, alice)
            assert [p for p in bob.pending(bob.presences) if p["from"].bare == jid("alice")
                    and p["type"] != "unavailable"] == []


async def test_logging_in_does_not_bring_a_blocked_contacts_presence(server):
    async with blocking_client(server, "alice") as alice, blocking_client(server, "bob") as bob:
        await befriend(alice, bob)
        await block(alice, jid("bob"))
        bob.send_presence(pstatus="bob is in")
        await bob.roundtrip()
        async with blocking_client(server, "alice", "phone") as phone:    # the login probes bob
            await nothing_more(phone, bob)
            assert [p for p in phone.pending(phone.presences) if p["from"].bare == jid("bob")] == []


async def test_removing_an_account_deletes_its_blocklist(server):
    async with blocking_client(server, "alice") as alice:
        await block(alice, jid("bob"))
    await server.acall(server.server.accounts.remove(DOMAIN, "alice"))
    server.add_user(jid("alice"), USERS["alice"])
    async with blocking_client(server, "alice") as alice, blocking_client(server, "bob") as bob:
        assert await alice.plugin["xep_0191"].get_blocked_jids() == set()
        bob.send_message(mto=jid("alice"), mbody="a fresh start", mtype="chat")
        assert (await alice.next_message())["body"] == "a fresh start"
