"""Invitations: XEP-0249 direct invitations (ordinary messages the server routes) and XEP-0045
mediated invitations through the room (7.8.2), with declines and members-only rooms."""

from __future__ import annotations

from .conftest import jid
from .test_muc_support import (NS_USER, configure, create, enter, error_condition, message_from, muc_client,
                               room)

LOUNGE = room("lounge")
NS_CONFERENCE = "jabber:x:conference"


def invite_of(message):
    return message.xml.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite")


def has_invite(message) -> bool:
    return invite_of(message) is not None       # (an element without children is falsy)


async def test_a_direct_invitation_reaches_the_invitee_as_sent(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice")
        # alice -> bob: <message><x xmlns='jabber:x:conference' jid='lounge@...' reason='...'/></message>
        alice.plugin["xep_0249"].send_invitation(jid("bob"), LOUNGE, reason="standup in 5")
        got = await message_from(bob, str(alice.boundjid), lambda m: m.xml.find(f"{{{NS_CONFERENCE}}}x") is not None)
        x = got.xml.find(f"{{{NS_CONFERENCE}}}x")
        assert x.get("jid") == LOUNGE and x.get("reason") == "standup in 5"
        await enter(bob, LOUNGE, "Bob")


async def test_a_mediated_invitation_comes_from_the_room_and_may_be_declined(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", passwordprotectedroom=True, roomsecret="door-code")
        alice.plugin["xep_0045"].invite(LOUNGE, jid("bob"), "we need you")
        got = await message_from(bob, LOUNGE, has_invite)
        invite = invite_of(got)
        assert invite.get("from") == jid("alice")
        assert invite.find(f"{{{NS_USER}}}reason").text == "we need you"
        assert got.xml.find(f"{{{NS_USER}}}x/{{{NS_USER}}}password").text == "door-code"
        # bob declines through the room; alice hears it from the room
        bob.plugin["xep_0045"].decline(LOUNGE, jid("alice"), "on holiday")
        declined = await message_from(alice, LOUNGE, lambda m: m.xml.find(f"{{{NS_USER}}}x/{{{NS_USER}}}decline") is not None)
        decline = declined.xml.find(f"{{{NS_USER}}}x/{{{NS_USER}}}decline")
        assert decline.get("from") == jid("bob")
        assert decline.find(f"{{{NS_USER}}}reason").text == "on holiday"
        # the invitation is answered: declining again is refused
        bob.plugin["xep_0045"].decline(LOUNGE, jid("alice"), "really")
        assert error_condition(await message_from(bob, LOUNGE, lambda m: m["type"] == "error")) == "not-acceptable"


async def test_invitations_to_a_members_only_room_make_members(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice", membersonly=True)
        # an admin's (here: the owner's) invitation adds the invitee to the member list
        alice.plugin["xep_0045"].invite(LOUNGE, jid("bob"))
        await message_from(bob, LOUNGE, has_invite)
        assert await alice.plugin["xep_0045"].get_affiliation_list(LOUNGE, "member") == [jid("bob")]
        await enter(bob, LOUNGE, "Bob")
        # with muc#roomconfig_allowinvites, members may invite too
        assert (await configure(alice, LOUNGE, allowinvites=True))["type"] == "result"
        bob.plugin["xep_0045"].invite(LOUNGE, jid("carol"), "join us")
        got = await message_from(carol, LOUNGE, has_invite)
        assert invite_of(got).get("from") == jid("bob")
        await enter(carol, LOUNGE, "Carol")


async def test_an_invitation_to_an_invalid_address_is_refused(server):
    async with muc_client(server, "alice") as alice:
        await create(alice, LOUNGE, "Alice")
        alice.send_raw(f"<message to='{LOUNGE}' id='bad1'><x xmlns='{NS_USER}'><invite to='@@bad'/></x></message>")
        refused = await message_from(alice, LOUNGE, lambda m: m["type"] == "error")
        assert error_condition(refused) == "jid-malformed"
