"""XEP-0198 Stream Management: acknowledgements, resumption after a dropped connection, and no
message lost when a session is never resumed."""

from __future__ import annotations

import asyncio
import re

import pytest

from stockade.protocol.jid import JID
from stockade.testing.raw import RawStream, header
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_presence import befriend

SM = "urn:xmpp:sm:3"


async def enable(raw: RawStream) -> str:
    await raw.send(f"<enable xmlns='{SM}' resume='true'/>")
    enabled = await raw.read_until(r"<enabled[^>]*/>")
    return re.search(rb'id="([^"]+)"', enabled).group(1).decode()


async def reconnect(server, user: str) -> RawStream:
    raw = await RawStream.open(server)
    await raw.starttls()
    assert b"success" in await raw.authenticate(user, USERS[user])
    await raw.send(header(DOMAIN))
    features = await raw.read_until(b"</stream:features>")
    assert f"<sm xmlns=\"{SM}\"/>".encode() in features
    return raw


async def test_the_server_counts_and_acknowledges(server):
    raw = await RawStream.open(server)
    await raw.login("alice", USERS["alice"], resource="sm")
    await raw.send(f"<enable xmlns='{SM}'/>")
    assert b"<enabled" in await raw.read_until(r"<enabled[^>]*/>")
    await raw.send("<presence/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
                   f"<r xmlns='{SM}'/>")
    answer = await raw.read_until(r"<a [^>]*/>")
    assert b'<a xmlns="urn:xmpp:sm:3" h="2"/>' in answer
    await raw.close()


