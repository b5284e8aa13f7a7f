"""XEP-0357 push notifications to an app server (a component, push.example.com).

    alice  -> <iq type='set'><enable xmlns='urn:xmpp:push:0' jid='push.example.com' node='alices-phone'>
                <x xmlns='jabber:x:data'>FORM_TYPE=pubsub#publish-options, secret</x></enable></iq>
    alice logs out; bob -> alice: "the merger is off"  (stored offline: MessageHeld)
    server -> push.example.com: <iq type='set' from='alice@example.com'><pubsub><publish node='alices-phone'>
                <item><notification xmlns='urn:xmpp:push:0'><x>FORM_TYPE=urn:xmpp:push:summary,
                message-count=1, last-message-sender=bob@example.com</x></notification></item></publish>
                <publish-options>the secret</publish-options></pubsub></iq>           (no body)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from stockade.protocol.jid import parse_jid
from stockade.testing.clock import FakeClock
from stockade.testing.raw import RawStream
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import TIMEOUT, client

from .conftest import DOMAIN, USERS, jid
from .test_component import Component

APP = "push.example.com"
APP_SECRET = "push-shared-secret-1"
NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SM = "urn:xmpp:sm:3"


class AppServer(Component):
    """The XMPP side of a push app server: records each publish and answers as told."""

    def __init__(self, port: int) -> None:
        super().__init__(APP, APP_SECRET, port)
        self.publishes: asyncio.Queue[Any] = asyncio.Queue()
        self.refuse: dict[str, str] = {}            # node -> error condition to answer with
        self.register_handler(Callback("push publish", MatchXPath(
            f"{{jabber:component:accept}}iq/{{{NS_PUBSUB}}}pubsub"), self._on_publish))

    def _on_publish(self, iq: Any) -> None:
        self.publishes.put_nowait(iq)
        node = iq.xml.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish").get("node")
        reply = iq.reply(clear=True)
        if node in self.refuse:
            reply["type"] = "error"
            error = ET.SubElement(reply.xml, "{jabber:component:accept}error", {"type": "cancel"})
            ET.SubElement(error, f"{{{STANZAS}}}{self.refuse[node]}")
        reply.send()

    async def next_publish(self) -> dict[str, Any]:
        iq = await asyncio.wait_for(self.publishes.get(), TIMEOUT)
        return notification(iq)


def notification(iq: Any) -> dict[str, Any]:
    """What a publish says: who sent it, to which node, the summary form, the publish options."""
    pubsub = iq.xml.find(f"{{{NS_PUBSUB}}}pubsub")
    publish = pubsub.find(f"{{{NS_PUBSUB}}}publish")
    form = publish.find(f"{{{NS_PUBSUB}}}item/{{{NS_PUSH}}}notification/{{{NS_DATA}}}x")
    options = pubsub.find(f"{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x")
    return {"from": str(iq["from"]), "type": iq["type"], "node": publish.get("node"),
            "form_type": form.get("type"), "summary": fields(form), "options": fields(options),
            "xml": str(iq)}


def fields(form: Any) -> dict[str, str] | None:
    if form is None:
        return None
    return {f.get("var"): f.findtext(f"{{{NS_DATA}}}value") for f in form.findall(f"{{{NS_DATA}}}field")}


def config(**push: Any) -> dict[str, Any]:
    return {"modules": {"push": {"min_interval": 0.0, **push}},
            "components": [{"domain": APP, "secret": APP_SECRET}],
            "component_listener": {"enabled": True, "port": 0}}


def start(data_dir: Path | None = None, clock: FakeClock | None = None, users: bool = True,
          **push: Any) -> RunningServer:
    srv = RunningServer(domains=[DOMAIN, "other.org"], config=config(**push), data_dir=data_dir, clock=clock).start()
    for user, password in USERS.items() if users else ():
        srv.add_user(jid(user), password)
    return srv


@pytest.fixture
def server() -> Iterator[RunningServer]:
    srv = start()
    try:
        yield srv
    finally:
        srv.stop()


@contextlib.asynccontextmanager
async def app_server(server: RunningServer) -> AsyncIterator[AppServer]:
    app = AppServer(server.server.ports["component"])
    try:
        assert await app.handshake()
        yield app
    finally:
        await app.close()


def enable(user: Any, app: str = APP, node: str | None = "alices-phone", secret: str | None = None) -> Any:
    iq = user.make_iq_set()
    attrs = {"jid": app} if app is not None else {}
    if node is not None:
        attrs["node"] = node
    el = ET.SubElement(iq.xml, f"{{{NS_PUSH}}}enable", attrs)
    if secret is not None:
        form = ET.SubElement(el, f"{{{NS_DATA}}}x", {"type": "submit"})
        for var, value in (("FORM_TYPE", PUBLISH_OPTIONS), ("secret", secret)):
            ET.SubElement(ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var}), f"{{{NS_DATA}}}value").text = value
    return iq


def disable(user: Any, app: str = APP, node: str | None = None) -> Any:
    iq = user.make_iq_set()
    ET.SubElement(iq.xml, f"{{{NS_PUSH}}}disable", {"jid": app, **({"node": node} if node else {})})
    return iq


async def ok(user: Any, iq: Any) -> None:
    reply = await user.query(iq)
    assert reply["type"] == "result", reply


async def alice_enables(server: RunningServer, *iqs: Any) -> None:
    """alice logs in, sends these <enable/> and <disable/> requests, and logs out."""
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        for build in iqs:
            await ok(alice, build(alice))


async def bob_writes(server: RunningServer, *bodies: str) -> None:
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        for body in bodies:
            bob.send_message(mto=jid("alice"), mbody=body, mtype="chat")
        await bob.roundtrip()


# -- the notification ---------------------------------------------------------------------------

async def test_a_message_for_an_offline_user_notifies_her_app_server_without_the_body(server):
    async with app_server(server) as app:
        await alice_enables(server, lambda a: enable(a, secret="eruio234vzxc2kla-91"))
        await bob_writes(server, "the merger is off")
        push = await app.next_publish()
        assert push["from"] == jid("alice") and push["type"] == "set" and push["node"] == "alices-phone"
        assert push["form_type"] == "submit"
        assert push["summary"] == {"FORM_TYPE": "urn:xmpp:push:summary", "message-count": "1",
                                   "last-message-sender": jid("bob")}
        assert push["options"] == {"FORM_TYPE": PUBLISH_OPTIONS, "secret": "eruio234vzxc2kla-91"}
        assert "merger" not in push["xml"]


async def test_the_body_goes_along_only_when_the_administrator_says_so():
    srv = start(include_body=True)
    try:
        async with app_server(srv) as app:
            await alice_enables(srv, enable)
            await bob_writes(srv, "lunch at noon?")
            push = await app.next_publish()
            assert push["summary"]["last-message-body"] == "lunch at noon?"
            assert push["options"] is None
    finally:
        srv.stop()


async def test_the_server_advertises_push_on_the_account(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        info = await alice.plugin["xep_0030"].get_info(jid=jid("alice"), timeout=TIMEOUT)
        assert NS_PUSH in info["disco_info"]["features"]


async def test_registrations_survive_a_restart(tmp_path):
    srv = start(data_dir=tmp_path)
    try:
        await alice_enables(srv, enable)
    finally:
        srv.stop()
    srv = start(data_dir=tmp_path, users=False)
    try:
        async with app_server(srv) as app:
            await bob_writes(srv, "still there?")
            assert (await app.next_publish())["node"] == "alices-phone"
    finally:
        srv.stop()


# -- disabling ----------------------------------------------------------------------------------

async def test_disable_stops_notifications_for_one_node_or_all(server):
    async with app_server(server) as app:
        await alice_enables(server, lambda a: enable(a, node="a-tablet"), lambda a: enable(a, node="b-phone"),
                            lambda a: disable(a, node="a-tablet"))
        await bob_writes(server, "one")
        assert (await app.next_publish())["node"] == "b-phone"
        await alice_enables(server, disable, lambda a: enable(a, node="c-laptop"))
        await bob_writes(server, "two")
        # Notifications go out in node order: had a-tablet or b-phone still been enabled, its
        # publish would have come first.
        assert (await app.next_publish())["node"] == "c-laptop"


async def test_an_error_from_the_app_server_disables_the_registration(server):
    async with app_server(server) as app:
        app.refuse["a-gone"] = "item-not-found"
        await alice_enables(server, lambda a: enable(a, node="a-gone"), lambda a: enable(a, node="b-kept"))
        await bob_writes(server, "first")
        assert [(await app.next_publish())["node"] for _ in range(2)] == ["a-gone", "b-kept"]
        await bob_writes(server, "second")
        assert (await app.next_publish())["node"] == "b-kept"


# -- who may receive them -----------------------------------------------------------------------

async def test_only_allowed_app_servers_can_be_enabled():
    srv = start(allowed_app_servers=[APP, "pusher@apps.example.net"])
    try:
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            await ok(alice, enable(alice, APP))
            await ok(alice, enable(alice, "pusher@apps.example.net"))
            for app in ("push.evil.example", "someone@apps.example.net", "evil.push.example.com"):
                reply = await alice.query(enable(alice, app))
                assert reply["error"]["condition"] == "not-allowed", app
                assert "ask your administrator" in reply["error"]["text"]
    finally:
        srv.stop()


@pytest.mark.parametrize("app", [DOMAIN, jid("bob"), "other.org", "carol@other.org/phone"])
async def test_the_server_and_its_users_are_not_app_servers(server, app):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await alice.query(enable(alice, app))
        assert reply["error"]["condition"] == "not-allowed" and reply["error"]["text"]


async def test_only_the_owner_enables_push_for_an_account(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        iq = enable(alice)
        iq["to"] = jid("bob")
        reply = await alice.query(iq)
        assert reply["error"]["condition"] == "forbidden" and reply["error"]["text"]


@pytest.mark.parametrize("build, condition", [
    (lambda a: enable(a, app=None), "bad-request"),
    (lambda a: enable(a, app="a@@b"), "jid-malformed"),
    (lambda a: enable(a, node=None), "bad-request"),
    (lambda a: disable(a, app=""), "bad-request"),
])
async def test_a_bad_request_gets_an_error_with_a_text(server, build, condition):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await alice.query(build(alice))
        assert reply["error"]["condition"] == condition and reply["error"]["text"]


async def test_publish_options_must_be_a_publish_options_form(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        iq = enable(alice, secret="s")
        iq.xml.find(f".//{{{NS_DATA}}}value").text = "urn:example:other"
        reply = await alice.query(iq)
        assert reply["error"]["condition"] == "bad-request" and PUBLISH_OPTIONS in reply["error"]["text"]


async def test_publish_options_are_kept_only_up_to_a_size(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await alice.query(enable(alice, secret="x" * 10_000))
        assert reply["error"]["condition"] == "not-acceptable" and "larger than" in reply["error"]["text"]


async def test_an_account_has_a_limited_number_of_registrations():
    srv = start(max_registrations=2)
    try:
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            for node in ("one", "two", "two"):          # the same node again replaces it
                await ok(alice, enable(alice, node=node))
            reply = await alice.query(enable(alice, node="three"))
            assert reply["error"]["condition"] == "resource-constraint" and reply["error"]["text"]
    finally:
        srv.stop()


# -- the rate limit -----------------------------------------------------------------------------

async def test_notifications_are_coalesced_but_the_count_is_never_lost():
    clock = FakeClock()
    srv = start(clock=clock, min_interval=60.0)
    try:
        async with app_server(srv) as app:
            await alice_enables(srv, enable)
            await bob_writes(srv, "one")
            assert (await app.next_publish())["summary"]["message-count"] == "1"
            await bob_writes(srv, "two", "three")         # within the minute: held back ...
            clock.advance(60)
            push = await app.next_publish()                # ... and counted in the next one
            assert push["summary"]["message-count"] == "3"
            assert push["summary"]["last-message-sender"] == jid("bob")
            # alice reads her messages; the count starts again
            await alice_enables(srv)
            await bob_writes(srv, "four")
            assert (await app.next_publish())["summary"]["message-count"] == "1"
    finally:
        srv.stop()


# -- a session waiting to be resumed (XEP-0198) ----------------------------------------------------

async def test_a_message_for_a_hibernating_session_notifies_too(server):
    async with app_server(server) as app:
        raw = await RawStream.open(server)
        await raw.login("alice", USERS["alice"], resource="phone")
        await raw.send(f"<presence/><iq type='set' id='push1'><enable xmlns='{NS_PUSH}' jid='{APP}' "
                       "node='alices-phone'/></iq>")
        assert b'type="result"' in await raw.read_until(r"<iq [^>]*id=\"push1\"[^>]*/?>")
        await raw.send(f"<enable xmlns='{SM}' resume='true'/>")
        await raw.read_until(r"<enabled[^>]*/>")
        raw.writer.transport.abort()                  # the phone loses its network
        await hibernating(server, jid("alice") + "/phone")
        await bob_writes(server, "are you there?")
        push = await app.next_publish()
        assert push["summary"]["message-count"] == "1" and push["node"] == "alices-phone"


async def hibernating(server: RunningServer, full: str) -> None:
    """Wait until the server keeps the session `full` for resumption, its connection gone."""
    session_jid = parse_jid(full)

    def is_hibernating() -> bool:
        session = server.server.sessions.get(session_jid)
        return session is not None and session.channel.connection is None

    async def poll() -> None:
        while not server.run(is_hibernating):
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), TIMEOUT)
