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
        self.roster.auto_authorize = False
        self.roster.auto_subscribe = False
        if mechanism:
            self["feature_mechanisms"].use_mech = mechanism
        for plugin in plugins:
            self.register_plugin(plugin)
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.presences: asyncio.Queue[Presence] = asyncio.Queue()
        self.subscription_requests: asyncio.Queue[Presence] = asyncio.Queue()
        self.roster_pushes: asyncio.Queue[Any] = asyncio.Queue()
        self.stream_errors: asyncio.Queue[Any] = asyncio.Queue()
        self._session: asyncio.Future[bool] | None = None
        self.disconnected_event = asyncio.Event()
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_all_auth", self._on_failed_auth)
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence_available", self.presences.put_nowait)
        self.add_event_handler("presence_unavailable", self.presences.put_nowait)
        self.add_event_handler("presence_subscribe", self.subscription_requests.put_nowait)
        self.add_event_handler("roster_update", self.roster_pushes.put_nowait)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("disconnected", lambda *_: self.disconnected_event.set())

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
        return True

    async def next_message(self, timeout: float = TIMEOUT, *, with_body: bool = True) -> Message:
        while True:
            msg = await asyncio.wait_for(self.messages.get(), timeout)
            if not with_body or msg["body"] or msg["type"] == "error":
                return msg

    async def next_presence(self, frm: str | None = None, timeout: float = TIMEOUT,
                            match: Callable[[Presence], bool] | None = None) -> Presence:
        """The next available/unavailable presence (from `frm`, bare or full, when given)."""
        while True:
            p = await asyncio.wait_for(self.presences.get(), timeout)
            if frm is not None and str(p["from"]) != frm and p["from"].bare != frm:
                continue
            if match is not None and not match(p):
                continue
            return p

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
