"""RFC 6121 section 3: subscription handshakes, stored requests, pre-approval, no presence leaks."""

from __future__ import annotations

from stockade.testing.raw import RawStream
from stockade.testing.xmpp import client

from .conftest import USERS, jid
from .test_roster import NS, items, roster_iq


def sub_state(reply, who: str) -> tuple[str | None, str | None]:
    item = items(reply).get(who)
    return (None, None) if item is None else (item.get("subscription"), item.get("ask"))


async def roster_of(c):
    return await c.query(roster_iq(c, "get"))


async def test_full_handshake_gives_both(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        # alice asks; her roster shows the pending request; bob is asked from alice's bare JID
        alice.send_presence(pto=jid("bob"), ptype="subscribe")
        request = await bob.next_of(bob.subscription_requests)
        assert str(request["from"]) == jid("alice")
        assert sub_state(await roster_of(alice), jid("bob")) == ("none", "subscribe")
        # bob approves: alice gets 'subscribed', her roster says 'to', and she sees bob online
        bob.send_presence(pto=jid("alice"), ptype="subscribed")
        await alice.next_of(alice.all_presence, lambda p: p["type"] == "subscribed")
        online = await alice.next_presence(jid("bob"))
        assert online["type"] == "available" and online["from"] == bob.boundjid
        assert sub_state(await roster_of(alice), jid("bob")) == ("to", None)
        assert sub_state(await roster_of(bob), jid("alice")) == ("from", None)
        # the other direction makes it mutual
        bob.send_presence(pto=jid("alice"), ptype="subscribe")
        await alice.next_of(alice.subscription_requests)
        alice.send_presence(pto=jid("bob"), ptype="subscribed")
        await bob.next_presence(jid("alice"))
        assert sub_state(await roster_of(alice), jid("bob")) == ("both", None)
        assert sub_state(await roster_of(bob), jid("alice")) == ("both", None)


async def test_a_request_to_an_offline_user_waits_for_the_next_login(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        alice.send_presence(pto=jid("dave"), ptype="subscribe")
        await alice.next_of(alice.roster_pushes, lambda p: sub_state(p, jid("dave"))[1] == "subscribe")
    async with client(server, jid("dave"), USERS["dave"]) as dave:
        request = await dave.next_of(dave.subscription_requests)
        assert str(request["from"]) == jid("alice")
    async with client(server, jid("dave"), USERS["dave"]) as dave:
        # not answered yet: delivered again at the next login
        again = await dave.next_of(dave.subscription_requests)
        assert str(again["from"]) == jid("alice")
        dave.send_presence(pto=jid("alice"), ptype="unsubscribed")
        await dave.next_of(dave.all_presence, lambda p: p["from"] == dave.boundjid)   # own presence echo
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        assert sub_state(await roster_of(alice), jid("dave")) == ("none", None)


async def test_pre_approval_answers_for_the_user(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        bob.send_presence(pto=jid("carol"), ptype="subscribed")     # before carol asks
        push = await bob.next_of(bob.roster_pushes, lambda p: jid("carol") in items(p))
        assert items(push)[jid("carol")].get("approved") == "true"
        async with client(server, jid("carol"), USERS["carol"]) as carol:
            carol.send_presence(pto=jid("bob"), ptype="subscribe")
            await carol.next_of(carol.all_presence, lambda p: p["type"] == "subscribed")
            assert sub_state(await roster_of(carol), jid("bob")) == ("to", None)
            assert bob.pending(bob.subscription_requests) == []       # bob was never asked
            assert sub_state(await roster_of(bob), jid("carol")) == ("from", None)


async def test_unsubscribe_stops_presence(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        alice.send_presence(pto=jid("bob"), ptype="subscribe")
        await bob.next_of(bob.subscription_requests)
        bob.send_presence(pto=jid("alice"), ptype="subscribed")
        await alice.next_presence(jid("bob"))
        alice.send_presence(pto=jid("bob"), ptype="unsubscribe")
        await alice.next_of(alice.roster_pushes, lambda p: sub_state(p, jid("bob")) == ("none", None))
        # bob loses his 'from'; alice gets bob's unavailable presence when bob's side processes it
        await bob.next_of(bob.roster_pushes, lambda p: sub_state(p, jid("alice")) == ("none", None))
        bob.send_presence(pstatus="busy")
        await bob.next_presence(str(bob.boundjid), match=lambda p: p["status"] == "busy")   # echo to bob
        # alice must not get the update: ask the server for a round trip, then look
        await alice.query(roster_iq(alice, "get"))
        assert all(p["status"] != "busy" for p in alice.pending(alice.presences))


async def test_presence_does_not_leak_to_strangers(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("carol"), USERS["carol"]) as carol:
        alice.send_presence(pstatus="in a meeting")
        await alice.next_presence(str(alice.boundjid), match=lambda p: p["status"] == "in a meeting")
        # carol probes alice: she learns nothing (a ping round trip shows nothing came back first)
        raw = await RawStream.open(server)
        await raw.login("carol", USERS["carol"], resource="raw")
        await raw.send(f"<presence type='probe' to='{jid('alice')}'/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        answer = await raw.read_until(r"id=\"p1\"[^>]*/>|id=\"p1\".*?</iq>")
        assert b"<presence" not in answer
        # an IQ to alice's full JID would reveal that this resource is online
        await raw.send(f"<iq type='get' id='v1' to='{alice.boundjid}'><query xmlns='jabber:iq:version'/></iq>")
        assert b"<service-unavailable" in await raw.read_until(b"</iq>")
        # disco on alice's account is answered only for contacts
        await raw.send(f"<iq type='get' id='d1' to='{jid('alice')}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        assert b"<service-unavailable" in await raw.read_until(b"</iq>")
        await raw.close()
        # and carol's slixmpp client never received alice's presence
        await carol.query(roster_iq(carol, "get"))
        assert all(p["from"].bare != jid("alice") for p in carol.pending(carol.presences))


async def test_subscription_stanzas_carry_the_bare_jid(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        raw = await RawStream.open(server)
        await raw.login("alice", USERS["alice"], resource="desk")
        await raw.send(f"<presence type='subscribe' to='{jid('bob')}/somewhere'/>")
        request = await bob.next_of(bob.subscription_requests)
        assert str(request["from"]) == jid("alice") and str(request["to"]) == jid("bob")
        await raw.close()


async def test_roster_remove_cancels_both_directions(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        for a, b, name in ((alice, bob, "bob"), (bob, alice, "alice")):
            a.send_presence(pto=jid(name), ptype="subscribe")
            await b.next_of(b.subscription_requests)
            b.send_presence(pto=a.boundjid.bare, ptype="subscribed")
        await alice.next_of(alice.roster_pushes, lambda p: sub_state(p, jid("bob"))[0] == "both")
        await alice.query(roster_iq(alice, "set", f"<item xmlns='{NS}' jid='{jid('bob')}' subscription='remove'/>"))
        await bob.next_of(bob.roster_pushes, lambda p: sub_state(p, jid("alice"))[0] == "none")
        gone = await bob.next_presence(jid("alice"), match=lambda p: p["type"] == "unavailable")
        assert gone["from"].bare == jid("alice")
