"""Real XMPP clients for tests: slixmpp, connected over STARTTLS to a `RunningServer`.

Tests read as transcripts:

    async with client(server, "alice@example.com", "alicepw1") as alice, \\
               client(server, "bob@example.com", "bobpw123") as bob:
        alice.send_message(mto="bob@example.com", mbody="hi", mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == "hi"

Every wait has a generous timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import slixmpp
import slixmpp.exceptions
from slixmpp.xmlstream import ET
from slixmpp.stanza import Message, Presence

TIMEOUT = 20.0


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what it receives in queues."""

    def __init__(self, jid: str, password: str, *, port: int, cert: Path, direct_tls: bool = False,
                 mechanism: str | None = None, plugins: tuple[str, ...] = ("xep_0030", "xep_0199", "xep_0092")) -> None:
        super().__init__(jid, password)
        self.port = port
        self.ca_certs = Path(cert)
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.enable_plaintext = False
        # Tests decide about subscriptions themselves.
        self.roster.auto_authorize = None      # None: neither accept nor refuse by itself
        self.roster.auto_subscribe = False
        if mechanism:
            self["feature_mechanisms"].use_mech = mechanism
        for plugin in plugins:
            self.register_plugin(plugin)
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.presences: asyncio.Queue[Presence] = asyncio.Queue()
        self.subscription_requests: asyncio.Queue[Presence] = asyncio.Queue()
        self.all_presence: asyncio.Queue[Presence] = asyncio.Queue()
        self.roster_pushes: asyncio.Queue[Any] = asyncio.Queue()
        self.stream_errors: asyncio.Queue[Any] = asyncio.Queue()
        self._session: asyncio.Future[bool] | None = None
        self._stash: dict[int, list[Any]] = {}
        self.disconnected_event = asyncio.Event()
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_all_auth", self._on_failed_auth)
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self._on_presence)
        self.add_event_handler("presence_subscribe", self.subscription_requests.put_nowait)
        self.add_event_handler("presence", self.all_presence.put_nowait)
        self.add_event_handler("roster_update", self.roster_pushes.put_nowait)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("disconnected", lambda *_: self.disconnected_event.set())

    def _on_presence(self, presence: Presence) -> None:
        # slixmpp reports <show/> values as the type; keep availability only.
        if presence["type"] not in ("subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error"):
            self.presences.put_nowait(presence)

    def _on_session_start(self, _: Any) -> None:
        if self._session is not None and not self._session.done():
            self._session.set_result(True)

    def _on_failed_auth(self, _: Any) -> None:
        if self._session is not None and not self._session.done():
            self._session.set_result(False)

    async def login(self, *, presence: bool = True, roster: bool = True, timeout: float = TIMEOUT) -> bool:
        """Connect and authenticate; returns False when authentication failed."""
        self._session = asyncio.get_running_loop().create_future()
        self.connect("127.0.0.1", self.port)
        ok = await asyncio.wait_for(self._session, timeout)
        if not ok:
            return False
        if roster:
            await self.get_roster(timeout=timeout)
        if presence:
            self.send_presence()
            # The server reflects initial presence to its sender once it has processed it: from
            # then on the session counts as available (for messages to the bare JID, say).
            own = await self.next_presence(str(self.boundjid), timeout)
            self._stash.setdefault(id(self.presences), []).insert(0, own)
        return True

    async def next_of(self, queue: asyncio.Queue[Any], match: Callable[[Any], bool] | None = None,
                      timeout: float = TIMEOUT) -> Any:
        """The oldest item of `queue` that matches. Items that do not match are kept for later
        calls, so waiting for one event never loses another."""
        stash = self._stash.setdefault(id(queue), [])
        for i, item in enumerate(stash):
            if match is None or match(item):
                return stash.pop(i)

        async def _next() -> Any:
            while True:
                item = await queue.get()
                if match is None or match(item):
                    return item
                stash.append(item)
        return await asyncio.wait_for(_next(), timeout)

    def pending(self, queue: asyncio.Queue[Any]) -> list[Any]:
        """Everything received so far and not yet taken (does not wait)."""
        stash = self._stash.setdefault(id(queue), [])
        while not queue.empty():
            stash.append(queue.get_nowait())
        return list(stash)

    async def next_message(self, timeout: float = TIMEOUT, *, with_body: bool = True) -> Message:
        return await self.next_of(self.messages, lambda m: not with_body or bool(m["body"]) or m["type"] == "error",
                                  timeout)

    async def next_presence(self, frm: str | None = None, timeout: float = TIMEOUT,
                            match: Callable[[Presence], bool] | None = None) -> Presence:
        """The next available/unavailable presence (from `frm`, bare or full, when given)."""
        def ok(p: Presence) -> bool:
            if frm is not None and str(p["from"]) != frm and p["from"].bare != frm:
                return False
            return match is None or match(p)
        return await self.next_of(self.presences, ok, timeout)

    async def query(self, iq: Any, timeout: float = TIMEOUT) -> Any:
        """Send an IQ and return the reply, error or not (slixmpp raises on errors otherwise)."""
        try:
            return await iq.send(timeout=timeout)
        except slixmpp.exceptions.IqError as exc:
            return exc.iq

    async def roundtrip(self, timeout: float = TIMEOUT) -> None:
        """Ping the server and wait for the answer: everything the server sent before the answer
        has been received when this returns."""
        iq = self.make_iq_get(ito=self.boundjid.domain)
        iq.xml.append(ET.Element("{urn:xmpp:ping}ping"))
        reply = await self.query(iq, timeout)
        assert reply["type"] == "result", reply

    async def close(self, timeout: float = TIMEOUT) -> None:
        if self.transport is not None or not self.disconnected_event.is_set():
            self.disconnect()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.disconnected_event.wait(), timeout)

    def abort_connection(self) -> None:
        """Drop the TCP connection without closing the stream (a crashed client or lost network)."""
        if self.transport is not None:
            self.transport.abort()


@contextlib.asynccontextmanager
async def client(server: Any, jid: str, password: str, *, presence: bool = True, roster: bool = True,
                 **kwargs: Any) -> AsyncIterator[Client]:
    c = Client(jid, password, port=server.c2s_port, cert=server.cert_path, **kwargs)
    try:
        ok = await c.login(presence=presence, roster=roster)
        assert ok, f"{jid} could not log in"
        yield c
    finally:
        await c.close()


def client_tls_context(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    return ctx
