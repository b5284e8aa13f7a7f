"""XEP-0114 external components: slixmpp's ComponentXMPP connects as bot.example.com.

    component -> <stream:stream xmlns='jabber:component:accept' to='bot.example.com'>
    server    -> <stream:stream ... from='bot.example.com' id='ID'>
    component -> <handshake>sha1(ID + secret)</handshake>
    server    -> <handshake/>                       (or <not-authorized/>, and the stream ends)
    alice     -> <message to='echo@bot.example.com'/>   delivered to the component, from alice's full JID
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from stockade.testing.raw import RawStream, header
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import TIMEOUT, client

DOMAIN = "example.com"
BOT = "bot.example.com"
SECRET = "bot-shared-secret-1"
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22"}


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"


class Component(slixmpp.ComponentXMPP):
    """A real external component that records what it receives in queues."""

    def __init__(self, domain: str, secret: str, port: int) -> None:
        super().__init__(domain, secret, host="127.0.0.1", port=port)
        self.register_plugin("xep_0030")        # answers disco#info like any real component
        self.messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.stream_errors: asyncio.Queue[Any] = asyncio.Queue()
        self.disconnected_event = asyncio.Event()
        self._outcome: asyncio.Future[bool] | None = None
        self.add_event_handler("session_start", lambda _: self._settle(True))
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("disconnected", self._on_disconnected)

    def _settle(self, accepted: bool) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(accepted)

    def _on_disconnected(self, _: Any) -> None:
        self.disconnected_event.set()
        self._settle(False)

    async def handshake(self, timeout: float = TIMEOUT) -> bool:
        """Connect and send the handshake; True once the server answered <handshake/>,
        False when it ended the stream instead."""
        self._outcome = asyncio.get_running_loop().create_future()
        self.connect()
        return await asyncio.wait_for(self._outcome, timeout)

    async def next_stream_error(self, timeout: float = TIMEOUT) -> Any:
        return await asyncio.wait_for(self.stream_errors.get(), timeout)

    async def close(self, timeout: float = TIMEOUT) -> None:
        if not self.disconnected_event.is_set():
            self.disconnect()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.disconnected_event.wait(), timeout)


@contextlib.asynccontextmanager
async def component(server: RunningServer, domain: str = BOT, secret: str = SECRET) -> AsyncIterator[Component]:
    """An authenticated component for `domain`."""
    comp = Component(domain, secret, server.server.ports["component"])
    try:
        assert await comp.handshake(), f"the component {domain} was refused"
        yield comp
    finally:
        await comp.close()


@pytest.fixture
def server() -> Iterator[RunningServer]:
    config = {"components": [{"domain": BOT, "secret": SECRET}],
              "component_listener": {"enabled": True, "port": 0}}
    with RunningServer(domains=[DOMAIN], config=config) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        yield srv


async def _bounced(user: Any, to: str) -> slixmpp.Message:
    """`user` sends a chat message to `to` and returns the error that comes back."""
    user.send_message(mto=to, mbody="anyone there?", mtype="chat")
    reply = await user.next_message()
    assert reply["type"] == "error", f"expected an error from {to}, got {reply}"
    assert reply["from"] == to
    return reply


async def test_the_component_authenticates_with_the_shared_secret(server):
    comp = Component(BOT, SECRET, server.server.ports["component"])
    try:
        assert await comp.handshake()
    finally:
        await comp.close()


async def test_a_user_and_the_component_exchange_messages(server):
    async with component(server) as bot, client(server, jid("alice"), USERS["alice"]) as alice:
        alice.send_message(mto=f"echo@{BOT}", mbody="ping?", mtype="chat")
        received = await asyncio.wait_for(bot.messages.get(), TIMEOUT)
        assert received["body"] == "ping?"
        assert received["to"] == f"echo@{BOT}"
        assert received["from"] == alice.boundjid             # the full JID, stamped by the server

        bot.send_message(mto=received["from"], mfrom=f"echo@{BOT}", mbody="pong: ping?", mtype="chat")
        reply = await alice.next_message()
        assert reply["body"] == "pong: ping?"
        assert reply["from"] == f"echo@{BOT}" and reply["type"] == "chat"
    # Both directions are in the compliance journal, under the user's host.
    journal = server.server.journal
    await server.acall(journal.flush())
    records = await server.acall(journal.read(host=DOMAIN, kind="chat"))
    conversation = " ".join(sorted((f"echo@{BOT}", jid("alice"))))
    bodies = [r.payload["stanza"] for r in records if r.conversation == conversation]
    assert any("ping?" in b for b in bodies) and any("pong: ping?" in b for b in bodies)


async def test_a_user_queries_the_component_and_gets_its_answer(server):
    async with component(server), client(server, jid("alice"), USERS["alice"]) as alice:
        info = await alice.plugin["xep_0030"].get_info(jid=BOT, timeout=TIMEOUT)
        assert info["from"] == BOT
        assert "http://jabber.org/protocol/disco#info" in info["disco_info"]["features"]


async def test_a_wrong_secret_is_refused_and_the_component_never_becomes_routable(server):
    impostor = Component(BOT, "not-the-secret", server.server.ports["component"])
    try:
        assert not await impostor.handshake()
        error = await impostor.next_stream_error()
        assert error["condition"] == "not-authorized"
    finally:
        await impostor.close()
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await _bounced(alice, f"echo@{BOT}")
        assert reply["error"]["condition"] == "service-unavailable"


@pytest.mark.parametrize("first", [
    "<handshake>\u00e9t\u00e9</handshake>",                                  # not hex, not even ASCII
    "<handshake/>",                                                   # empty
    f"<message from='{BOT}' to='alice@{DOMAIN}'><body>hi</body></message>",   # a stanza before it
])
async def test_anything_but_the_right_handshake_gets_not_authorized(server, first):
    raw = await RawStream.open(server, port=server.server.ports["component"])
    try:
        await raw.send(header(BOT, "jabber:component:accept"))
        opened = await raw.read_until(r"<stream:stream [^>]*>")
        assert b"<stream:stream" in opened and f"from=\"{BOT}\"".encode() in opened
        await raw.send(first.encode())
        rest = await raw.read_to_close()
        assert b"<stream:error><not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>" in rest
        assert rest.endswith(b"</stream:stream>")
    finally:
        await raw.close()


async def test_a_domain_without_a_configured_component_is_refused(server):
    stranger = Component("stranger.example.com", SECRET, server.server.ports["component"])
    try:
        assert not await stranger.handshake()
        assert (await stranger.next_stream_error())["condition"] == "host-unknown"
    finally:
        await stranger.close()


@pytest.mark.parametrize("forged", [
    f"alice@{DOMAIN}/laptop",        # a user of the server
    DOMAIN,                          # the server itself
    "evil.example.org",              # some other domain
    f"x@{BOT}.evil.org",             # a domain that only starts like the component's
])
async def test_a_component_may_not_send_from_another_domain(server, forged):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        async with component(server) as bot:
            bot.send_message(mto=jid("bob"), mfrom=forged, mbody="trust me", mtype="chat")
            error = await bot.next_stream_error()
            assert error["condition"] == "invalid-from"
            await asyncio.wait_for(bot.disconnected_event.wait(), TIMEOUT)
        # Had the forged message been routed, it would have reached bob before this one.
        alice.send_message(mto=jid("bob"), mbody="after the forgery", mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == "after the forgery" and msg["from"] == alice.boundjid


async def test_stanzas_to_a_component_that_never_connected_get_service_unavailable(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await _bounced(alice, f"echo@{BOT}")
        assert reply["error"]["condition"] == "service-unavailable"
        with pytest.raises(IqError) as refused:
            await alice.plugin["xep_0030"].get_info(jid=BOT, timeout=TIMEOUT)
        assert refused.value.iq["error"]["condition"] == "service-unavailable"


async def test_a_message_to_a_component_that_left_gets_service_unavailable(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        async with component(server) as bot:
            alice.send_message(mto=f"echo@{BOT}", mbody="are you there?", mtype="chat")
            assert (await asyncio.wait_for(bot.messages.get(), TIMEOUT))["body"] == "are you there?"
        reply = await _bounced(alice, f"echo@{BOT}")
        assert reply["error"]["condition"] == "service-unavailable"


async def test_the_server_lists_the_component_in_its_disco_items(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=TIMEOUT)
        assert (BOT, None, None) in items["disco_items"]["items"]


async def test_on_shutdown_the_component_gets_system_shutdown(server):
    async with component(server) as bot:
        await server.acall(server.server.stop())
        assert (await bot.next_stream_error())["condition"] == "system-shutdown"
        await asyncio.wait_for(bot.disconnected_event.wait(), TIMEOUT)
