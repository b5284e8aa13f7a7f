"""XEP-0313 on a room's bare JID: stanza ids in the broadcast, XEP-0059 paging forwards and
backwards, 'with'/'start'/'end' filters, and who may read a room's archive."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from slixmpp.xmlstream import ET

from .conftest import jid
from .test_muc_support import (NS_SID, admin_iq, codes, configure, create, enter, error_condition,
                               groupchat_from, muc_client, room)

LOUNGE = room("lounge")
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"


def room_stanza_id(message) -> str | None:
    for sid in message.xml.findall(f"{{{NS_SID}}}stanza-id"):
        if sid.get("by") == LOUNGE:
            return sid.get("id")
    return None


async def say(c, *bodies: str) -> list[str]:
    """c says each body in the room; returns the stanza ids the room gave them."""
    ids = []
    for body in bodies:
        c.send_message(mto=LOUNGE, mbody=body, mtype="groupchat")
        echo = await groupchat_from(c, f"{LOUNGE}/{c.boundjid.user.capitalize()}")
        assert echo["body"] == body
        ids.append(room_stanza_id(echo))
    return ids


def bodies(iq) -> list[str]:
    return [m["mam_result"]["forwarded"]["stanza"]["body"] for m in iq["mam"]["results"]]


def raw_query(c, rsm: str = "", form: str = ""):
    iq = c.make_iq_set(ito=LOUNGE)
    iq.xml.append(ET.fromstring(f"<query xmlns='{NS_MAM}' queryid='q1'>{form}"
                                f"<set xmlns='{NS_RSM}'>{rsm}</set></query>"))
    return c.query(iq)


async def test_a_logged_room_gives_each_message_an_id_and_archives_it_once(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", enablelogging=True)
        own, _, _, _ = await enter(bob, LOUNGE, "Bob")
        assert 170 in codes(own)                                 # bob is warned: this room is logged
        info = await bob.plugin["xep_0030"].get_info(jid=LOUNGE)
        assert {NS_MAM, NS_SID} <= set(info["disco_info"]["features"])
        ids = await say(alice, "one", "two")
        seen_by_bob = [room_stanza_id(await groupchat_from(bob, LOUNGE + "/Alice")) for _ in ids]
        assert seen_by_bob == ids and all(ids) and len(set(ids)) == 2
        bob.send_message(mto=LOUNGE + "/Alice", mbody="private", mtype="chat")    # never archived
        await alice.next_of(alice.messages, lambda m: m["body"] == "private")
        # bob -> lounge: <iq type='set'><query xmlns='urn:xmpp:mam:2'/></iq>
        result = await bob.plugin["xep_0313"].retrieve(jid=LOUNGE)
        assert bodies(result) == ["one", "two"]
        assert [m["mam_result"]["id"] for m in result["mam"]["results"]] == ids
        first = result["mam"]["results"][0]
        assert str(first["from"]) == LOUNGE
        archived = first["mam_result"]["forwarded"]["stanza"]
        assert str(archived["from"]) == LOUNGE + "/Alice" and not archived["to"] and archived["type"] == "groupchat"
        assert first["mam_result"]["forwarded"]["delay"]["stamp"] is not None
        fin = result.xml.find(f"{{{NS_MAM}}}fin")
        assert fin.get("complete") == "true"
        assert result["mam_fin"]["rsm"]["count"] == "2"


async def test_paging_forwards_backwards_and_to_the_last_page(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", enablelogging=True)
        ids = await say(alice, *[f"m{n}" for n in range(7)])
        await enter(bob, LOUNGE, "Bob")
        mam = bob.plugin["xep_0313"]
        page = await mam.retrieve(jid=LOUNGE, rsm={"max": 3})
        assert bodies(page) == ["m0", "m1", "m2"]
        rsm = page["mam_fin"]["rsm"]
        assert (rsm["first"], rsm["last"], rsm["count"], rsm["first_index"]) == (ids[0], ids[2], "7", "0")
        assert page.xml.find(f"{{{NS_MAM}}}fin").get("complete") is None
        page = await mam.retrieve(jid=LOUNGE, rsm={"max": 3, "after": ids[2]})
        assert bodies(page) == ["m3", "m4", "m5"]
        page = await mam.retrieve(jid=LOUNGE, rsm={"max": 3, "after": ids[5]})
        assert bodies(page) == ["m6"]
        assert page.xml.find(f"{{{NS_MAM}}}fin").get("complete") == "true"
        assert page["mam_fin"]["rsm"]["first_index"] == "6"
        page = await mam.retrieve(jid=LOUNGE, rsm={"max": 2, "before": ids[3]})
        assert bodies(page) == ["m1", "m2"]
        # the last page: an empty <before/>
        last = await raw_query(bob, "<max>3</max><before/>")
        assert (last["mam_fin"]["rsm"]["first"], last["mam_fin"]["rsm"]["last"]) == (ids[4], ids[6])
        # slixmpp pages through everything, forwards and backwards
        forwards = [m["mam_result"]["forwarded"]["stanza"]["body"] async for m in mam.iterate(jid=LOUNGE, rsm={"max": 2})]
        assert forwards == [f"m{n}" for n in range(7)]
        backwards = [m["mam_result"]["forwarded"]["stanza"]["body"]
                     async for m in mam.iterate(jid=LOUNGE, rsm={"max": 3}, reverse=True)]
        assert backwards == [f"m{n}" for n in reversed(range(7))]
        # an id that is not in this archive
        reply = await raw_query(bob, "<max>3</max><after>no-such-id</after>")
        assert reply["type"] == "error" and error_condition(reply) == "item-not-found"
        # <max>0</max> asks only for the count
        counted = await raw_query(bob, "<max>0</max>")
        assert counted["mam_fin"]["rsm"]["count"] == "7" and not counted["mam_fin"]["rsm"]["first"]


async def test_filters_by_occupant_and_time(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", enablelogging=True)
        await enter(bob, LOUNGE, "Bob")
        await say(alice, "from alice")
        await say(bob, "from bob")
        mam = bob.plugin["xep_0313"]
        assert bodies(await mam.retrieve(jid=LOUNGE, with_jid=LOUNGE + "/Bob")) == ["from bob"]
        now = datetime.now(timezone.utc)
        assert bodies(await mam.retrieve(jid=LOUNGE, start=now - timedelta(hours=1))) == ["from alice", "from bob"]
        assert bodies(await mam.retrieve(jid=LOUNGE, end=now - timedelta(hours=1))) == []
        assert bodies(await mam.retrieve(jid=LOUNGE, start=now + timedelta(hours=1))) == []
        form = await mam.get_fields(jid=LOUNGE)
        assert {"with", "start", "end"} <= set(form.get_values())
        # a field the service does not know, and a date that is not one
        unknown = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value>"
                   "</field><field var='full-text'><value>secret</value></field></x>")
        assert error_condition(await raw_query(bob, form=unknown)) == "feature-not-implemented"
        bad_date = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value>"
                    "</field><field var='start'><value>yesterday</value></field></x>")
        assert error_condition(await raw_query(bob, form=bad_date)) == "bad-request"


async def test_only_those_who_may_enter_may_read_the_archive(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob, \
               muc_client(server, "carol") as carol:
        await create(alice, LOUNGE, "Alice", enablelogging=True, membersonly=True)
        await say(alice, "members only")
        assert error_condition(await raw_query(bob)) == "forbidden"
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("bob"), "affiliation": "member"}))["type"] == "result"
        assert bodies(await bob.plugin["xep_0313"].retrieve(jid=LOUNGE)) == ["members only"]
        # an open room's archive is open to all but the banned
        assert (await configure(alice, LOUNGE, membersonly=False))["type"] == "result"
        assert bodies(await carol.plugin["xep_0313"].retrieve(jid=LOUNGE)) == ["members only"]
        assert (await admin_iq(alice, LOUNGE, "set", {"jid": jid("carol"), "affiliation": "outcast"}))["type"] == "result"
        assert error_condition(await raw_query(carol)) == "forbidden"


async def test_a_room_created_again_does_not_inherit_the_old_archive(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", enablelogging=True)
        await say(alice, "before")
        alice.plugin["xep_0045"].leave_muc(LOUNGE, "Alice")      # the temporary room ends
        await alice.next_of(alice.room_presences, lambda p: p["type"] == "unavailable")
        await create(bob, LOUNGE, "Bob", enablelogging=True)
        assert bodies(await bob.plugin["xep_0313"].retrieve(jid=LOUNGE)) == []


async def test_a_password_protected_room_shows_its_archive_only_to_those_inside(server):
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, LOUNGE, "Alice", enablelogging=True, passwordprotectedroom=True, roomsecret="pw-123")
        await say(alice, "behind the door")
        assert error_condition(await raw_query(bob)) == "forbidden"
        await enter(bob, LOUNGE, "Bob", password="pw-123")
        assert bodies(await bob.plugin["xep_0313"].retrieve(jid=LOUNGE)) == ["behind the door"]
