"""The compliance journal records what real clients do: 1:1 chat, group chat, uploads, subscription
requests and policy verdicts, read back decrypted through `Journal.read`.

    alice -> <message to='bob@example.com' type='chat'><body>quarterly numbers</body></message>
    journal: kind chat, conversation 'alice@example.com bob@example.com', the stanza as routed
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slixmpp.xmlstream import ET

from stockade.core.hooks import POLICY, StanzaFromClient
from stockade.core.verdict import Deny
from stockade.storage.journal import payload_aad
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from tests.integration.conftest import DOMAIN, USERS, jid
from tests.integration.test_muc_support import create, enter, groupchat_from, muc_client, room
from tests.integration.test_upload import put, request_slot


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A fresh server for example.com with four accounts; the journal is on by default."""
    with RunningServer(domains=[DOMAIN]) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        yield srv


def records(server: RunningServer, kind: str | None = None) -> list[Any]:
    journal = server.server.journal
    server.call(journal.flush())
    return server.call(journal.read(0, 10_000, kind=kind))


def stanza_texts(server: RunningServer, kind: str) -> list[str]:
    return [r.payload["stanza"] for r in records(server, kind)]


async def test_a_one_to_one_conversation_is_journaled_before_delivery(server: RunningServer) -> None:
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        alice.send_message(mto=jid("bob"), mbody="quarterly numbers", mtype="chat")
        assert (await bob.next_message())["body"] == "quarterly numbers"
        bob.send_message(mto=alice.boundjid, mbody="thanks", mtype="chat")
        await alice.next_message()
    chats = records(server, "chat")
    assert [r.payload["stanza"].count(body) for r, body in zip(chats, ("quarterly numbers", "thanks"))] == [1, 1]
    first, second = chats
    pair = f"{jid('alice')} {jid('bob')}"
    assert first.conversation == second.conversation == pair
    assert first.participants == pair and second.participants == f"{jid('bob')} {jid('alice')}"
    assert first.host == DOMAIN and first.payload["from"].startswith(jid("alice") + "/")
    assert first.payload["to"] == jid("bob") and first.payload["type"] == "chat"
    assert first.id < second.id
    # Encryption at rest is on by default: the stored payload is sealed, read() opened it.
    raw = server.call(server.server.storage.journal.rows(0, 10, kind="chat"))
    assert raw and all(b"quarterly" not in r.payload and b"thanks" not in r.payload for r in raw)


async def test_a_message_is_stored_as_the_stanza_routed_not_a_copy_in_json(server: RunningServer) -> None:
    """The record's payload is the stanza's own bytes (sealed when encryption at rest is on);
    its from, to and type are read back from the stanza's attributes."""
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        alice.send_message(mto=jid("bob"), mbody='5 < 6 & "quoted"', mtype="chat")
        assert (await bob.next_message())["body"] == '5 < 6 & "quoted"'
        sender = str(alice.boundjid)
    (record,) = records(server, "chat")
    storage = server.server.storage
    (row,) = [r for r in server.call(storage.journal.rows(0, 100)) if r.id == record.id]
    cipher = getattr(storage, "cipher", None)
    stored = server.call(cipher.unseal(row.payload, payload_aad(row.id))) if cipher is not None else row.payload
    assert stored.startswith(b"<message") and stored == record.payload["stanza"].encode()
    assert (record.payload["from"], record.payload["to"], record.payload["type"]) == (sender, jid("bob"), "chat")


async def test_chat_states_alone_are_not_journaled(server: RunningServer) -> None:
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        typing = alice.make_message(mto=jid("bob"), mtype="chat")
        typing.xml.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
        typing.send()
        alice.send_message(mto=jid("bob"), mbody="after typing", mtype="chat")
        await bob.next_message()
    assert len(records(server, "chat")) == 1


async def test_a_group_chat_is_journaled_once_under_the_room(server: RunningServer) -> None:
    lounge = room("lounge")
    async with muc_client(server, "alice") as alice, muc_client(server, "bob") as bob:
        await create(alice, lounge, "Alice")
        await enter(bob, lounge, "Bob")
        alice.send_message(mto=lounge, mbody="standup in five", mtype="groupchat")
        assert (await groupchat_from(bob, f"{lounge}/Alice"))["body"] == "standup in five"
    [record] = [r for r in records(server, "groupchat") if "standup in five" in r.payload["stanza"]]
    assert record.conversation == lounge
    assert record.participants == f"{jid('alice')} {lounge}"


async def test_an_upload_is_journaled_with_its_file(server: RunningServer) -> None:
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        put_url, get_url = await request_slot(alice, "plan.txt", 11, "text/plain")
        assert (await put(server, put_url, b"hello world")).status == 201
    [record] = records(server, "upload")
    assert record.conversation == record.participants == jid("alice")
    file = record.payload["file"]
    assert (file["filename"], file["size"], file["content_type"]) == ("plan.txt", 11, "text/plain")
    assert file["slot"] and file["slot"] in put_url and file["path"]


async def test_a_subscription_request_is_journaled(server: RunningServer) -> None:
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        alice.send_presence(pto=jid("bob"), ptype="subscribe")
        await bob.next_of(bob.subscription_requests)
    [record] = records(server, "subscription")
    assert record.payload["type"] == "subscribe"
    assert record.conversation == f"{jid('alice')} {jid('bob')}"
    assert record.participants == f"{jid('alice')} {jid('bob')}"


async def test_a_deny_verdict_is_journaled_and_the_message_is_not(server: RunningServer) -> None:
    def no_secrets(event: StanzaFromClient) -> Deny | None:
        body = event.stanza.find("body")
        if body is not None and "project-x" in body.text:
            return Deny("not-acceptable", "project-x may not be discussed here", rule="test.words")
        return None

    server.run(lambda: server.server.bus.on(StanzaFromClient, no_secrets, POLICY))
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        alice.send_message(mto=jid("bob"), mbody="about project-x", mtype="chat")
        error = await alice.next_message()
        assert error["type"] == "error", error
        assert error["error"]["condition"] == "not-acceptable", error
        alice.send_message(mto=jid("bob"), mbody="harmless", mtype="chat")
        assert (await bob.next_message())["body"] == "harmless"
    [verdict] = records(server, "verdict")
    assert verdict.payload["verdict"] == "deny" and verdict.payload["rule"] == "test.words"
    assert verdict.payload["text"] == "project-x may not be discussed here"
    assert "about project-x" in verdict.payload["stanza"]
    assert verdict.conversation == f"{jid('alice')} {jid('bob')}"
    assert [("harmless" in s) for s in stanza_texts(server, "chat")] == [True]
