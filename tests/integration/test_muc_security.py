"""Attacks on chat rooms, each refused with the XEP's error while nothing else is disturbed:
passwords, members-only rooms, bans, visitors, privilege escalation, real JIDs in semi-anonymous
rooms, spoofed occupant JIDs and forged MUC extensions, decline spam, and the service limits."""

from __future__ import annotations

from slixmpp.xmlstream import ET

from stockade.testing.server import RunningServer

from .conftest import DOMAIN, USERS, jid
from .test_muc_support import (NS_SID, NS_USER, admin_iq, codes, configure, create, enter, enter_refused,
                               error_condition, groupchat_from, item, message_from, muc_client, nothing_from,
                               owner_iq, presence_from, room)

LOUNGE = room("lounge")


async def test_a_wrong_or_missing_password_is_refused(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", passwordprotectedroom=True, roomsecret="s3cret")
        assert await enter_refused(bob, LOUNGE, "Bob") == "not-authorized"
        assert await enter_refused(bob, LOUNGE, "Bob", password="guess") == "not-authorized"
        await alice.roundtrip()
        assert nothing_from(alice, LOUNGE + "/Bob")             # failed attempts are nobody's business
        await enter(bob, LOUNGE, "Bob", password="s3cret")
        # a password-protected room without a password cannot be configured
        reply = await configure(alice, LOUNGE, roomsecret="")
        assert error_condition(reply) == "not-acceptable"


async def test_a_banned_user_stays_out_under_any_nickname_or_resource(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "bob", "laptop") as laptop:
        await create(alice, LOUNGE, "Alice")
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "outcast"}))["type"] == "result"
        assert await enter_refused(bob, LOUNGE, "Bob") == "forbidden"
        assert await enter_refused(laptop, LOUNGE, "NotBob") == "forbidden"
        bob.send_message(mto=LOUNGE, mbody="let me in", mtype="groupchat")
        assert error_condition(await bob.next_message()) == "not-acceptable"
        await alice.roundtrip()
        assert nothing_from(alice, LOUNGE + "/Bob") and nothing_from(alice, LOUNGE + "/NotBob")


async def test_members_only_rooms_refuse_strangers_and_their_invitations(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice", membersonly=True)
        assert await enter_refused(carol, LOUNGE, "Carol") == "registration-required"
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "member"}))["type"] == "result"
        await enter(bob, LOUNGE, "Bob")
        # a mere member may not let others in by inviting them
        bob.plugin["xep_0045"].invite(LOUNGE, jid("carol"), "come in")
        refused = await message_from(bob, LOUNGE, lambda m: m["type"] == "error")
        assert error_condition(refused) == "forbidden"
        assert await enter_refused(carol, LOUNGE, "Carol") == "registration-required"
        assert await alice.plugin["xep_0045"].get_affiliation_list(LOUNGE, "member") == [jid("bob")]


