"""Just enough XMPP for a load generator, over a raw asyncio.Protocol and without an XML parser.

Negotiation (stream header, optional STARTTLS, SASL SCRAM-SHA-256, resource binding, initial
presence) is a coroutine that waits for byte patterns in what the server sent so far; it is not on
the hot path. After that a connection hands every chunk it receives to a traffic handler chosen by
the scenario (a cheap byte scanner), and writes pre-serialised stanzas it is given.

Servers differ in how they write the same thing (prefixes, quotes, attribute order), so each
pattern below accepts both quote styles and ignores attributes.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
from typing import Callable

from .scram import MECHANISM, SaltedPasswords, ScramClient, ScramError

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NEGOTIATION_TIMEOUT = 60.0       # seconds one negotiation step may take before the login fails
BIND_ID = "bind1"
READY_ID = "ready1"              # the ping sent after initial presence: its answer ends the login

_FEATURES = re.compile(rb"<(?:stream:)?features[\s>].*?</(?:stream:)?features>", re.S)
_PROCEED = re.compile(rb"<proceed[\s/>]")
_SASL_REPLY = re.compile(rb"<(challenge|success|failure)[^>]*?(?:/>|>(.*?)</\1>)", re.S)
_BIND_REPLY = re.compile(rb"<iq[^>]*?id=['\"]" + BIND_ID.encode() + rb"['\"][^>]*>(.*?)</iq>|"
                         rb"<iq[^>]*?id=['\"]" + BIND_ID.encode() + rb"['\"][^>]*/>", re.S)
_JID = re.compile(rb"<jid>([^<]+)</jid>")
_READY_REPLY = re.compile(rb"<iq[^>]*?id=['\"]" + READY_ID.encode() + rb"['\"]")
_STREAM_ERROR = re.compile(rb"<(?:stream:)?error>.*?</(?:stream:)?error>", re.S)


class LoginError(Exception):
    """A negotiation step failed: the text says which one and what the server sent."""


def stream_header(domain: str) -> bytes:
    return (f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' "
            f"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").encode()


def client_tls_context() -> ssl.SSLContext:
    """TLS 1.2+ without certificate checks: the benchmark's servers use a throwaway certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


TrafficHandler = Callable[[bytes], None]


