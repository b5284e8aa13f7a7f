"""XEP-0441 archiving preferences (default always/never/roster, always and never lists)."""

from __future__ import annotations

from slixmpp.xmlstream import ET

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_mam import MAM_PLUGINS, NS_MAM, body, query_archive, stanza_ids

PREFS_PLUGINS = MAM_PLUGINS + ("xep_0441",)


def prefs_client(server, user: str, **kwargs):
    return client(server, jid(user), USERS[user], plugins=PREFS_PLUGINS, **kwargs)


async def set_prefs(c, default: str, always=(), never=()):
    reply = await c.plugin["xep_0441"].set_preferences(default=default, always=list(always), never=list(never))
    return reply["mam_prefs"]


async def test_default_never_stops_archiving_for_that_user_only(server):
    async with prefs_client(server, "alice") as alice, prefs_client(server, "bob") as bob:
        applied = await set_prefs(bob, "never")
        assert applied["default"] == "never" and applied["always"] == set() and applied["never"] == set()
        alice.send_message(mto=jid("bob"), mbody="not for bob's archive", mtype="chat")
        got = await bob.next_message()
        assert stanza_ids(got) == []                   # nothing archived, so no archive id
        _, results = await query_archive(bob)
        assert results == []
        _, results = await query_archive(alice)        # alice's own preference still archives
        assert [body(r) for r in results] == ["not for bob's archive"]
        assert (await bob.plugin["xep_0441"].get_preferences())[0] == "never"


async def test_default_roster_keeps_contacts_only_also_while_offline(server):
    async with prefs_client(server, "bob") as bob:
        await bob.update_roster(jid("alice"), name="Alice")
        await set_prefs(bob, "roster")
    async with prefs_client(server, "alice") as alice, prefs_client(server, "carol") as carol:
        alice.send_message(mto=jid("bob"), mbody="from a contact, offline", mtype="chat")
        carol.send_message(mto=jid("bob"), mbody="from a stranger, offline", mtype="chat")
        await alice.roundtrip()
        await carol.roundtrip()
        async with prefs_client(server, "bob") as bob:
            offline = {m["body"]: m for m in [await bob.next_message(), await bob.next_message()]}
            assert len(stanza_ids(offline["from a contact, offline"])) == 1
            assert stanza_ids(offline["from a stranger, offline"]) == []
            alice.send_message(mto=jid("bob"), mbody="from a contact, online", mtype="chat")
            carol.send_message(mto=jid("bob"), mbody="from a stranger, online", mtype="chat")
            online = {m["body"]: m for m in [await bob.next_message(), await bob.next_message()]}
            assert len(stanza_ids(online["from a contact, online"])) == 1
            assert stanza_ids(online["from a stranger, online"]) == []
            _, results = await query_archive(bob)
            assert [body(r) for r in results] == ["from a contact, offline", "from a contact, online"]
            assert [r["mam_result"]["id"] for r in results] == [
                stanza_ids(offline["from a contact, offline"])[0][1],
                stanza_ids(online["from a contact, online"])[0][1]]


async def test_always_and_never_lists_override_the_default(server):
    async with prefs_client(server, "alice") as alice, prefs_client(server, "bob") as bob, \
               prefs_client(server, "carol") as carol:
        applied = await set_prefs(alice, "always", never=[jid("bob")])
        assert {str(j) for j in applied["never"]} == {jid("bob")}
        await set_prefs(carol, "never", always=[jid("alice")])
        alice.send_message(mto=jid("bob"), mbody="to bob", mtype="chat")
        alice.send_message(mto=jid("carol"), mbody="to carol", mtype="chat")
        bob.send_message(mto=jid("carol"), mbody="bob to carol", mtype="chat")
        await alice.roundtrip()
        await bob.roundtrip()
        _, results = await query_archive(alice)
        assert [body(r) for r in results] == ["to carol"]
        _, results = await query_archive(carol)
        assert [body(r) for r in results] == ["to carol"]


async def test_bad_preferences_are_refused_with_a_reason(server):
    async with prefs_client(server, "alice") as alice:
        def prefs_iq(default, always=(), never=()):
            iq = alice.make_iq_set()
            prefs = ET.SubElement(iq.xml, f"{{{NS_MAM}}}prefs", {"default": default} if default else {})
            for name, jids in (("always", always), ("never", never)):
                listing = ET.SubElement(prefs, f"{{{NS_MAM}}}{name}")
                for j in jids:
                    ET.SubElement(listing, f"{{{NS_MAM}}}jid").text = j
            return iq
        for iq, condition in ((prefs_iq("sometimes"), "bad-request"),
                              (prefs_iq(None), "bad-request"),
                              (prefs_iq("always", always=["bad@@jid"]), "jid-malformed"),
                              (prefs_iq("always", always=[jid("bob")], never=[jid("bob")]), "bad-request")):
            reply = await alice.query(iq)
            assert reply["type"] == "error" and reply["error"]["condition"] == condition, reply
            assert reply["error"]["text"]
        assert (await alice.plugin["xep_0441"].get_preferences())[0] == "always"


async def test_the_server_default_preference_is_configurable():
    with RunningServer([DOMAIN], config={"modules": {"mam": {"default_preference": "never"}}}) as srv:
        for user in ("alice", "bob"):
            srv.add_user(jid(user), USERS[user])
        async with prefs_client(srv, "alice") as alice, prefs_client(srv, "bob") as bob:
            assert (await alice.plugin["xep_0441"].get_preferences())[0] == "never"
            await set_prefs(bob, "always")
            alice.send_message(mto=jid("bob"), mbody="kept by bob only", mtype="chat")
            await bob.next_message()
            _, results = await query_archive(alice)
            assert results == []
            _, results = await query_archive(bob)
            assert [body(r) for r in results] == ["kept by bob only"]
