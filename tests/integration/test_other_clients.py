"""Interop: independent XMPP clients (go-sendxmpp, profanity) chat with slixmpp through Stockade.

RFC 6120 streams (STARTTLS, XEP-0368 direct TLS, SASL, bind) and RFC 6121 messages, presence and
subscriptions, as implemented by go-xmpp (go-sendxmpp) and libstrophe (profanity), not by slixmpp.
Both clients verify the server's self-signed certificate (SSL_CERT_FILE), none skips verification.
A missing program fails the test with the Debian package to install (see terminal_clients).
"""

from __future__ import annotations

import asyncio

import pytest

from stockade.testing.terminal_clients import TIMEOUT, go_sendxmpp_listener, go_sendxmpp_send, profanity
from stockade.testing.xmpp import client

from .conftest import USERS, jid


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
async def test_go_sendxmpp_message_reaches_bob(server, direct_tls):
    body = "hello bob <from> go-sendxmpp & friends: ünïcödé ✓"
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        # alice (go-sendxmpp, to localhost:<port> so the name matches the cert) sends
        # <message to='bob@example.com' type='chat'><body>hello bob &lt;from&gt; …</body></message>
        await go_sendxmpp_send(server, jid("alice"), USERS["alice"], to=jid("bob"), body=body,
                               direct_tls=direct_tls)
        # bob receives it from alice's bare JID (and her go-sendxmpp resource)
        msg = await bob.next_message(timeout=TIMEOUT)
        assert msg["body"] == body
        assert msg["type"] == "chat"
        assert msg["from"].bare == jid("alice")
        assert msg["from"].resource.startswith("go-sendxmpp")


async def test_go_sendxmpp_listener_receives_bobs_messages(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob, \
               go_sendxmpp_listener(server, jid("alice"), USERS["alice"]) as alice:
        # alice (go-sendxmpp -l) binds a resource and sends initial presence; the server reflects it
        alice_full = await alice.wait_online()
        assert alice_full.startswith(jid("alice") + "/go-sendxmpp")
        # bob sends <message to='alice@example.com' type='chat'>; alice prints it
        bob.send_message(mto=jid("alice"), mbody="hi alice, it's bob", mtype="chat")
        assert await alice.next_message() == (jid("bob"), "hi alice, it's bob")
        # bob sends <message to='alice@example.com/go-sendxmpp.…'>; alice prints it too
        bob.send_message(mto=alice_full, mbody="and again, to your resource", mtype="chat")
        assert await alice.next_message() == (jid("bob"), "and again, to your resource")


async def test_profanity_chats_with_bob(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob, profanity(server.cert_path) as alice:
        # alice (profanity) logs in over STARTTLS, verifying the certificate
        await alice.login(jid("alice"), USERS["alice"], port=server.c2s_port)
        # alice sends <message to='bob@example.com' type='chat'><body>hello bob from profanity</body>
        await alice.type(f"/msg {jid('bob')} hello bob from profanity")
        msg = await bob.next_message(timeout=TIMEOUT)
        assert msg["body"] == "hello bob from profanity"
        assert msg["type"] == "chat"
        assert msg["from"].bare == jid("alice")
        assert msg["from"].resource.startswith("profanity")
        # bob replies to alice's full JID; profanity shows it in the chat window
        bob.send_message(mto=msg["from"], mbody="hi alice, bob here", mtype="chat")
        await alice.wait_for(f"{bob.boundjid}: hi alice, bob here")


async def test_profanity_sees_bob_online_after_subscription(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob, profanity(server.cert_path) as alice:
        await alice.login(jid("alice"), USERS["alice"], port=server.c2s_port)
        # alice sends <presence to='bob@example.com' type='subscribe'/>
        await alice.type(f"/sub request {jid('bob')}")
        await alice.wait_for(f"Sent subscription request to {jid('bob')}")
        request = await asyncio.wait_for(bob.subscription_requests.get(), TIMEOUT)
        assert request["from"] == jid("alice")
        # bob sends <presence to='alice@example.com' type='subscribed'/>; the server delivers it
        # and then bob's current presence (RFC 6121 3.1.5), which profanity shows in its console
        bob.send_presence(pto=jid("alice"), ptype="subscribed")
        await alice.wait_for(f"Subscription received from {jid('bob')}")
        await alice.wait_for(f"++ {jid('bob')} ({bob.boundjid.resource}) is online")