class Connection(asyncio.Protocol):
    """One client connection: negotiation by pattern, then raw traffic to `handler`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pattern: re.Pattern[bytes] | None = None
        self._waiter: asyncio.Future[re.Match[bytes]] | None = None
        self.handler: TrafficHandler | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.jid = ""

    # -- asyncio callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        if handler is not None:
            handler(data)
            return
        self._buf += data
        self._check()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(LoginError(f"connection closed by the server: {self._snippet()}"))

    # -- negotiation ----------------------------------------------------------------------------
    def _check(self) -> None:
        waiter, pattern = self._waiter, self._pattern
        if waiter is None or pattern is None or waiter.done():
            return
        match = pattern.search(bytes(self._buf))      # a copy: the match must outlive the trim below
        if match is not None:
            del self._buf[:match.end()]
            waiter.set_result(match)
            return
        error = _STREAM_ERROR.search(self._buf)
        if error is not None:
            waiter.set_exception(LoginError(f"stream error: {error.group(0)[:300]!r}"))

    def _snippet(self) -> str:
        return repr(bytes(self._buf[-300:]))

    async def expect(self, pattern: re.Pattern[bytes], what: str) -> re.Match[bytes]:
        """Wait until `pattern` appears in the input; what came before it is dropped."""
        self._pattern = pattern
        self._waiter = asyncio.get_running_loop().create_future()
        self._check()
        try:
            return await asyncio.wait_for(self._waiter, NEGOTIATION_TIMEOUT)
        except asyncio.TimeoutError:
            raise LoginError(f"no {what} within {NEGOTIATION_TIMEOUT:.0f} s; the server sent {self._snippet()}") from None
        finally:
            self._waiter = None
            self._pattern = None

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def start_traffic(self, handler: TrafficHandler) -> None:
        """From now on every chunk goes to `handler` (what is buffered already goes first)."""
        self.handler = handler
        if self._buf:
            data, self._buf = bytes(self._buf), bytearray()
            handler(data)

    def close(self) -> None:
        """End the stream politely; the server closes the TCP connection."""
        self.write(b"</stream:stream>")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def login(host: str, port: int, domain: str, user: str, password: str, salted: SaltedPasswords, *,
                resource: str = "bench", tls: ssl.SSLContext | None = None, presence: bool = True,
                handler: TrafficHandler | None = None) -> tuple[Connection, float]:
    """Connect, (STARTTLS,) authenticate with SCRAM-SHA-256, bind, send initial presence and wait
    for the server to have processed it (a ping answered after it).

    Returns the connection (handing traffic to `handler`, or dropping it) and the seconds the
    login took from the start of the TCP connect.
    """
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    transport, conn = await loop.create_connection(Connection, host, port)
    try:
        conn.write(stream_header(domain))
        features = (await conn.expect(_FEATURES, "stream features")).group(0)
        if tls is not None:
            if b"<starttls" not in features:
                raise LoginError("the server does not offer STARTTLS")
            conn.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            await conn.expect(_PROCEED, "STARTTLS proceed")
            new_transport = await loop.start_tls(transport, conn, tls, server_hostname=domain)
            if new_transport is None:
                raise LoginError("TLS handshake failed")
            conn.transport = new_transport  # type: ignore[assignment]
            conn.write(stream_header(domain))
            features = (await conn.expect(_FEATURES, "stream features after TLS")).group(0)
        if MECHANISM.encode() + b"<" not in features:
            raise LoginError(f"the server does not offer {MECHANISM}: {features[:400]!r}")
        await _authenticate(conn, user, password, salted)
        conn.write(stream_header(domain))
        await conn.expect(_FEATURES, "stream features after authentication")
        conn.write(f"<iq type='set' id='{BIND_ID}'><bind xmlns='{NS_BIND}'><resource>{resource}</resource>"
                   f"</bind></iq>".encode())
        bound = await conn.expect(_BIND_REPLY, "bind result")
        jid = _JID.search(bound.group(0))
        if jid is None:
            raise LoginError(f"bind failed: {bound.group(0)[:300]!r}")
        conn.jid = jid.group(1).decode()
        ready = f"<iq type='get' id='{READY_ID}'><ping xmlns='urn:xmpp:ping'/></iq>".encode()
        conn.write((b"<presence/>" if presence else b"") + ready)
        await conn.expect(_READY_REPLY, "ping answer after initial presence")
    except BaseException:
        conn.abort()
        raise
    conn.start_traffic(handler or _discard)
    return conn, time.perf_counter() - started


async def _authenticate(conn: Connection, user: str, password: str, salted: SaltedPasswords) -> None:
    scram = ScramClient(user, password, salted)
    conn.write(f"<auth xmlns='{NS_SASL}' mechanism='{MECHANISM}'>".encode()
               + base64.b64encode(scram.first()) + b"</auth>")
    step = 0
    while True:
        reply = await conn.expect(_SASL_REPLY, "SASL reply")
        kind, payload = reply.group(1), base64.b64decode(reply.group(2) or b"")
        if kind == b"failure":
            raise LoginError(f"authentication of {user} failed: {reply.group(0)[:300]!r}")
        try:
            if kind == b"success":
                if payload:
                    scram.verify(payload)
                return
            if step == 0:
                answer = scram.final(payload)
            else:                          # server-final sent as a challenge: empty response
                scram.verify(payload)
                answer = b""
        except ScramError as exc:
            raise LoginError(f"SCRAM with {user}: {exc}") from None
        step += 1
        conn.write(f"<response xmlns='{NS_SASL}'>".encode() + base64.b64encode(answer) + b"</response>")


def _discard(data: bytes) -> None:
    pass
