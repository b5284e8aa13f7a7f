"""RFC 6121 section 4: initial presence and probes, broadcast, unavailable on disconnect,
directed presence, priorities and several resources."""

from __future__ import annotations

from stockade.testing.xmpp import Client, client

from .conftest import USERS, jid


async def befriend(a, b) -> None:
    """a and b subscribe to each other ('both')."""
    for x, y in ((a, b), (b, a)):
        x.send_presence(pto=y.boundjid.bare, ptype="subscribe")
        await y.next_of(y.subscription_requests)
        y.send_presence(pto=x.boundjid.bare, ptype="subscribed")
        await x.next_of(x.all_presence, lambda p: p["type"] == "subscribed")


async def test_login_brings_contacts_presence_and_announces_ours(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        await befriend(alice, bob)
        bob.send_presence(pshow="away", pstatus="lunch")
        await alice.next_presence(jid("bob"), match=lambda p: p["status"] == "lunch")
        # alice logs in again from her phone: she learns bob's presence (the probe) ...
        async with client(server, jid("alice") + "/phone", USERS["alice"], presence=False) as phone:
            phone.send_presence(pstatus="on the go")
            seen = await phone.next_presence(jid("bob"))
            assert seen["show"] == "away" and seen["status"] == "lunch"
            # ... and her laptop's presence; bob and the laptop see the phone come online
            laptop = await phone.next_presence(str(alice.boundjid))
            assert laptop["type"] == "available"
            assert (await bob.next_presence(jid("alice") + "/phone"))["status"] == "on the go"
            assert (await alice.next_presence(jid("alice") + "/phone"))["status"] == "on the go"


async def test_a_dropped_connection_broadcasts_unavailable(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        alice = Client(jid("alice"), USERS["alice"], port=server.c2s_port, cert=server.cert_path)
        assert await alice.login()
        await befriend(alice, bob)
        full = str(alice.boundjid)
        alice.abort_connection()                      # no </stream:stream>, no unavailable
        gone = await bob.next_presence(full, match=lambda p: p["type"] == "unavailable")
        assert str(gone["from"]) == full
        await alice.close()


async def test_directed_presence_reaches_a_stranger_and_ends_with_unavailable(server):
    async with client(server, jid("carol"), USERS["carol"]) as carol:
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            alice.send_presence(pto=jid("carol"), pstatus="hello carol")
            hello = await carol.next_presence(jid("alice"))
            assert hello["status"] == "hello carol"
            alice.send_presence(pstatus="broadcast only")      # carol is not a subscriber
            await alice.next_presence(str(alice.boundjid), match=lambda p: p["status"] == "broadcast only")
        # alice logged out: carol, who got directed presence, is told
        bye = await carol.next_presence(jid("alice"), match=lambda p: p["type"] == "unavailable")
        assert bye["from"].bare == jid("alice")
        assert all(p["status"] != "broadcast only" for p in carol.pending(carol.presences))


async def test_bare_jid_messages_go_to_the_highest_priority(server):
    async with client(server, jid("alice") + "/desk", USERS["alice"], presence=False) as desk, \
               client(server, jid("alice") + "/phone", USERS["alice"], presence=False) as phone, \
               client(server, jid("alice") + "/hidden", USERS["alice"], presence=False) as hidden, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        desk.send_presence(ppriority=10)
        phone.send_presence(ppriority=1)
        hidden.send_presence(ppriority=-1)
        for c in (desk, phone, hidden):
            for other in ("desk", "phone", "hidden"):
                await c.next_presence(jid("alice") + "/" + other)
        bob.send_message(mto=jid("alice"), mbody="to the best one", mtype="chat")
        assert (await desk.next_message())["body"] == "to the best one"
        bob.send_message(mto=jid("alice") + "/hidden", mbody="straight to hidden", mtype="chat")
        assert (await hidden.next_message())["body"] == "straight to hidden"
        # headline goes to every non-negative resource
        bob.send_message(mto=jid("alice"), mbody="news", mtype="headline")
        assert (await desk.next_message())["body"] == "news"
        assert (await phone.next_message())["body"] == "news"
        # the phone and the hidden resource got nothing else
        assert phone.pending(phone.messages) == [] and hidden.pending(hidden.messages) == []


async def test_a_lone_negative_priority_session_gets_no_bare_jid_messages(server):
    """RFC 6121 8.5.2.2: with only a negative-priority resource online, a chat message to the
    bare JID is kept offline, not delivered to it; the next resource with presence gets it."""
    async with client(server, jid("alice") + "/hidden", USERS["alice"], presence=False) as hidden, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        hidden.send_presence(ppriority=-1)
        await hidden.next_presence(jid("alice") + "/hidden")
        bob.send_message(mto=jid("alice"), mbody="kept for later", mtype="chat")
        bob.send_message(mto=jid("alice") + "/hidden", mbody="straight to hidden", mtype="chat")
        assert (await hidden.next_message())["body"] == "straight to hidden"
        async with client(server, jid("alice") + "/desk", USERS["alice"]) as desk:
            assert (await desk.next_message())["body"] == "kept for later"
        assert hidden.pending(hidden.messages) == []


async def test_a_message_to_an_offline_resource_of_an_online_user_goes_to_the_bare_jid(server):
    async with client(server, jid("alice") + "/desk", USERS["alice"]) as desk, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        bob.send_message(mto=jid("alice") + "/gone", mbody="where are you", mtype="chat")
        assert (await desk.next_message())["body"] == "where are you"
        bob.send_message(mto=jid("alice") + "/gone", mbody="normal", mtype="normal")
        error = await bob.next_message()
        assert error["type"] == "error" and error["error"]["condition"] == "service-unavailable"
