"""XEP-0045 moderator, admin and owner use cases: kick, ban, voice, the affiliation lists,
members-only rooms, the subject, and destroying a room."""

from __future__ import annotations

from slixmpp.xmlstream import ET

from .conftest import jid
from .test_muc_support import (admin_iq, codes, configure, create, enter, enter_refused, error_condition,
                               groupchat_from, item, message_from, muc_client, owner_iq, presence_from, room)

LOUNGE = room("lounge")


def unavailable(p) -> bool:
    return p["type"] == "unavailable"


async def test_a_moderator_kicks_an_occupant_who_may_come_back(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        await enter(carol, LOUNGE, "Carol")
        # alice sends <item nick='Bob' role='none'><reason>Spam</reason></item>
        reply = await admin_iq(alice, LOUNGE, "set", {"nick": "Bob", "role": "none"}, reason="Spam")
        assert reply["type"] == "result"
        kicked = await presence_from(bob, LOUNGE + "/Bob", unavailable)
        assert {307, 110} <= codes(kicked)
        assert kicked.xml.find(".//{http://jabber.org/protocol/muc#user}reason").text == "Spam"
        assert kicked.xml.find(".//{http://jabber.org/protocol/muc#user}actor").get("nick") == "Alice"
        seen = await presence_from(carol, LOUNGE + "/Bob", unavailable)
        assert 307 in codes(seen) and 110 not in codes(seen) and item(seen).get("role") == "none"
        await enter(bob, LOUNGE, "Bob")                      # a kick is not a ban


async def test_an_admin_bans_by_bare_jid_and_lifts_the_ban(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        await enter(carol, LOUNGE, "Carol")
        reply = await admin_iq(alice, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "outcast"}, reason="Leaks")
        assert reply["type"] == "result"
        banned = await presence_from(bob, LOUNGE + "/Bob", unavailable)
        assert {301, 110} <= codes(banned) and item(banned).get("affiliation") == "outcast"
        assert 301 in codes(await presence_from(carol, LOUNGE + "/Bob", unavailable))
        assert await enter_refused(bob, LOUNGE, "Bob") == "forbidden"
        outcasts = await alice.plugin["xep_0045"].get_affiliation_list(LOUNGE, "outcast")
        assert [str(j) for j in outcasts] == [jid("bob")]
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "none"}))["type"] == "result"
        await enter(bob, LOUNGE, "Bob")


async def test_voice_in_a_moderated_room(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice", moderatedroom=True)
        own, _, _, _ = await enter(carol, LOUNGE, "Carol")
        assert item(own).get("role") == "visitor"
        carol.send_message(mto=LOUNGE, mbody="can I speak?", mtype="groupchat")
        refused = await carol.next_message()
        assert refused["type"] == "error" and error_condition(refused) == "forbidden"
        # alice grants voice: carol becomes a participant, and everyone sees it
        assert (await admin_iq(alice, LOUNGE, "set", {"nick": "Carol", "role": "participant"}))["type"] == "result"
        voiced = await presence_from(carol, LOUNGE + "/Carol", lambda p: item(p).get("role") == "participant")
        assert 110 in codes(voiced)
        assert item(await presence_from(alice, LOUNGE + "/Carol", lambda p: item(p).get("role") == "participant")).get("jid")
        carol.send_message(mto=LOUNGE, mbody="thank you", mtype="groupchat")
        assert (await groupchat_from(alice, LOUNGE + "/Carol"))["body"] == "thank you"
        voice_list = await alice.plugin["xep_0045"].get_roles_list(LOUNGE, "participant")
        assert voice_list == ["Carol"]
        # and takes it away again
        assert (await admin_iq(alice, LOUNGE, "set", {"nick": "Carol", "role": "visitor"}))["type"] == "result"
        await presence_from(carol, LOUNGE + "/Carol", lambda p: item(p).get("role") == "visitor")
        carol.send_message(mto=LOUNGE, mbody="again?", mtype="groupchat")
        refused = await carol.next_of(carol.messages, lambda m: m["type"] == "error")
        assert error_condition(refused) == "forbidden" and refused["body"] == "again?"


async def test_a_visitor_asks_for_voice_and_a_moderator_grants_it(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice", moderatedroom=True)
        await enter(carol, LOUNGE, "Carol")
        carol.plugin["xep_0045"].request_voice(LOUNGE, "participant")
        request = await message_from(alice, LOUNGE, lambda m: m.xml.find("{jabber:x:data}x") is not None)
        values = request["form"].get_values()
        assert values["muc#roomnick"] == "Carol" and values["muc#jid"] == str(carol.boundjid)
        # asking twice is refused: the moderators already have the request
        carol.plugin["xep_0045"].request_voice(LOUNGE, "participant")
        assert error_condition(await message_from(carol, LOUNGE, lambda m: m["type"] == "error")) == "not-acceptable"
        alice.send_raw(f"<message to='{LOUNGE}'><x xmlns='jabber:x:data' type='submit'>"
                       "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
                       "<field var='muc#roomnick'><value>Carol</value></field>"
                       "<field var='muc#request_allow'><value>true</value></field></x></message>")
        voiced = await presence_from(carol, LOUNGE + "/Carol", lambda p: item(p).get("role") == "participant")
        assert 110 in codes(voiced)


async def test_affiliations_change_roles_and_follow_the_hierarchy(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        await enter(carol, LOUNGE, "Carol")
        # alice makes bob an admin: he becomes a moderator, and now sees real JIDs
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "admin"}))["type"] == "result"
        promoted = await presence_from(carol, LOUNGE + "/Bob", lambda p: item(p).get("affiliation") == "admin")
        assert item(promoted).get("role") == "moderator"
        carol_seen = await presence_from(bob, LOUNGE + "/Carol", lambda p: item(p).get("jid") is not None)
        assert item(carol_seen).get("jid") == str(carol.boundjid)
        # an admin manages members and bans, but not admins or owners
        assert (await admin_iq(bob, LOUNGE, "set", {"jid": jid("carol"), "affiliation": "member"}))["type"] == "result"
        assert await alice.plugin["xep_0045"].get_affiliation_list(LOUNGE, "member") == [jid("carol")]
        refused = await admin_iq(bob, LOUNGE, "set", {"jid": jid("dave"), "affiliation": "admin"})
        assert error_condition(refused) == "forbidden"
        refused = await admin_iq(bob, LOUNGE, "set", {"jid": jid("alice"), "affiliation": "outcast"})
        assert error_condition(refused) == "not-allowed"
        refused = await admin_iq(bob, LOUNGE, "get", {"affiliation": "owner"})
        assert error_condition(refused) == "forbidden"
        # the last owner cannot step down; with a second owner she can
        refused = await admin_iq(alice, LOUNGE, "set", {"jid": jid("alice"), "affiliation": "admin"})
        assert error_condition(refused) == "conflict"
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "owner"}))["type"] == "result"
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("alice"), "affiliation": "admin"}))["type"] == "result"
        owners = await bob.plugin["xep_0045"].get_affiliation_list(LOUNGE, "owner")
        assert [str(j) for j in owners] == [jid("bob")]
        # nobody bans themselves; and an item may not change a role and an affiliation at once
        refused = await admin_iq(bob, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "outcast"})
        assert error_condition(refused) == "conflict"
        refused = await admin_iq(bob, LOUNGE, "set", {"nick": "Carol", "role": "visitor", "affiliation": "none"})
        assert error_condition(refused) == "bad-request"


