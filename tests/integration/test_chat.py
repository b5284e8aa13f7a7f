"""Two real clients log in with SCRAM over STARTTLS and chat (RFC 6120/6121 messages)."""

from __future__ import annotations

from stockade.testing.xmpp import client

from .conftest import USERS, jid


async def test_alice_and_bob_chat(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        alice.send_message(mto=jid("bob"), mbody="hello bob", mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == "hello bob"
        assert msg["from"].bare == jid("alice") and msg["from"].resource == alice.boundjid.resource
        bob.send_message(mto=msg["from"], mbody="hi alice", mtype="chat")
        reply = await alice.next_message()
        assert reply["body"] == "hi alice" and reply["from"] == bob.boundjid
