"""WebSocket clients (RFC 7395) of accounts that live in another worker process ([server] workers = 2).

Worker 0 alone serves HTTPS. A WebSocket client whose account's home is worker 1 (alice, carol,
dave, erin) logs in there, and after <success/> worker 0 relays its messages to worker 1 over
a socket pair, each followed by a NUL byte (net/websocket.py, net/handoff.py); bob's home is
worker 0 and he connects over TCP. The conversations of a WebSocket client must work as with
one process, a message cannot forge a message boundary on the relay, closing either end closes
the other, and a relayed client stays counted for its address until it ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable

import pytest
import websockets

from stockade.testing.process import ServerProcess
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_websocket import FRAMING, tls
from .test_workers import home

TIMEOUT = 60.0                        # a loaded 2-core machine runs two workers and the clients
ERIN = ("erin", "erin-pw-5555")       # worker 1, in group "contractors": no web client for her
MAX_PER_ADDRESS = 8                   # [c2s] max_connections_per_address (every client is 127.0.0.1)
WRITE_LIMIT = 262144                  # [c2s] max_write_buffer
CLIENT = "{jabber:client}"
ROSTER = "{jabber:iq:roster}"
STREAM_ERROR = "{http://etherx.jabber.org/streams}error"
CONDITIONS = "{urn:ietf:params:xml:ns:xmpp-streams}"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> ServerProcess:
    proc = ServerProcess(tmp_path_factory.mktemp("workers-websocket"), [DOMAIN], config={
        "server": {"workers": 2, "log_level": "debug"}, "http": {"enabled": True},
        "c2s": {"max_connections_per_address": MAX_PER_ADDRESS, "max_write_buffer": WRITE_LIMIT},
        "hosts": [{"domain": DOMAIN, "permissions": {"deny": {"web_client": ["contractors"]}},
                   "policy": {"flood": {"enabled": False}}}]})
    for user, password in [*USERS.items(), ERIN]:
        assert proc.cli("user", "add", jid(user), "--password", password).status == 0
    assert proc.cli("group", "create", "contractors").status == 0
    assert proc.cli("group", "add", "contractors", ERIN[0]).status == 0
    with proc:
        yield proc


class Browser:
    """A WebSocket client: sends XML text, takes the frames it receives in order, or the first
    one that matches (the others wait for later calls, as `Client.next_of` does)."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.stash: list[str] = []

    async def send(self, xml: str) -> None:
        await self.ws.send(xml)

    async def next(self, match: Callable[[ET.Element], bool] = lambda e: True) -> ET.Element:
        for i, frame in enumerate(self.stash):
            if match(ET.fromstring(frame)):
                return ET.fromstring(self.stash.pop(i))
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
            element = ET.fromstring(frame)
            if match(element):
                return element
            self.stash.append(frame)

    async def until(self, *markers: str) -> list[str]:
        """The frames up to the first one containing one of `markers` (none may be stashed)."""
        assert not self.stash
        frames = [await asyncio.wait_for(self.ws.recv(), TIMEOUT)]
        while not any(marker in frames[-1] for marker in markers):
            frames.append(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        return frames

    async def closed(self) -> int:
        """Read what is left until the server closes the WebSocket; returns the close code."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                self.stash.append(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        await asyncio.wait_for(self.ws.wait_closed(), TIMEOUT)
        assert self.ws.close_code is not None
        return self.ws.close_code

    async def open(self) -> list[str]:
        await self.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        return await self.until("</stream:features>")

    async def login(self, user: str, password: str, resource: str = "web") -> list[str]:
        """PLAIN (wss counts as TLS), then bind; returns the frames after the bind request up to
        its result or a stream error."""
        await self.open()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        answer = await self.until("urn:ietf:params:xml:ns:xmpp-sasl")
        assert "<success" in answer[-1], answer
        await self.open()                 # the restart: answered by the home worker
        await self.send("<iq type='set' id='bind1' xmlns='jabber:client'>"
                        f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")
        return await self.until("</iq>", "</stream:error>")


@contextlib.asynccontextmanager
async def browser(node: ServerProcess, user: str, password: str | None = None, *, sock: socket.socket | None = None,
                  **kwargs) -> AsyncIterator[Browser]:
    """`user` logged in and bound over WebSocket as user@example.com/web."""
    async with websockets.connect(f"wss://127.0.0.1:{node.https_port}/xmpp-websocket", subprotocols=["xmpp"],
                                  ssl=tls(node), ping_interval=None, open_timeout=TIMEOUT, sock=sock, **kwargs) as ws:
        b = Browser(ws)
        bound = await b.login(user, password or USERS[user])
        assert f"<jid>{jid(user)}/web</jid>" in bound[-1], bound
        yield b


def is_message(body: str) -> Callable[[ET.Element], bool]:
    return lambda e: e.tag == f"{CLIENT}message" and e.findtext(f"{CLIENT}body") == body


def chat(to: str, body: str) -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat'><body>{body}</body></message>"


def test_the_websocket_users_live_in_worker_1():
    assert home("alice") == home("carol") == home("dave") == home(ERIN[0]) == 1
    assert home("bob") == 0


async def test_a_relayed_websocket_client_chats_with_tcp_and_websocket_users(node):
    async with browser(node, "alice") as alice, browser(node, "carol") as carol, \
               client(node, jid("bob"), USERS["bob"]) as bob:
        # alice (WebSocket, worker 1) -> bob (TCP, worker 0), and back
        await alice.send(chat(jid("bob"), "from the browser"))
        msg = await bob.next_message(TIMEOUT)
        assert msg["body"] == "from the browser" and str(msg["from"]) == f"{jid('alice')}/web"
        bob.send_message(mto=f"{jid('alice')}/web", mbody="to the browser", mtype="chat")
        reply = await alice.next(is_message("to the browser"))
        assert reply.get("from") == str(bob.boundjid)
        # alice -> carol, both relayed; every message one frame, in order
        for n in range(200):
            await alice.send(chat(f"{jid('carol')}/web", f"note {n}"))
        for n in range(200):
            got = await carol.next(lambda e: e.tag == f"{CLIENT}message")
            assert got.findtext(f"{CLIENT}body") == f"note {n}" and got.get("from") == f"{jid('alice')}/web"
        await carol.send(chat(f"{jid('alice')}/web", "all 200 arrived"))
        assert (await alice.next(is_message("all 200 arrived"))).get("from") == f"{jid('carol')}/web"


async def test_roster_and_presence_of_a_relayed_websocket_client(node):
    async with client(node, jid("bob"), USERS["bob"]) as bob:
        async with browser(node, "dave") as dave:
            # dave reads his roster (an empty one) and comes online, as a web client does
            await dave.send("<iq xmlns='jabber:client' type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")
            roster = await dave.next(lambda e: e.tag == f"{CLIENT}iq" and e.get("id") == "roster1")
            assert roster.get("type") == "result" and roster.find(f"{ROSTER}query/{ROSTER}item") is None
            await dave.send("<presence xmlns='jabber:client'/>")
            await dave.next(lambda e: e.tag == f"{CLIENT}presence" and e.get("from") == f"{jid('dave')}/web")
            # dave <presence type='subscribe' to='bob'/>; bob approves and asks back
            await dave.send(f"<presence xmlns='jabber:client' type='subscribe' to='{jid('bob')}'/>")
            request = await bob.next_of(bob.subscription_requests, timeout=TIMEOUT)
            assert request["from"] == jid("dave")
            bob.send_presence(pto=jid("dave"), ptype="subscribed")
            bob.send_presence(pto=jid("dave"), ptype="subscribe")
            await dave.next(lambda e: e.tag == f"{CLIENT}presence" and e.get("type") == "subscribed")
            await dave.next(lambda e: e.tag == f"{CLIENT}presence" and e.get("type") == "subscribe")
            await dave.send(f"<presence xmlns='jabber:client' type='subscribed' to='{jid('bob')}'/>")
            await bob.next_of(bob.all_presence, lambda p: p["type"] == "subscribed", TIMEOUT)
            # the pushes came, and the roster says so
            await dave.next(lambda e: e.tag == f"{CLIENT}iq" and e.get("type") == "set"
                            and e.find(f"{ROSTER}query/{ROSTER}item") is not None)
            await dave.send("<iq xmlns='jabber:client' type='get' id='roster2'><query xmlns='jabber:iq:roster'/></iq>")
            roster = await dave.next(lambda e: e.tag == f"{CLIENT}iq" and e.get("id") == "roster2")
            items = {i.get("jid"): i.get("subscription") for i in roster.iter(f"{ROSTER}item")}
            assert roster.get("type") == "result" and items[jid("bob")] == "both"
            # presence both ways
            await dave.send("<presence xmlns='jabber:client'><status>in the browser</status></presence>")
            seen = await bob.next_presence(jid("dave"), TIMEOUT, match=lambda p: p["status"] == "in the browser")
            assert str(seen["from"]) == f"{jid('dave')}/web"
            bob.send_presence(pstatus="at my desk")
            await dave.next(lambda e: e.tag == f"{CLIENT}presence" and e.get("from") == str(bob.boundjid)
                            and e.findtext(f"{CLIENT}status") == "at my desk")
            # The browser goes away (the WebSocket closes, no <close/>): dave's session in worker 1 ends.
            await dave.ws.close()
        gone = await bob.next_presence(f"{jid('dave')}/web", TIMEOUT, match=lambda p: p["type"] == "unavailable")
        assert str(gone["from"]) == f"{jid('dave')}/web"


async def test_close_from_a_relayed_client_is_answered_with_close(node):
    async with browser(node, "alice") as alice:
        await alice.send(f"<close xmlns='{FRAMING}'/>")
        answer = await alice.next()
        assert answer.tag == f"{{{FRAMING}}}close"
        assert await alice.closed() == 1000


async def test_a_nul_in_a_message_cannot_forge_a_second_message(node):
    """On the relay a NUL byte ends each message: a message that contains U+0000 must not
    become two stanzas in alice's worker. It is not well-formed XML, and ends the stream."""
    async with client(node, jid("bob"), USERS["bob"]) as bob:
        async with browser(node, "alice") as alice:
            await alice.send(chat(jid("bob"), "one message") + "\0" + chat(jid("bob"), "a forged one"))
            error = await alice.next()
            assert error.tag == STREAM_ERROR and error.find(f"{CONDITIONS}not-well-formed") is not None
            assert (await alice.next()).tag == f"{{{FRAMING}}}close"
            assert await alice.closed() == 1000
        async with browser(node, "alice") as alice:
            await alice.send(chat(jid("bob"), "after the attack"))
            msg = await bob.next_message(TIMEOUT)       # neither half of the attack arrived before it
            assert msg["body"] == "after the attack"


async def test_a_binary_message_closes_a_relayed_websocket(node):
    async with browser(node, "alice") as alice:
        await alice.ws.send(b"<presence xmlns='jabber:client'/>")
        assert await alice.closed() == 1003                  # RFC 6455: unsupported data


async def test_the_web_client_permission_holds_for_relayed_websocket_sessions(node):
    """erin is a contractor, and contractors may not use the web client: her worker, not worker
    0 where her WebSocket is, refuses the session."""
    async with websockets.connect(f"wss://127.0.0.1:{node.https_port}/xmpp-websocket", subprotocols=["xmpp"],
                                  ssl=tls(node), ping_interval=None, open_timeout=TIMEOUT) as ws:
        erin = Browser(ws)
        frames = await erin.login(*ERIN)
        error = "".join(frames)
        assert "<policy-violation" in error and "signing in with the web client is not allowed" in error, frames
        assert "<jid>" not in error
        assert await erin.closed() == 1000
    async with client(node, jid(ERIN[0]), ERIN[1]):           # over TCP she signs in as usual
        pass


async def test_a_relayed_websocket_client_is_released_from_its_address_count(node):
    """127.0.0.1's connections are counted in worker 0 (net/address_gate.py); a relayed client
    ends in worker 1, which must release it there: more logins in a row than the limit allows
    at once all succeed."""
    async with client(node, jid("bob"), USERS["bob"]) as bob, client(node, jid("carol"), USERS["carol"]) as carol:
        for n in range(MAX_PER_ADDRESS + 2):
            async with browser(node, "alice") as alice:
                await alice.send(f"<close xmlns='{FRAMING}'/>")
                assert await alice.closed() == 1000
            # Worker 1 queued the release for worker 0 before it closed its end of alice's relay;
            # what carol (worker 1) sends bob (worker 0) now follows it on the link between them.
            carol.send_message(mto=jid("bob"), mbody=f"after login {n}", mtype="chat")
            assert (await bob.next_message(TIMEOUT))["body"] == f"after login {n}"


async def test_a_relayed_websocket_client_that_does_not_read_is_closed_at_the_write_limit(node):
    """The browser reads nothing: worker 0 stops reading alice's output from worker 1 rather than
    hold it, so it waits in worker 1, which closes her connection at [c2s] max_write_buffer as it
    would a TCP client's."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # little room in the network
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.https_port))
    count, body = 2000, "x" * 4000                                  # 8 MB: far more than every buffer
    async with client(node, jid("bob"), USERS["bob"]) as bob, browser(node, "alice", sock=sock, max_queue=1) as alice:
        for n in range(count):
            bob.send_message(mto=f"{jid('alice')}/web", mbody=f"{n} {body}", mtype="chat")
        received = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while received < count:
                frame = await asyncio.wait_for(alice.ws.recv(), TIMEOUT)
                received += frame.startswith("<message")
        assert received < count, "all of it was held for the browser"
        assert await alice.closed() == 1000
    assert f"{jid('alice')}/web from 127.0.0.1>: it does not read what is sent to it" in node.log    # worker 1