async def test_a_bad_item_leaves_the_whole_request_undone(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        reply = await admin_iq(alice, LOUNGE, "set", {"jid": jid("carol"), "affiliation": "member"},
                               {"jid": jid("dave"), "affiliation": "emperor"})
        assert error_condition(reply) == "bad-request"
        assert await alice.plugin["xep_0045"].get_affiliation_list(LOUNGE, "member") == []


async def test_members_only_rooms_keep_non_members_out(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("carol"), "affiliation": "member"}))["type"] == "result"
        await enter(carol, LOUNGE, "Carol")
        # the room becomes members-only: bob, not a member, is removed (322), carol stays
        assert (await configure(alice, LOUNGE, membersonly=True))["type"] == "result"
        removed = await presence_from(bob, LOUNGE + "/Bob", unavailable)
        assert {322, 110} <= codes(removed)
        assert 322 in codes(await presence_from(carol, LOUNGE + "/Bob", unavailable))
        assert await enter_refused(bob, LOUNGE, "Bob") == "registration-required"
        # a member sees the member list of a members-only room; revoking membership removes (321)
        assert [str(j) for j in await carol.plugin["xep_0045"].get_affiliation_list(LOUNGE, "member")] == [jid("carol")]
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("carol"), "affiliation": "none"}))["type"] == "result"
        assert 321 in codes(await presence_from(carol, LOUNGE + "/Carol", unavailable))


async def test_who_may_change_the_subject(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        await enter(bob, LOUNGE, "Bob")
        bob.plugin["xep_0045"].set_subject(LOUNGE, "Bob's topic")
        refused = await message_from(bob, LOUNGE, lambda m: m["type"] == "error")
        assert error_condition(refused) == "forbidden"
        assert (await configure(alice, LOUNGE, changesubject=True))["type"] == "result"
        bob.plugin["xep_0045"].set_subject(LOUNGE, "Bob's topic")
        changed = await message_from(alice, LOUNGE + "/Bob", lambda m: m["subject"] == "Bob's topic")
        assert changed["type"] == "groupchat"
        info = await alice.plugin["xep_0030"].get_info(jid=LOUNGE)
        fields = info["disco_info"]["form"].get_values()
        assert fields["muc#roominfo_subject"] == "Bob's topic" and fields["muc#roominfo_occupants"] == "2"


async def test_the_owner_destroys_the_room(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", persistentroom=True)
        await enter(bob, LOUNGE, "Bob")
        destroy = ET.Element("{http://jabber.org/protocol/muc#owner}destroy", {"jid": room("elsewhere")})
        ET.SubElement(destroy, "{http://jabber.org/protocol/muc#owner}reason").text = "Moving"
        refused = await owner_iq(bob, LOUNGE, "set", destroy)
        assert error_condition(refused) == "forbidden"
        assert (await owner_iq(alice, LOUNGE, "set", destroy))["type"] == "result"
        gone = await presence_from(bob, LOUNGE + "/Bob", unavailable)
        destroyed = gone.xml.find(".//{http://jabber.org/protocol/muc#user}destroy")
        assert destroyed.get("jid") == room("elsewhere")
        assert destroyed.find("{http://jabber.org/protocol/muc#user}reason").text == "Moving"
        await presence_from(alice, LOUNGE + "/Alice", unavailable)
        info = await bob.query(bob.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info", ito=LOUNGE))
        assert error_condition(info) == "item-not-found"