async def test_resume_after_the_socket_dies_loses_nothing(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        raw = await RawStream.open(server)
        await raw.login("alice", USERS["alice"], resource="phone")
        await raw.send("<presence/>")
        previd = await enable(raw)
        bob.send_message(mto=jid("alice") + "/phone", mbody="before the drop", mtype="chat")
        await raw.read_until(b"before the drop")
        raw.writer.transport.abort()                  # the network goes away: no </stream:stream>
        for i in range(3):
            bob.send_message(mto=jid("alice"), mbody=f"while away {i}", mtype="chat")
        await bob.roundtrip()
        again = await reconnect(server, "alice")
        await again.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
        resumed = await again.read_until(r"<resumed[^>]*/>")
        assert f'previd="{previd}"'.encode() in resumed
        # nothing was acknowledged: the first message comes again, then the three others, in order
        data = await again.read_until(b"while away 2</body>")
        order = [m.decode() for m in re.findall(rb"<body>([^<]+)</body>", data)]
        assert order == ["before the drop", "while away 0", "while away 1", "while away 2"]
        # the session is the same: same full JID, and it keeps working
        bob.send_message(mto=jid("alice") + "/phone", mbody="after resume", mtype="chat")
        await again.read_until(b"after resume")
        await again.close()


async def test_a_session_never_resumed_sends_its_messages_to_offline_storage():
    with RunningServer([DOMAIN], config={"modules": {"stream_management": {"resume_timeout": 1.0}}}) as srv:
        for user in ("alice", "bob"):
            srv.add_user(jid(user), USERS[user])
        async with client(srv, jid("bob"), USERS["bob"]) as bob:
            async with client(srv, jid("alice"), USERS["alice"]) as alice:
                await befriend(alice, bob)             # so that bob sees alice go offline
            raw = await RawStream.open(srv)
            await raw.login("alice", USERS["alice"], resource="phone")
            await raw.send("<presence/>")
            await enable(raw)
            raw.writer.transport.abort()
            bob.send_message(mto=jid("alice"), mbody="please do not lose me", mtype="chat")
            gone = await bob.next_presence(jid("alice") + "/phone", match=lambda p: p["type"] == "unavailable")
            assert gone is not None            # the hibernation ended
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            msg = await alice.next_message()
            assert msg["body"] == "please do not lose me"
            assert msg.xml.find("{urn:xmpp:delay}delay") is not None


async def test_resuming_with_a_wrong_id_or_as_someone_else_fails_and_binding_still_works(server):
    raw = await RawStream.open(server)
    await raw.login("alice", USERS["alice"], resource="a")
    previd = await enable(raw)
    raw.writer.transport.abort()
    bob = await reconnect(server, "bob")
    await bob.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    failed = await bob.read_until(b"</failed>")
    assert b"<item-not-found" in failed
    await bob.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert b"<jid>bob@example.com/" in await bob.read_until(b"</iq>")
    stranger = await reconnect(server, "alice")
    await stranger.send(f"<resume xmlns='{SM}' previd='made-up' h='0'/>")
    assert b"<item-not-found" in await stranger.read_until(b"</failed>")
    await bob.close()
    await stranger.close()


async def test_an_impossible_acknowledgement_ends_the_stream(server):
    raw = await RawStream.open(server)
    await raw.login("alice", USERS["alice"])
    await enable(raw)
    await raw.send(f"<a xmlns='{SM}' h='99'/>")
    rest = await raw.read_to_close()
    assert b"<undefined-condition" in rest and b"handled-count-too-high" in rest


async def test_slixmpp_resumes_its_session_and_gets_exactly_what_it_missed(server):
    import asyncio

    from stockade.testing.xmpp import Client
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        alice = Client(jid("alice") + "/laptop", USERS["alice"], port=server.c2s_port, cert=server.cert_path,
                       plugins=("xep_0030", "xep_0199", "xep_0198"))
        alice.end_session_on_disconnect = False          # keep the stream management state
        enabled, resumed = asyncio.Event(), asyncio.Event()
        alice.add_event_handler("sm_enabled", lambda _: enabled.set())
        alice.add_event_handler("session_resumed", lambda _: resumed.set())
        try:
            assert await alice.login()
            await asyncio.wait_for(enabled.wait(), 20)
            bob.send_message(mto=jid("alice") + "/laptop", mbody="one", mtype="chat")
            assert (await alice.next_message())["body"] == "one"
            alice.abort_connection()
            await asyncio.wait_for(alice.disconnected_event.wait(), 20)
            alice.disconnected_event.clear()
            bob.send_message(mto=jid("alice") + "/laptop", mbody="two", mtype="chat")
            bob.send_message(mto=jid("alice"), mbody="three", mtype="chat")
            await bob.roundtrip()
            alice.connect("127.0.0.1", server.c2s_port)
            await asyncio.wait_for(resumed.wait(), 20)
            assert [(await alice.next_message())["body"] for _ in range(2)] == ["two", "three"]
            await alice.roundtrip()
            assert alice.pending(alice.messages) == []        # "one" was acknowledged, not resent
        finally:
            await alice.close()


async def test_an_acknowledgement_waits_until_the_message_is_archived(server):
    """XEP-0198: acknowledged means durable. With the archive's commits held, bob gets alice's
    message at once (delivery does not wait for the archive), but her <a/> only comes once the
    archive copies are committed."""
    writer = server.server.storage.archive_files.writers[0]
    gate = server.run(asyncio.Event)
    commit = writer._commit

    async def held_commit(batch):
        await gate.wait()
        await commit(batch)

    def stall() -> None:
        writer._commit = held_commit

    bob = await RawStream.open(server)
    await bob.login("bob", USERS["bob"], resource="desk")
    await bob.send("<presence/>")
    await bob.read_until(b"<presence")
    alice = await RawStream.open(server)
    await alice.login("alice", USERS["alice"], resource="sm")
    await enable(alice)
    server.run(stall)
    try:
        await alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m1'><body>kept</body></message>"
                         f"<r xmlns='{SM}'/>")
        assert b"kept" in await bob.read_until(b"</message>")
        with pytest.raises(asyncio.TimeoutError):
            await alice.read_until(r"<a [^>]*/>", timeout=1.0)     # the archive has not committed
    finally:
        server.run(gate.set)
    assert b'h="1"' in await alice.read_until(r"<a [^>]*/>")
    mam = server.server.storage.archive("mam")
    assert await server.acall(mam.count(DOMAIN, "alice")) == 1
    await alice.close()
    await bob.close()


async def test_a_client_without_stream_management_leaves_no_tracked_writes(server):
    """Nobody waits for the writes of a session that does not acknowledge stanzas: none are kept."""
    async with client(server, f"alice@{DOMAIN}", USERS["alice"]) as alice:
        for n in range(3):
            alice.send_message(mto=f"bob@{DOMAIN}", mbody=f"hello {n}", mtype="chat")
        await alice.roundtrip()
        await server.acall(server.server.storage.flush())
        (session,) = server.server.ctx.sessions.of_user(JID("alice", DOMAIN, None))
        assert session.waits_for_writes is False and session._writes == []
        assert await server.acall(server.server.storage.archive("mam").count(DOMAIN, "alice")) == 3
