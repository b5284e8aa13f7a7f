"""Persistent rooms survive a restart of the server on the same data folder: configuration,
affiliations, reserved nicknames, subject and archive; occupants do not, and temporary rooms
are gone."""

from __future__ import annotations

from stockade.testing.server import RunningServer

from .conftest import DOMAIN, USERS, jid
from .test_muc_support import (SERVICE, admin_iq, codes, create, enter, enter_refused, groupchat_from,
                               muc_client, room)

BOARD = room("board")
SCRATCH = room("scratch")


async def test_a_persistent_room_comes_back_after_a_restart(tmp_path):
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        async with muc_client(srv, "alice") as alice:
            await create(alice, BOARD, "Alice", persistentroom=True, roomname="The Board", membersonly=True,
                         enablelogging=True)
            reply = await admin_iq(alice, BOARD, "set", {"jid": jid("bob"), "affiliation": "member", "nick": "Bobby"})
            assert reply["type"] == "result"
            alice.plugin["xep_0045"].set_subject(BOARD, "Q3 goals")
            alice.send_message(mto=BOARD, mbody="minutes follow", mtype="groupchat")
            await groupchat_from(alice, BOARD + "/Alice")
            await create(alice, SCRATCH, "Alice")                 # temporary: gone with the server
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        async with muc_client(srv, "bob") as bob, muc_client(srv, "alice") as alice, \
                   muc_client(srv, "carol") as carol:
            listed = await bob.plugin["xep_0030"].get_items(jid=SERVICE)
            assert [(i[0], i[2]) for i in listed["disco_items"]["items"]] == [(BOARD, "The Board")]
            # bob's reserved nickname, his membership and the subject are kept; nobody is inside
            iq = bob.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info", ito=BOARD)
            iq["disco_info"]["node"] = "x-roomuser-item"
            reserved = await bob.query(iq)
            assert reserved.xml.find(".//{http://jabber.org/protocol/disco#info}identity").get("name") == "Bobby"
            own, subject, occupants, history = await enter(bob, BOARD, "Bobby")
            assert 201 not in codes(own)
            assert subject["subject"] == "Q3 goals"
            assert [str(p["from"]) for p in occupants] == [BOARD + "/Bobby"] and history == []
            assert await enter_refused(carol, BOARD, "Carol") == "registration-required"
            # alice is still the owner, and the archive is still there
            form = await alice.plugin["xep_0045"].get_room_config(BOARD)
            assert form.get_values()["muc#roomconfig_roomname"] == "The Board"
            archived = await bob.plugin["xep_0313"].retrieve(jid=BOARD)
            kept = [m["mam_result"]["forwarded"]["stanza"] for m in archived["mam"]["results"]]
            assert [(m["subject"] or None, m["body"] or None) for m in kept] == [("Q3 goals", None),
                                                                                  (None, "minutes follow")]
            own, _, _, _ = await enter(carol, SCRATCH, "Carol")
            assert 201 in codes(own)                               # a new room, owned by carol
