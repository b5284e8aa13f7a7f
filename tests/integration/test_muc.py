"""XEP-0045 occupant use cases on conference.example.com, with real slixmpp clients:
discovery, creating rooms, entering (presence, history, subject), nick and status changes,
private messages, leaving (also by a dropped connection) and XEP-0410 self-ping."""

from __future__ import annotations

from slixmpp.xmlstream import ET

from stockade.testing.xmpp import Client

from .conftest import DOMAIN, USERS, jid
from .test_muc_support import (NS_USER, PLUGINS, SERVICE, codes, configure, create, enter, enter_refused,
                               error_condition, groupchat_from, item, message_from, muc_client, presence_from, room, watch)

LOUNGE = room("lounge")


async def test_the_service_is_listed_on_the_host_and_describes_itself(server):
    async with muc_client(server, "alice") as alice:
        disco = alice.plugin["xep_0030"]
        items = await disco.get_items(jid=DOMAIN)
        assert (SERVICE, None, "Chatrooms") in items["disco_items"]["items"]
        info = await disco.get_info(jid=SERVICE)
        assert ("conference", "text", None, "Chatrooms") in info["disco_info"]["identities"]
        assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
        assert "conference.other.org" in [i[0] for i in (await disco.get_items(jid="other.org"))["disco_items"]["items"]]