async def test_a_visitor_speaking_in_a_moderated_room_reaches_nobody(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", moderatedroom=True)
        await enter(bob, LOUNGE, "Bob")
        bob.send_message(mto=LOUNGE, mbody="buy cheap watches", mtype="groupchat")
        refused = await bob.next_of(bob.messages, lambda m: m["type"] == "error")
        assert error_condition(refused) == "forbidden"
        await alice.roundtrip()
        assert nothing_from(alice, LOUNGE + "/Bob", body="buy cheap watches")
        # nor may the visitor change the subject
        bob.plugin["xep_0045"].set_subject(LOUNGE, "hijacked")
        assert error_condition(await message_from(bob, LOUNGE, lambda m: m["type"] == "error")) == "forbidden"


async def test_no_one_acts_above_their_station(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice", roomname="Original")
        await enter(bob, LOUNGE, "Bob")
        await enter(carol, LOUNGE, "Carol")
        # a participant may neither read nor change the configuration, nor destroy the room
        assert error_condition(await owner_iq(bob, LOUNGE, "get")) == "forbidden"
        assert error_condition(await configure_as_intruder(bob)) == "forbidden"
        assert error_condition(await owner_iq(bob, LOUNGE, "set",
                                              ET.Element("{http://jabber.org/protocol/muc#owner}destroy"))) == "forbidden"
        # ... nor kick, ban, give voice or affiliations
        for attrs in ({"nick": "Carol", "role": "none"}, {"nick": "Carol", "role": "moderator"},
                      {"jid": jid("carol"), "affiliation": "outcast"}, {"jid": jid("bob"), "affiliation": "owner"}):
            assert error_condition(await admin_iq(bob, LOUNGE, "set", attrs)) == "forbidden", attrs
        # a moderator by grant (no affiliation) cannot kick an admin, nor take a moderator's role
        assert (await admin_iq(alice, LOUNGE, "set", {"nick": "Carol", "role": "moderator"}))["type"] == "result"
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "admin"}))["type"] == "result"
        assert error_condition(await admin_iq(carol, LOUNGE, "set", {"nick": "Bob", "role": "none"})) == "not-allowed"
        assert error_condition(await admin_iq(carol, LOUNGE, "set", {"nick": "Bob", "role": "visitor"})) == "forbidden"
        # an admin cannot kick the owner or take her moderator role
        assert error_condition(await admin_iq(bob, LOUNGE, "set", {"nick": "Alice", "role": "none"})) == "not-allowed"
        assert error_condition(await admin_iq(bob, LOUNGE, "set", {"nick": "Alice", "role": "participant"})) == "not-allowed"
        # everyone is still there, and the configuration is unchanged
        assert sorted(alice.plugin["xep_0045"].get_roster(LOUNGE)) == ["Alice", "Bob", "Carol"]
        info = await alice.plugin["xep_0030"].get_info(jid=LOUNGE)
        assert ("conference", "text", None, "Original") in info["disco_info"]["identities"]


