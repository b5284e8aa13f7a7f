"""RFC 6120 section 7: resource binding; several resources; a duplicate resource replaces the old."""

from __future__ import annotations

from stockade.testing.raw import RawStream
from stockade.testing.xmpp import Client, client

from .conftest import USERS, jid


async def test_the_server_chooses_a_resource_when_none_is_asked(server):
    raw = await RawStream.open(server)
    answer = await raw.login("alice", USERS["alice"])
    assert b"<jid>alice@example.com/stockade-" in answer
    await raw.close()


async def test_a_second_login_with_the_same_resource_replaces_the_first(server):
    first = Client(jid("alice") + "/desk", USERS["alice"], port=server.c2s_port, cert=server.cert_path)
    assert await first.login()
    async with client(server, jid("alice") + "/desk", USERS["alice"]) as second, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        error = await first.next_of(first.stream_errors)
        assert error["condition"] == "conflict"
        await first.disconnected_event.wait()
        bob.send_message(mto=jid("alice") + "/desk", mbody="to the new one", mtype="chat")
        assert (await second.next_message())["body"] == "to the new one"
    await first.close()


async def test_a_bad_resource_is_refused_and_binding_can_be_retried(server):
    raw = await RawStream.open(server)
    await raw.starttls()
    assert b"success" in await raw.authenticate("alice", USERS["alice"])
    answer = await raw.bind("r" * 1100)          # longer than RFC 7622 allows
    assert b"type=\"error\"" in answer and b"<bad-request" in answer
    await raw.send(b"<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>ok</resource></bind></iq>")
    assert b"<jid>alice@example.com/ok</jid>" in await raw.read_until(b"</iq>")
    await raw.close()
