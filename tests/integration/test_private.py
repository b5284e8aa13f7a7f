"""XEP-0049 Private XML Storage: a user's own fragments, per namespace and element, readable and
writable by that user alone; reserved namespaces refused."""

from __future__ import annotations

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_pep import error_of, iq

PRIVATE = "jabber:iq:private"


async def test_a_user_stores_fragments_and_reads_them_back(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await iq(alice, "set", f"<query xmlns='{PRIVATE}'><exodus xmlns='exodus:prefs'>"
                                       f"<defaultnick>Hamlet</defaultnick></exodus>"
                                       f"<notes xmlns='storage:rosternotes'><note jid='{jid('bob')}'>friend</note></notes>"
                                       f"</query>")
        assert reply["type"] == "result"
        reply = await iq(alice, "get", f"<query xmlns='{PRIVATE}'><exodus xmlns='exodus:prefs'/></query>")
        stored = reply.xml.find(f"{{{PRIVATE}}}query/{{exodus:prefs}}exodus")
        assert stored.findtext("{exodus:prefs}defaultnick") == "Hamlet"
        # another element of the same namespace is another document: nothing stored yet
        reply = await iq(alice, "get", f"<query xmlns='{PRIVATE}'><other xmlns='exodus:prefs'/></query>")
        empty = reply.xml.find(f"{{{PRIVATE}}}query/{{exodus:prefs}}other")
        assert empty is not None and len(empty) == 0
        # replacing one fragment leaves the other alone
        await iq(alice, "set", f"<query xmlns='{PRIVATE}'><exodus xmlns='exodus:prefs'><defaultnick>Ham"
                               f"</defaultnick></exodus></query>")
        reply = await iq(alice, "get", f"<query xmlns='{PRIVATE}'><notes xmlns='storage:rosternotes'/></query>")
        assert reply.xml.find(f"{{{PRIVATE}}}query/{{storage:rosternotes}}notes").findtext(
            "{storage:rosternotes}note") == "friend"


async def test_nobody_reads_or_writes_another_users_private_storage(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        await iq(alice, "set", f"<query xmlns='{PRIVATE}'><secret xmlns='urn:example'>s3cret</secret></query>")
        reply = await iq(bob, "get", f"<query xmlns='{PRIVATE}'><secret xmlns='urn:example'/></query>", to=jid("alice"))
        assert error_of(reply)[0] == "forbidden" and "s3cret" not in str(reply)
        reply = await iq(bob, "set", f"<query xmlns='{PRIVATE}'><secret xmlns='urn:example'>mine</secret></query>",
                         to=jid("alice"))
        assert error_of(reply)[0] == "forbidden"
        reply = await iq(alice, "get", f"<query xmlns='{PRIVATE}'><secret xmlns='urn:example'/></query>")
        assert reply.xml.find(f"{{{PRIVATE}}}query/{{urn:example}}secret").text == "s3cret"


async def test_bad_requests_are_refused_with_a_reason(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        for itype, payload, condition in [
            ("set", f"<query xmlns='{PRIVATE}'><vCard xmlns='vcard-temp'><FN>x</FN></vCard></query>", "not-acceptable"),
            ("set", f"<query xmlns='{PRIVATE}'><q xmlns='jabber:iq:roster'/></query>", "not-acceptable"),
            ("get", f"<query xmlns='{PRIVATE}'><q xmlns='http://jabber.org/protocol/disco#info'/></query>",
             "not-acceptable"),
            ("set", f"<query xmlns='{PRIVATE}'><plain/></query>", "not-acceptable"),
            ("set", f"<query xmlns='{PRIVATE}'/>", "not-acceptable"),
            ("get", f"<query xmlns='{PRIVATE}'/>", "bad-request"),
            ("get", f"<query xmlns='{PRIVATE}'><a xmlns='urn:a'/><b xmlns='urn:b'/></query>", "bad-request"),
        ]:
            got, _app, text = error_of(await iq(alice, itype, payload))
            assert got == condition and text, payload


async def test_private_xml_is_kept_across_a_restart_and_bounded(tmp_path):
    config = {"modules": {"private": {"max_size": 2048, "max_fragments": 2}}}
    with RunningServer(domains=[DOMAIN], config=config, data_dir=tmp_path) as server:
        server.add_user(jid("alice"), USERS["alice"])
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            assert (await iq(alice, "set", f"<query xmlns='{PRIVATE}'><a xmlns='urn:a'>kept</a></query>"))["type"] == "result"
            big = "<b xmlns='urn:b'>" + "x" * 4000 + "</b>"
            assert error_of(await iq(alice, "set", f"<query xmlns='{PRIVATE}'>{big}</query>"))[0] == "not-acceptable"
            await iq(alice, "set", f"<query xmlns='{PRIVATE}'><b xmlns='urn:b'/></query>")
            condition, _, text = error_of(await iq(alice, "set", f"<query xmlns='{PRIVATE}'><c xmlns='urn:c'/></query>"))
            assert condition == "not-acceptable" and "2" in text
    with RunningServer(domains=[DOMAIN], config=config, data_dir=tmp_path) as server:
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            reply = await iq(alice, "get", f"<query xmlns='{PRIVATE}'><a xmlns='urn:a'/></query>")
            assert reply.xml.find(f"{{{PRIVATE}}}query/{{urn:a}}a").text == "kept"