async def configure_as_intruder(c):
    """A complete, well-formed configuration form, sent by someone who is not an owner."""
    form = ET.fromstring("<x xmlns='jabber:x:data' type='submit'>"
                         "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                         "<field var='muc#roomconfig_roomname'><value>Owned</value></field></x>")
    return await owner_iq(c, LOUNGE, "set", form)


async def test_participants_never_learn_real_jids_in_a_semi_anonymous_room(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice", enablelogging=True)
        _, _, occupants, _ = await enter(bob, LOUNGE, "Bob")
        await enter(carol, LOUNGE, "Carol")
        alice.send_message(mto=LOUNGE, mbody="hello", mtype="groupchat")
        msg = await groupchat_from(bob, LOUNGE + "/Alice")
        seen_by_bob = [item(p).get("jid") for p in occupants]
        seen_by_bob.append(item(await presence_from(bob, LOUNGE + "/Carol")).get("jid"))
        assert seen_by_bob == [None, None, None]
        assert jid("alice") not in str(msg)
        for query in ({"role": "participant"}, {"role": "moderator"}, {"affiliation": "owner"},
                      {"affiliation": "member"}, {"affiliation": "outcast"}):
            assert error_condition(await admin_iq(bob, LOUNGE, "get", query)) == "forbidden", query
        items = await bob.plugin["xep_0030"].get_items(jid=LOUNGE)
        assert all("/" in i[0] and jid("alice") not in i[0] for i in items["disco_items"]["items"])
        # the archive does not tell either ... while a moderator reading it sees who wrote what
        archived = await bob.plugin["xep_0313"].retrieve(jid=LOUNGE)
        [result] = archived["mam"]["results"]
        assert jid("alice") not in str(result)
        archived = await alice.plugin["xep_0313"].retrieve(jid=LOUNGE)
        [result] = archived["mam"]["results"]
        assert result.xml.find(f".//{{{NS_USER}}}item").get("jid") == str(alice.boundjid)


async def test_spoofed_occupant_jids_and_forged_room_extensions_do_not_pass(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "dave") as dave:
        await create(alice, LOUNGE, "Alice", enablelogging=True)
        # dave, not in the room, writes as if he were alice's occupant JID: the server puts his
        # own address on it and the room refuses a non-occupant
        dave.send_raw(f"<message from='{LOUNGE}/Alice' to='{LOUNGE}' type='groupchat' id='s1'>"
                      f"<body>I am Alice</body></message>")
        refused = await dave.next_of(dave.messages, lambda m: m["type"] == "error")
        assert error_condition(refused) == "not-acceptable"
        dave.send_raw(f"<message to='{LOUNGE}/Alice' type='chat' id='s2'><body>psst</body></message>")
        assert error_condition(await dave.next_of(dave.messages, lambda m: m["id"] == "s2")) == "not-acceptable"
        await alice.roundtrip()
        assert nothing_from(alice, LOUNGE + "/", body="I am Alice")
        # inside, dave claims to be an owner and forges a real JID and an archive id
        dave.send_raw(f"<presence to='{LOUNGE}/Dave'><x xmlns='http://jabber.org/protocol/muc'/>"
                      f"<x xmlns='{NS_USER}'><item affiliation='owner' role='moderator' jid='{jid('alice')}/desk'/></x>"
                      f"</presence>")
        joined = await presence_from(alice, LOUNGE + "/Dave")
        assert item(joined).get("affiliation") == "none" and item(joined).get("role") == "participant"
        assert item(joined).get("jid") == str(dave.boundjid)
        dave.send_raw(f"<message to='{LOUNGE}' type='groupchat' id='s3'><body>trust me</body>"
                      f"<x xmlns='{NS_USER}'><item jid='{jid('alice')}/desk' affiliation='owner'/></x>"
                      f"<stanza-id xmlns='{NS_SID}' by='{LOUNGE}' id='forged-id'/></message>")
        msg = await groupchat_from(alice, LOUNGE + "/Dave")
        assert msg.xml.find(f"{{{NS_USER}}}x") is None
        ids = [e.get("id") for e in msg.xml.findall(f"{{{NS_SID}}}stanza-id")]
        assert len(ids) == 1 and ids[0] != "forged-id"


async def test_declines_only_reach_someone_who_invited(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "dave") as dave:
        await create(alice, LOUNGE, "Alice")
        dave.plugin["xep_0045"].decline(LOUNGE, jid("alice"), "no thanks")   # nobody invited dave
        refused = await message_from(dave, LOUNGE, lambda m: m["type"] == "error")
        assert error_condition(refused) == "not-acceptable"
        await alice.roundtrip()
        assert all(m.xml.find(f"{{{NS_USER}}}x/{{{NS_USER}}}decline") is None for m in alice.pending(alice.room_messages))


async def test_a_full_room_still_lets_admins_in():
    with RunningServer([DOMAIN], config={"modules": {"muc": {"max_occupants": 2, "max_rooms": 1}}}) as srv:
        for user in ("alice", "bob", "carol", "dave"):
            srv.add_user(jid(user), USERS[user])
        async with muc_client(srv, "alice") as alice, muc_client(srv, "bob") as bob, \
                   muc_client(srv, "carol") as carol, muc_client(srv, "dave") as dave:
            await create(alice, LOUNGE, "Alice")
            await enter(bob, LOUNGE, "Bob")
            assert await enter_refused(carol, LOUNGE, "Carol") == "service-unavailable"
            assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("dave"), "affiliation": "admin"}))["type"] == "result"
            own, _, _, _ = await enter(dave, LOUNGE, "Dave")
            assert item(own).get("role") == "moderator"
            # and the service keeps at most one room
            assert await enter_refused(carol, room("second"), "Carol") == "not-allowed"
            assert 201 not in codes(own)
