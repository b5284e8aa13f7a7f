"""XEP-0160 offline messages with XEP-0203 delay stamps; errors for unknown users; nothing lost."""

from __future__ import annotations

import asyncio

from slixmpp.xmlstream import ET

from stockade.modules.offline import FULL_RECOUNT, OfflineStore
from stockade.protocol.jid import JID
from stockade.testing.clock import FakeClock
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import TIMEOUT, client

from .conftest import DOMAIN, USERS, jid


async def test_messages_wait_for_the_next_login_in_order_with_a_delay_stamp(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        for i in range(3):
            alice.send_message(mto=jid("bob"), mbody=f"offline {i}", mtype="chat")
        # a typing notification alone is not worth keeping
        typing = alice.make_message(mto=jid("bob"), mtype="chat")
        typing.xml.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
        typing.send()
        await alice.roundtrip()
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        got = [await bob.next_message() for _ in range(3)]
        assert [m["body"] for m in got] == ["offline 0", "offline 1", "offline 2"]
        for m in got:
            delay = m.xml.find("{urn:xmpp:delay}delay")
            assert delay is not None and delay.get("from") == DOMAIN and delay.get("stamp").endswith("Z")
            assert m["from"].bare == jid("alice")
        await bob.roundtrip()
        assert bob.pending(bob.messages) == []
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        await bob.roundtrip()
        assert bob.pending(bob.messages) == []          # delivered once, then gone


async def test_offline_messages_survive_a_restart(tmp_path):
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        srv.add_user(jid("bob"), USERS["bob"])
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            alice.send_message(mto=jid("bob"), mbody="kept across restarts", mtype="chat")
            await alice.roundtrip()
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        async with client(srv, jid("bob"), USERS["bob"]) as bob:
            assert (await bob.next_message())["body"] == "kept across restarts"


async def test_a_message_to_an_unknown_user_is_bounced(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        alice.send_message(mto=f"nobody@{DOMAIN}", mbody="anyone?", mtype="chat")
        error = await alice.next_message()
        assert error["type"] == "error" and error["error"]["condition"] == "service-unavailable"
        alice.send_message(mto="someone@elsewhere.net", mbody="outside", mtype="chat")
        error = await alice.next_message()
        assert error["error"]["condition"] == "remote-server-not-found"


async def test_a_full_offline_store_answers_with_an_error_instead_of_dropping():
    with RunningServer([DOMAIN], config={"modules": {"offline": {"max_messages": 2}}}) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        srv.add_user(jid("bob"), USERS["bob"])
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            for i in range(2):
                alice.send_message(mto=jid("bob"), mbody=f"m{i}", mtype="chat")
            await alice.roundtrip()
            alice.send_message(mto=jid("bob"), mbody="one too many", mtype="chat")
            error = await alice.next_message()
            assert error["type"] == "error" and error["error"]["condition"] == "service-unavailable"
            assert error["body"] == "one too many"
        async with client(srv, jid("bob"), USERS["bob"]) as bob:
            assert [(await bob.next_message())["body"] for _ in range(2)] == ["m0", "m1"]


async def test_a_full_store_emptied_by_another_process_takes_messages_again():
    """The count is cached; retention run elsewhere (worker 0 with several worker processes,
    `stockade retention purge`) empties the store behind the cache's back. A store that looks
    full is counted again in the database, at most every FULL_RECOUNT seconds, before a message
    is refused."""
    clock = FakeClock()
    with RunningServer([DOMAIN], clock=clock, config={"modules": {"offline": {"max_messages": 2}}}) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        srv.add_user(jid("bob"), USERS["bob"])
        offline = srv.run(lambda: srv.server.ctx.services[OfflineStore])

        async def refused(body: str) -> bool:
            before = len(alice.pending(alice.messages))
            alice.send_message(mto=jid("bob"), mbody=body, mtype="chat")
            await alice.roundtrip()          # an error comes before the answer to the ping
            errors = alice.pending(alice.messages)[before:]
            assert all(e["error"]["condition"] == "service-unavailable" and e["body"] == body for e in errors)
            return bool(errors)

        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            assert not await refused("m0") and not await refused("m1")
            assert await refused("full")
            assert len(srv.call(offline.archive.pop_all(DOMAIN, "bob"))) == 2      # not through the cache
            assert await refused("counted a moment ago")       # no query per message meanwhile
            clock.advance(FULL_RECOUNT + 1)
            assert not await refused("room again")
        async with client(srv, jid("bob"), USERS["bob"]) as bob:
            assert (await bob.next_message())["body"] == "room again"
            await bob.roundtrip()
            assert bob.pending(bob.messages) == []


async def test_a_message_stored_just_as_the_recipient_comes_online_is_delivered():
    """The store of a message can be half done (reading how many are waiting) when the
    recipient's first presence arrives: the delivery at login must not miss it."""
    with RunningServer([DOMAIN]) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        srv.add_user(jid("bob"), USERS["bob"])
        bob_bare = JID("bob", DOMAIN, None)
        offline = srv.run(lambda: srv.server.ctx.services[OfflineStore])
        read_count, take_lock = offline.archive.count, offline._lock
        seen = {"reads": 0, "locks": 0}

        async def held_count(host: str, username: str) -> int:
            if username == "bob":
                seen["reads"] += 1
                if seen["reads"] == 1:
                    # The store's read: let it finish only once bob is available and his
                    # delivery has started looking.
                    deadline = asyncio.get_running_loop().time() + TIMEOUT
                    while not (srv.server.sessions.available(bob_bare)
                               and (seen["reads"] > 1 or seen["locks"] > 1)):
                        assert asyncio.get_running_loop().time() < deadline, "bob never came online"
                        await asyncio.sleep(0.01)
            return await read_count(host, username)

        def counted_lock(bare: JID) -> asyncio.Lock:
            if bare == bob_bare:
                seen["locks"] += 1
            return take_lock(bare)

        def patch() -> None:
            offline.archive.count = held_count
            offline._lock = counted_lock
        srv.run(patch)
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            alice.send_message(mto=jid("bob"), mbody="just in time", mtype="chat")
            async with client(srv, jid("bob"), USERS["bob"]) as bob:
                assert (await bob.next_message())["body"] == "just in time"
