"""XEP-0479 (XMPP Compliance Suites 2023), Advanced Server level, plus XEP-0065, XEP-0160,
XEP-0384 support and roster versioning: everything is advertised where clients look for it.
docs/standards.md maps each item to the tests that exercise the behaviour itself."""

from __future__ import annotations

import re

from stockade.testing.raw import RawStream, header
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid

# Features a client discovers on the server (disco#info on the domain).
SERVER_FEATURES = {
    "http://jabber.org/protocol/disco#info": "XEP-0030",
    "http://jabber.org/protocol/disco#items": "XEP-0030",
    "vcard-temp": "XEP-0054",
    "urn:xmpp:carbons:2": "XEP-0280",
    "urn:xmpp:extdisco:2": "XEP-0215",
    "msgoffline": "XEP-0160",
    "urn:xmpp:ping": "XEP-0199",
}
# Features on the user's own account (disco#info on the bare JID).
ACCOUNT_FEATURES = {
    "jabber:iq:roster": "RFC 6121",
    "urn:xmpp:blocking": "XEP-0191",
    "urn:xmpp:mam:2": "XEP-0313",
    "urn:xmpp:sid:0": "XEP-0359",
    "jabber:iq:private": "XEP-0049",
    "urn:xmpp:push:0": "XEP-0357",
    "http://jabber.org/protocol/pubsub#publish-options": "XEP-0163/XEP-0060 (XEP-0384 needs it)",
    "http://jabber.org/protocol/pubsub#publish": "XEP-0163",
    "http://jabber.org/protocol/pubsub#persistent-items": "XEP-0223",
    "urn:xmpp:bookmarks:1#compat": "XEP-0402/XEP-0411",
    "urn:xmpp:pep-vcard-conversion:0": "XEP-0398",
}
# Elements in the stream features after authentication.
STREAM_FEATURES = {
    b'<sm xmlns="urn:xmpp:sm:3"/>': "XEP-0198",
    b'<csi xmlns="urn:xmpp:csi:0"/>': "XEP-0352",
    b'<ver xmlns="urn:xmpp:features:rosterver"/>': "RFC 6121 roster versioning",
    b'<sub xmlns="urn:xmpp:features:pre-approval"/>': "RFC 6121 pre-approval",
    b'<c xmlns="http://jabber.org/protocol/caps"': "XEP-0115",
}


async def features(alice, target: str, node: str | None = None) -> tuple[set[str], set[tuple]]:
    info = await alice.plugin["xep_0030"].get_info(jid=target, node=node)
    return set(info["disco_info"]["features"]), set(info["disco_info"]["identities"])


async def test_everything_of_the_advanced_server_suite_is_advertised():
    config = {"modules": {"proxy65": {"enabled": True, "port": 0}},
              "component_listener": {"enabled": True, "port": 0}}
    with RunningServer([DOMAIN], config=config) as server:
        server.add_user(jid("alice"), USERS["alice"])
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            server_features, server_identities = await features(alice, DOMAIN)
            assert set(SERVER_FEATURES) <= server_features, set(SERVER_FEATURES) - server_features
            assert ("server", "im", None, "Stockade") in server_identities
            account_features, account_identities = await features(alice, jid("alice"))
            assert set(ACCOUNT_FEATURES) <= account_features, set(ACCOUNT_FEATURES) - account_features
            assert ("pubsub", "pep", None, None) in account_identities              # XEP-0163
            items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN)
            services = {item[0] for item in items["disco_items"]["items"]}
            assert {f"conference.{DOMAIN}", f"upload.{DOMAIN}", f"proxy.{DOMAIN}"} <= services
            muc, muc_ids = await features(alice, f"conference.{DOMAIN}")              # XEP-0045
            assert "http://jabber.org/protocol/muc" in muc and ("conference", "text") in {i[:2] for i in muc_ids}
            upload, _ = await features(alice, f"upload.{DOMAIN}")                      # XEP-0363
            assert "urn:xmpp:http:upload:0" in upload
            proxy, _ = await features(alice, f"proxy.{DOMAIN}")                        # XEP-0065
            assert "http://jabber.org/protocol/bytestreams" in proxy
        # stream features: STARTTLS required (RFC 6120/7590), then SASL, then the rest
        raw = await RawStream.open(server)
        await raw.send(header(DOMAIN))
        assert b"<required/>" in await raw.read_until(b"</stream:features>")
        await raw.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await raw.read_until(b"<proceed")
        await raw.writer.start_tls(raw._tls(server.cert_path), server_hostname="localhost")
        raw.received = b""
        assert b"success" in await raw.authenticate("alice", USERS["alice"])
        await raw.send(header(DOMAIN))
        after_auth = await raw.read_until(b"</stream:features>")
        for element, spec in STREAM_FEATURES.items():
            assert element in after_auth, spec
        await raw.close()
        # XEP-0368 direct TLS and RFC 7395 WebSocket have their own ports
        assert server.direct_tls_port and server.https_port
        assert re.match(r"\d+", str(server.server.ports["component"]))         # XEP-0114
