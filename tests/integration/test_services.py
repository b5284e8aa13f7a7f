"""Server services: XEP-0030 disco, XEP-0199 ping, XEP-0092 version (hideable), XEP-0054 vCard."""

from __future__ import annotations

from slixmpp.xmlstream import ET

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid

DISCO = "http://jabber.org/protocol/disco#info"


async def test_server_disco_lists_identity_and_features(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN)
        features = set(info["disco_info"]["features"])
        assert {DISCO, "http://jabber.org/protocol/disco#items", "urn:xmpp:ping", "jabber:iq:version",
                "vcard-temp", "msgoffline"} <= features
        assert ("server", "im", None, "Stockade") in info["disco_info"]["identities"]
        own = await alice.plugin["xep_0030"].get_info(jid=jid("alice"))
        assert ("account", "registered", None, None) in own["disco_info"]["identities"]
        assert "jabber:iq:roster" in own["disco_info"]["features"]


async def test_ping_and_version(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        await alice.roundtrip()
        version = await alice.plugin["xep_0092"].get_version(DOMAIN)
        assert version["software_version"]["name"] == "Stockade"
        assert version["software_version"]["version"]


async def test_version_can_be_hidden():
    with RunningServer([DOMAIN], config={"server": {"hide_version": True}}) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            version = await alice.plugin["xep_0092"].get_version(DOMAIN)
            assert version["software_version"]["name"] == "Stockade"
            assert not version["software_version"]["version"] and not version["software_version"]["os"]


def vcard_iq(c, type_: str, to: str | None = None, fn: str | None = None):
    iq = c.Iq(stype=type_)
    if to:
        iq["to"] = to
    card = ET.SubElement(iq.xml, "{vcard-temp}vCard")
    if fn:
        ET.SubElement(card, "{vcard-temp}FN").text = fn
    return iq


async def test_vcard_set_by_owner_read_by_others_never_changed_by_others(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        empty = await alice.query(vcard_iq(alice, "get"))
        assert empty["type"] == "result"
        missing = await bob.query(vcard_iq(bob, "get", to=jid("alice")))
        assert missing["error"]["condition"] == "item-not-found"
        assert (await alice.query(vcard_iq(alice, "set", fn="Alice Example")))["type"] == "result"
        card = await bob.query(vcard_iq(bob, "get", to=jid("alice")))
        assert card.xml.find("{vcard-temp}vCard/{vcard-temp}FN").text == "Alice Example"
        forged = await bob.query(vcard_iq(bob, "set", to=jid("alice"), fn="Mallory"))
        assert forged["error"]["condition"] == "forbidden"
        card = await alice.query(vcard_iq(alice, "get"))
        assert card.xml.find("{vcard-temp}vCard/{vcard-temp}FN").text == "Alice Example"


async def test_iq_to_a_missing_account_or_unknown_namespace_is_service_unavailable(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        iq = alice.make_iq_get(queryxmlns="urn:example:nothing", ito=DOMAIN)
        assert (await alice.query(iq))["error"]["condition"] == "service-unavailable"
        ghost = alice.make_iq_get(queryxmlns="vcard-temp", ito=f"ghost@{DOMAIN}")
        assert (await alice.query(ghost))["error"]["condition"] == "service-unavailable"


async def test_virtual_hosts_keep_their_users_apart(server):
    server.add_user("alice@other.org", "other-alice-pw")
    async with client(server, "alice@other.org", "other-alice-pw") as other, \
               client(server, jid("alice"), USERS["alice"]) as alice:
        other.send_message(mto=jid("alice"), mbody="hello namesake", mtype="chat")
        msg = await alice.next_message()
        assert str(msg["from"].bare) == "alice@other.org"
    # each domain checks its own passwords
    from stockade.testing.xmpp import Client
    wrong = Client("alice@other.org", USERS["alice"], port=server.c2s_port, cert=server.cert_path)
    try:
        assert await wrong.login() is False
    finally:
        await wrong.close()
    assert server.call(server.server.accounts.list("other.org")) == [("other.org", "alice")]
