"""XEP-0114: Jabber Component Protocol, server side, sans-IO.

    component -> <stream:stream xmlns='jabber:component:accept' to='bot.example.com'>
    server    -> <stream:stream ... from='bot.example.com' id='ID'>
    component -> <handshake>hex(SHA-1(ID + secret))</handshake>
    server    -> <handshake/>          (or <not-authorized/> and the stream ends)

Then stanzas flow both ways. A component may only send from its own domain (or JIDs at it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Callable

from . import ns
from .errors import StreamError
from .jid import try_jid
from .stream import StanzaReceived, StreamClosed
from .xml import Element, StreamHeader, StreamReader, XmlError, escape_attr, remap_namespace


@dataclass(slots=True)
class ComponentAuthenticated:
    domain: str


class ComponentStream:
    content_ns = ns.COMPONENT

    def __init__(self, secret_for: Callable[[str], str | None], max_stanza_size: int = 262144) -> None:
        self.secret_for = secret_for
        self.domain: str | None = None
        self.is_authenticated = False
        self.is_closed = False
        self.stream_id = secrets.token_hex(8)
        self._reader = StreamReader(max_stanza_size=max_stanza_size)
        self._out: list[bytes] = []
        self._header_sent = False

    def receive_data(self, data: bytes) -> list[object]:
        if self.is_closed:
            return []
        try:
            items = self._reader.feed(data)
        except XmlError as exc:
            return self._fail(StreamError(exc.condition, exc.text))
        events: list[object] = []
        for item in items:
            try:
                if isinstance(item, StreamHeader):
                    self._on_header(item)
                elif isinstance(item, Element):
                    self._on_element(item, events)
                else:
                    events.append(self.close())
            except StreamError as exc:
                events.extend(self._fail(exc))
            if self.is_closed:
                break
        return events

    def _on_header(self, header: StreamHeader) -> None:
        to = header.attrs.get("to", "")
        self._send_header(to)
        if header.xmlns != ns.STREAMS or header.content_ns != ns.COMPONENT:
            raise StreamError("invalid-namespace", f"a component stream uses {ns.COMPONENT}")
        if self.secret_for(to) is None:
            raise StreamError("host-unknown", f"no component is configured for {to!r}")
        self.domain = to

    def _send_header(self, domain: str) -> None:
        if self._header_sent:
            return
        self._header_sent = True
        self._out.append((f"<?xml version='1.0'?><stream:stream xmlns=\"{ns.COMPONENT}\" "
                          f"xmlns:stream=\"{ns.STREAMS}\" id=\"{self.stream_id}\" "
                          f"from=\"{escape_attr(domain)}\">").encode())

    def _on_element(self, el: Element, events: list[object]) -> None:
        if not self.is_authenticated:
            if el.name != "handshake" or el.xmlns != ns.COMPONENT or self.domain is None:
                raise StreamError("not-authorized", "send the handshake first")
            secret = self.secret_for(self.domain) or ""
            expected = hashlib.sha1((self.stream_id + secret).encode()).hexdigest().encode()
            # Compare bytes: compare_digest refuses str with non-ASCII characters (TypeError).
            if not hmac.compare_digest(el.text.strip().lower().encode(), expected):
                raise StreamError("not-authorized", "the handshake does not match the shared secret")
            self.is_authenticated = True
            self._out.append(b"<handshake/>")
            events.append(ComponentAuthenticated(self.domain))
            return
        if el.xmlns != ns.COMPONENT or el.name not in ("message", "presence", "iq"):
            raise StreamError("unsupported-stanza-type", f"<{el.name}/> is not a stanza")
        sender = try_jid(el.attrs.get("from"))
        if sender is None or sender.domain != self.domain:
            raise StreamError("invalid-from", f"a component may only send from {self.domain}")
        remap_namespace(el, ns.COMPONENT, ns.CLIENT)   # inside the server stanzas are jabber:client
        events.append(StanzaReceived(el))

    def send(self, stanza: Element) -> None:
        if not self.is_closed:
            self._out.append(stanza.serialize(ns.CLIENT))

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def close(self, error: StreamError | None = None) -> StreamClosed:
        if self.is_closed:
            return StreamClosed(error)
        if error is not None:
            self._fail(error)
            return StreamClosed(error)
        self._send_header(self.domain or "")
        self._out.append(b"</stream:stream>")
        self.is_closed = True
        return StreamClosed(None)

    def _fail(self, error: StreamError) -> list[object]:
        if self.is_closed:
            return []
        self._send_header(self.domain or "")
        inner = b"".join(c.serialize(ns.STREAMS) for c in error.to_element().elements())
        self._out.append(b"<stream:error>" + inner + b"</stream:error></stream:stream>")
        self.is_closed = True
        return [StreamClosed(error)]