async def test_the_first_to_enter_creates_a_locked_room_that_opens_once_configured(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        # alice sends <presence to='lounge@.../Alice'><x xmlns='...muc'/></presence>: she owns the new room
        own, subject, occupants, history = await enter(alice, LOUNGE, "Alice")
        assert {110, 201} <= codes(own)
        assert item(own).get("affiliation") == "owner" and item(own).get("role") == "moderator"
        assert not subject["subject"] and history == []
        # until she configures it, the room is locked: bob is told it does not exist
        assert await enter_refused(bob, LOUNGE, "Bob") == "item-not-found"
        form = await alice.plugin["xep_0045"].get_room_config(LOUNGE)
        assert form.get_values()["muc#roomconfig_whois"] == "moderators"
        reply = await configure(alice, LOUNGE, roomname="The Lounge", roomdesc="Coffee and chat",
                                persistentroom=False)
        assert reply["type"] == "result"
        await enter(bob, LOUNGE, "Bob")
        info = await bob.plugin["xep_0030"].get_info(jid=LOUNGE)
        assert ("conference", "text", None, "The Lounge") in info["disco_info"]["identities"]
        assert {"http://jabber.org/protocol/muc", "muc_public", "muc_temporary", "muc_open", "muc_unmoderated",
                "muc_semianonymous", "muc_unsecured"} <= set(info["disco_info"]["features"])
        listed = await bob.plugin["xep_0030"].get_items(jid=SERVICE)
        assert (LOUNGE, None, "The Lounge") in listed["disco_items"]["items"]


async def test_an_instant_room_opens_at_once_and_hidden_rooms_are_not_listed(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")                      # <x type='submit'/>: instant room
        await enter(bob, LOUNGE, "Bob")
        await create(alice, room("backstage"), "Alice", publicroom=False)
        listed = [i[0] for i in (await bob.plugin["xep_0030"].get_items(jid=SERVICE))["disco_items"]["items"]]
        assert LOUNGE in listed and room("backstage") not in listed
        info = await bob.plugin["xep_0030"].get_info(jid=room("backstage"))
        assert "muc_hidden" in info["disco_info"]["features"]


async def test_three_people_see_each_other_enter_with_history_and_subject(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice")
        alice.plugin["xep_0045"].set_subject(LOUNGE, "Quarterly planning")
        for n in (1, 2, 3):
            alice.send_message(mto=LOUNGE, mbody=f"point {n}", mtype="groupchat")
            await groupchat_from(alice, LOUNGE + "/Alice")
        # bob asks for the last two messages only
        own, subject, occupants, history = await enter(bob, LOUNGE, "Bob", maxstanzas=2)
        assert [m["body"] for m in history] == ["point 2", "point 3"]
        for m in history:
            assert str(m["from"]) == LOUNGE + "/Alice"
            assert m["delay"]["from"] == LOUNGE                    # stamped by the room, no real JID
        assert subject["subject"] == "Quarterly planning" and str(subject["from"]) == LOUNGE + "/Alice"
        assert [str(p["from"]) for p in occupants] == [LOUNGE + "/Alice", LOUNGE + "/Bob"]   # own presence last
        assert item(own).get("role") == "participant" and item(own).get("jid") is None
        # alice (a moderator) learns bob's real JID; bob, a participant, does not learn hers
        seen = await presence_from(alice, LOUNGE + "/Bob")
        assert item(seen).get("jid") == str(bob.boundjid)
        assert item(occupants[0]).get("jid") is None
        # carol asks for no history at all: she still gets the subject
        _, subject, _, history = await enter(carol, LOUNGE, "Carol", maxchars=0)
        assert history == [] and subject["subject"] == "Quarterly planning"
        # a message to the room reaches everyone, from the sender's occupant JID
        carol.send_message(mto=LOUNGE, mbody="hello all", mtype="groupchat")
        for c in (alice, bob, carol):
            msg = await groupchat_from(c, LOUNGE + "/Carol")
            assert msg["body"] == "hello all"


async def test_history_since_a_time_and_on_request_by_seconds(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        alice.send_message(mto=LOUNGE, mbody="old news", mtype="groupchat")
        await groupchat_from(alice, LOUNGE + "/Alice")
        _, _, _, history = await enter(bob, LOUNGE, "Bob", seconds=3600)
        assert [m["body"] for m in history] == ["old news"]
        bob.plugin["xep_0045"].leave_muc(LOUNGE, "Bob")
        await presence_from(alice, LOUNGE + "/Bob", lambda p: p["type"] == "unavailable")
        from datetime import datetime, timedelta, timezone
        _, _, _, history = await enter(bob, LOUNGE, "Bob", since=datetime.now(timezone.utc) + timedelta(hours=1))
        assert history == []


async def test_a_taken_or_blank_nickname_is_refused(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        assert await enter_refused(bob, LOUNGE, "Alice") == "conflict"
        assert await enter_refused(bob, LOUNGE, "   ") == "jid-malformed"
        assert await enter_refused(bob, LOUNGE, "x" * 65) == "not-acceptable"
        # spaces around a nickname are taken off, and bob is told his nickname was changed (210)
        own, _, _, _ = await enter(bob, LOUNGE, "  Bob ")
        assert str(own["from"]) == LOUNGE + "/Bob" and {110, 210} <= codes(own)


async def test_nickname_and_status_changes_are_broadcast(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        await presence_from(alice, LOUNGE + "/Bob")
        # bob sends presence to lounge@.../Robert: unavailable with 303 and the new nick, then available
        new_nick = await bob.plugin["xep_0045"].set_self_nick(LOUNGE, "Robert", timeout=20)
        assert new_nick == "Robert"
        gone = await presence_from(alice, LOUNGE + "/Bob")
        assert gone["type"] == "unavailable" and 303 in codes(gone) and item(gone).get("nick") == "Robert"
        back = await presence_from(alice, LOUNGE + "/Robert")
        assert back["type"] == "available" and item(back).get("role") == "participant"
        bob.send_presence(pto=LOUNGE + "/Robert", pshow="away", pstatus="lunch")
        away = await presence_from(alice, LOUNGE + "/Robert")
        assert away["show"] == "away" and away["status"] == "lunch"
        # a nickname somebody else uses cannot be taken over
        bob.send_presence(pto=LOUNGE + "/Alice")
        refused = await presence_from(bob, LOUNGE + "/Alice", lambda p: p["type"] == "error")
        assert error_condition(refused) == "conflict"


async def test_private_messages_go_between_occupant_jids(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        bob.send_message(mto=LOUNGE + "/Alice", mbody="psst", mtype="chat")
        pm = await alice.next_message()
        assert str(pm["from"]) == LOUNGE + "/Bob" and pm["type"] == "chat" and pm["body"] == "psst"
        assert pm.xml.find(f"{{{NS_USER}}}x") is not None            # marked as coming through a room
        assert jid("bob") not in str(pm)                              # bob's real JID stays hidden
        bob.send_message(mto=LOUNGE + "/Nobody", mbody="hello?", mtype="chat")
        assert error_condition(await bob.next_message()) == "item-not-found"
        bob.send_message(mto=LOUNGE + "/Alice", mbody="wrong type", mtype="groupchat")
        assert error_condition(await bob.next_message()) == "bad-request"


async def test_a_non_anonymous_room_shows_real_jids_and_warns(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        assert (await configure(alice, LOUNGE, whois="anyone"))["type"] == "result"
        change = await message_from(alice, LOUNGE, lambda m: m.xml.find(f"{{{NS_USER}}}x") is not None)
        assert {104, 172} <= codes(change)
        own, _, occupants, _ = await enter(bob, LOUNGE, "Bob")
        assert 100 in codes(own)
        assert item(occupants[0]).get("jid") == str(alice.boundjid)
        info = await bob.plugin["xep_0030"].get_info(jid=LOUNGE)
        assert "muc_nonanonymous" in info["disco_info"]["features"]


async def test_leaving_and_a_dropped_connection_remove_the_occupant(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        carol = Client(jid("carol"), USERS["carol"], port=server.c2s_port, cert=server.cert_path, plugins=PLUGINS)
        try:
            watch(carol)
            assert await carol.login()
            await enter(carol, LOUNGE, "Carol")
            await presence_from(alice, LOUNGE + "/Carol")
            carol.abort_connection()                     # no unavailable presence from carol herself
            gone = await presence_from(alice, LOUNGE + "/Carol", lambda p: p["type"] == "unavailable")
            assert item(gone).get("role") == "none"
        finally:
            await carol.close()
        bob.plugin["xep_0045"].leave_muc(LOUNGE, "Bob", "see you")
        left = await presence_from(alice, LOUNGE + "/Bob", lambda p: p["type"] == "unavailable")
        assert left["status"] == "see you"
        # the last one out of a temporary room ends it: entering again creates a new room
        alice.plugin["xep_0045"].leave_muc(LOUNGE, "Alice")
        await presence_from(alice, LOUNGE + "/Alice", lambda p: p["type"] == "unavailable")
        own, _, _, _ = await enter(bob, LOUNGE, "Bob")
        assert 201 in codes(own) and item(own).get("affiliation") == "owner"


async def test_self_ping_tells_whether_one_is_still_in_the_room(server):
    async with muc_client(server, "alice") as alice:
        await create(alice, LOUNGE, "Alice")
        info = await alice.plugin["xep_0030"].get_info(jid=LOUNGE)
        assert "http://jabber.org/protocol/muc#self-ping-optimization" in info["disco_info"]["features"]

        def ping() -> object:
            iq = alice.make_iq_get(ito=LOUNGE + "/Alice")
            iq.xml.append(ET.Element("{urn:xmpp:ping}ping"))
            return alice.query(iq)
        assert (await ping())["type"] == "result"
        async with muc_client(server, "bob") as bob:
            await enter(bob, LOUNGE, "Bob")
            alice.plugin["xep_0045"].leave_muc(LOUNGE, "Alice")
            await presence_from(alice, LOUNGE + "/Alice", lambda p: p["type"] == "unavailable")
            reply = await ping()
            assert reply["type"] == "error" and error_condition(reply) == "not-acceptable"
            assert reply.xml.find("{jabber:client}error").get("by") == LOUNGE


async def test_several_resources_can_share_one_nickname(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "bob", "phone") as phone:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        await enter(phone, LOUNGE, "Bob")                         # same account, same nickname
        alice.send_message(mto=LOUNGE, mbody="to both", mtype="groupchat")
        assert (await groupchat_from(bob, LOUNGE + "/Alice"))["body"] == "to both"
        assert (await groupchat_from(phone, LOUNGE + "/Alice"))["body"] == "to both"
        phone.plugin["xep_0045"].leave_muc(LOUNGE, "Bob")
        await presence_from(phone, LOUNGE + "/Bob", lambda p: p["type"] == "unavailable")
        alice.send_message(mto=LOUNGE, mbody="still here?", mtype="groupchat")
        assert (await groupchat_from(bob, LOUNGE + "/Alice"))["body"] == "still here?"
        await groupchat_from(alice, LOUNGE + "/Alice")        # her own echo comes after anything earlier
        assert all(p["type"] != "unavailable" for p in alice.pending(alice.room_presences)
                   if str(p["from"]) == LOUNGE + "/Bob")
