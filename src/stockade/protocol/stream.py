"""The server side of a client-to-server stream (RFC 6120), sans-IO.

Theory of operation
-------------------
`ClientStream` turns the bytes a client sends into events for the layer above and turns that
layer's decisions into bytes. It never reads a socket, waits or looks anything up: where the
negotiation needs the outside world it emits a request and waits for the matching call.

    bytes in  -> receive_data(data) -> [StartTls | SaslStep | BindRequest | StanzaReceived |
                                        NonzaReceived | StreamClosed]
    decisions -> tls_established(), sasl_reply(step), bound(jid), bind_failed(error), send(element)
    bytes out <- data_to_send()    (a list of units: one per element; joined for TCP, framed for WebSocket)

Negotiation follows the table `TRANSITIONS` below: each state names the elements it accepts.
Anything else in a negotiation state is a stream error. Once a stream error has been written the
stream is closed and ignores further input.

Security rules kept here:
- With `tls_required`, nothing but `<starttls/>` is accepted before TLS (RFC 6120 section 5.3.1).
- Bytes that arrive after `<starttls/>` in the same read are discarded before the handshake
  (the STARTTLS command-injection attack).
- Stanzas before authentication and binding get `<not-authorized/>` (section 4.9.3.12).
- PLAIN is offered only on an encrypted stream.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Union

from . import ns
from .entropy import token_urlsafe
from .errors import StanzaError, StreamError, error_reply
from .jid import JID
from .sasl import Challenge, Failure, Success
from .xml import Element, StreamHeader, StreamReader, XmlError, escape_attr


class State(Enum):
    HEADER = "waiting for the stream header"
    TLS = "waiting for STARTTLS"
    TLS_HANDSHAKE = "TLS handshake in progress"
    AUTH = "waiting for SASL auth"
    SASL = "SASL exchange in progress"
    BIND = "waiting for resource binding"
    BINDING = "binding in progress"
    OPEN = "session established"
    CLOSED = "closed"


# state -> {(namespace, element name): handler method name}. Elements not listed are errors.
TRANSITIONS: dict[State, dict[tuple[str, str], str]] = {
    State.TLS: {(ns.TLS, "starttls"): "_on_starttls"},
    State.AUTH: {(ns.TLS, "starttls"): "_on_starttls", (ns.SASL, "auth"): "_on_auth"},
    State.SASL: {(ns.SASL, "response"): "_on_response", (ns.SASL, "abort"): "_on_abort"},
    State.BIND: {(ns.CLIENT, "iq"): "_on_bind_iq"},
    State.BINDING: {},
}


_STANZAS = frozenset({"message", "presence", "iq"})


# -- events -----------------------------------------------------------------------------------
@dataclass(slots=True)
class StartTls:
    """Write what is pending, start the TLS handshake, then call `tls_established()`."""


@dataclass(slots=True)
class SaslStep:
    """A SASL message from the client; answer with `sasl_reply(step)`.
    `mechanism` is set on the first message of an exchange (the `<auth/>` element)."""
    mechanism: str | None
    data: bytes


@dataclass(slots=True)
class BindRequest:
    """The client asks for a resource (None: let the server choose); answer with `bound()` or `bind_failed()`."""
    resource: str | None


@dataclass(slots=True)
class StanzaReceived:
    stanza: Element


@dataclass(slots=True)
class NonzaReceived:
    """A top-level element that is not a stanza (stream management, client state indication)."""
    element: Element


@dataclass(slots=True)
class StreamClosed:
    """The stream is over; `error` is the stream error we sent, if any. Close the connection
    once `data_to_send()` has been written."""
    error: StreamError | None = None
    by_peer: bool = False


Event = Union[StartTls, SaslStep, BindRequest, StanzaReceived, NonzaReceived, StreamClosed]


@dataclass(slots=True)
class StreamOptions:
    is_host_served: Callable[[str], bool]
    tls_available: bool = True
    tls_required: bool = True
    is_secure: bool = False                 # already encrypted (direct TLS)
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
    max_stanza_size: int = 262144
    max_depth: int = 32
    max_attrs: int = 64
    framed: bool = False                    # RFC 7395 WebSocket framing
    max_auth_attempts: int = 3              # failed SASL exchanges before the stream is closed
    # extra <stream:features/> children once authenticated (stream management, CSI, ...)
    extra_features: list[Element] = field(default_factory=list)
    # <stream:features/> as sent, per (authenticated, secure): the same bytes for every stream
    # that shares these options, serialised once (set extra_features before the first stream).
    features_sent: dict[tuple[bool, bool], bytes] = field(default_factory=dict, init=False, repr=False,
                                                          compare=False)


class ClientStream:
    """One client stream, server side. See the module docstring."""

    content_ns = ns.CLIENT

    __slots__ = ("_auth_failures", "_bind_iq", "_header_sent", "_held", "_out", "_reader", "_sasl_mechanism",
                 "host", "is_authenticated", "is_secure", "jid", "lang", "options", "state", "stream_id",
                 "username")

    def __init__(self, options: StreamOptions) -> None:
        self.options = options
        self.state = State.HEADER
        self.is_secure = options.is_secure
        self.is_authenticated = False
        self.username: str | None = None       # localpart that authenticated
        self.host: str | None = None           # the served domain the client asked for
        self.jid: JID | None = None            # full JID once bound
        self.lang = "en"
        self.stream_id = ""
        self._reader = self._new_reader()
        self._out: list[bytes] = []
        self._header_sent = False
        self._auth_failures = 0
        self._sasl_mechanism: str | None = None
        self._bind_iq: Element | None = None
        self._held: list[Element] = []          # stanzas pipelined behind the bind request

    def _new_reader(self) -> StreamReader:
        o = self.options
        return StreamReader(max_stanza_size=o.max_stanza_size, max_depth=o.max_depth,
                            max_attrs=o.max_attrs, framed=o.framed)

    def moved_out(self) -> None:
        """The connection moved to another worker process, which goes on with the stream
        (`moved_in` there): this side parses nothing more."""
        self._reader.release()

    def compact(self) -> bool:
        """Free the XML parser of an established, idle stream (see StreamReader.compact)."""
        return self.state is State.OPEN and self._reader.compact()

    @property
    def is_closed(self) -> bool:
        return self.state is State.CLOSED

    # -- input ----------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        if self.state is State.TLS_HANDSHAKE:
            # Nothing may follow <starttls/> in plaintext.
            return self._fail(StreamError("policy-violation", "data sent after <starttls/> before the TLS handshake"))
        try:
            parsed = self._reader.feed(data)
        except XmlError as exc:
            return self._fail(StreamError(exc.condition, exc.text))
        if self.state is State.OPEN and not self.options.framed:
            return self._receive_open(parsed)
        events: list[Event] = []
        for item in parsed:
            try:
                if isinstance(item, Element) and self.options.framed and item.xmlns == ns.FRAMING:
                    if item.name == "open":
                        self._on_header(StreamHeader(ns.FRAMING, None, item.attrs))
                    elif item.name == "close":
                        events.append(self._close(by_peer=True))
                    else:
                        raise StreamError("unsupported-stanza-type", f"unknown framing element <{item.name}/>")
                elif isinstance(item, Element):
                    if self.state is State.OPEN:
                        self._on_open_element(item, events)
                    else:
                        self._on_negotiation_element(item, events)
                elif isinstance(item, StreamHeader):
                    self._on_header(item)
                else:
                    events.append(self._close(by_peer=True))
            except StreamError as exc:
                events.extend(self._fail(exc))
            if self.state in (State.CLOSED, State.TLS_HANDSHAKE):
                break   # ignore the rest of this read: closed, or plaintext after <starttls/>
        return events

    def _receive_open(self, parsed: list) -> list[Event]:
        """The established stream's fast path: stanzas become events with little work each."""
        events: list[Event] = []
        content_ns = self.content_ns
        for item in parsed:
            if type(item) is Element and item.xmlns == content_ns and item.name in _STANZAS \
                    and not (item.name == "iq" and item.attrs.get("type") == "set"
                             and item.find("session", ns.SESSION) is not None):
                events.append(StanzaReceived(item))
                continue
            try:
                if isinstance(item, Element):
                    self._on_open_element(item, events)
                elif isinstance(item, StreamHeader):
                    self._on_header(item)
                else:
                    events.append(self._close(by_peer=True))
            except StreamError as exc:
                events.extend(self._fail(exc))
            if self.state is State.CLOSED:
                break
        return events

    def _on_header(self, header: StreamHeader) -> None:
        if self.state is not State.HEADER:
            raise StreamError("bad-format", "a second stream header without a restart")
        attrs = header.attrs
        self.lang = attrs.get("xml:lang", self.lang) or self.lang
        to = attrs.get("to", "")
        expected = ns.FRAMING if self.options.framed else ns.STREAMS
        self._send_header(to if self.options.is_host_served(to) else None)
        if header.xmlns != expected or (self.options.framed is False and header.content_ns != self.content_ns):
            raise StreamError("invalid-namespace", f"a client stream must be in {expected} with content {self.content_ns}")
        version = attrs.get("version", "")
        if not version.startswith("1."):
            raise StreamError("unsupported-version", "this server speaks XMPP version 1.0 only")
        if not self.options.is_host_served(to):
            raise StreamError("host-unknown", f"this server does not serve {to!r}" if to else
                              "the stream header has no 'to' address")
        if self.host is not None and to != self.host:
            raise StreamError("host-unknown", "the domain changed during negotiation")
        self.host = to
        self._write_features()

    def _send_header(self, host: str | None) -> None:
        self.stream_id = token_urlsafe(12)
        frm = f' from="{escape_attr(host)}"' if host else ""
        if self.options.framed:
            head = (f'<open xmlns="{ns.FRAMING}" version="1.0" xml:lang="en" id="{self.stream_id}"{frm}/>')
        else:
            head = (f"<?xml version='1.0'?><stream:stream xmlns=\"{self.content_ns}\" "
                    f'xmlns:stream="{ns.STREAMS}" version="1.0" xml:lang="en" id="{self.stream_id}"{frm}>')
        self._out.append(head.encode())
        self._header_sent = True

    def _write_features(self) -> None:
        o = self.options
        if not self.is_authenticated:
            self.state = State.TLS if (not self.is_secure and o.tls_required) else State.AUTH
        else:
            self.state = State.BIND
        kind = (self.is_authenticated, self.is_secure)
        data = o.features_sent.get(kind)
        if data is None:
            data = o.features_sent[kind] = self._top_bytes(self._features())
        self._out.append(data)

    def _features(self) -> Element:
        features = Element("features", ns.STREAMS)
        o = self.options
        if not self.is_authenticated:
            if not self.is_secure and o.tls_available:
                tls = features.add("starttls", ns.TLS)
                if o.tls_required:
                    tls.add("required")
            if self.is_secure or not o.tls_required:
                mechs = features.add("mechanisms", ns.SASL)
                for m in self.offered_mechanisms():
                    mechs.add("mechanism", text=m)
        else:
            features.add("bind", ns.BIND)
            features.add("session", ns.SESSION).add("optional")
            for extra in o.extra_features:
                features.append(extra.copy())
        return features

    def _on_negotiation_element(self, el: Element, events: list[Event]) -> None:
        if self.state is State.BINDING and el.xmlns == self.content_ns:
            self._held.append(el)                    # a client may pipeline stanzas after <bind/>
            return
        table = TRANSITIONS.get(self.state, {})
        handler = table.get((el.xmlns, el.name))
        if handler is None:
            if self.state is State.BIND and el.xmlns != self.content_ns:
                events.append(NonzaReceived(el))     # e.g. XEP-0198 <resume/> before binding
                return
            if el.xmlns == self.content_ns and el.name in ("message", "presence", "iq"):
                raise StreamError("not-authorized", "stanzas are not accepted before authentication and resource binding")
            raise StreamError("policy-violation" if self.state is State.TLS else "unsupported-stanza-type",
                              f"<{el.name}/> is not expected while {self.state.value}")
        getattr(self, handler)(el, events)

    # -- STARTTLS -------------------------------------------------------------------------------
    def _on_starttls(self, el: Element, events: list[Event]) -> None:
        if self.is_secure or not self.options.tls_available:
            self._write_top(Element("failure", ns.TLS))
            events.append(self._close())
            return
        self._write_top(Element("proceed", ns.TLS))
        self.state = State.TLS_HANDSHAKE
        events.append(StartTls())

    def tls_established(self) -> None:
        """The TLS handshake finished: the client now restarts the stream."""
        self.is_secure = True
        self._restart()

    def moved_in(self, host: str, username: str) -> None:
        """The client authenticated as `username` in another worker process, which passed the
        connection here right after <success/> (net/handoff.py): it restarts the stream next."""
        self.host = host
        self.username = username
        self.is_authenticated = True
        self._restart()

    def _restart(self) -> None:
        self._reader = self._new_reader()
        self.state = State.HEADER

    # -- SASL -----------------------------------------------------------------------------------
    def offered_mechanisms(self) -> list[str]:
        return [m for m in self.options.mechanisms if m != "PLAIN" or self.is_secure]

    def _on_auth(self, el: Element, events: list[Event]) -> None:
        mechanism = el.get("mechanism", "")
        if mechanism not in self.offered_mechanisms():
            reason = ("PLAIN is only offered on an encrypted connection" if mechanism == "PLAIN"
                      else f"mechanism {mechanism!r} is not offered")
            self._sasl_failure(Failure("invalid-mechanism" if mechanism != "PLAIN" else "encryption-required", reason))
            return
        data = self._decode_sasl(el.text)
        if data is None:
            return
        self._sasl_mechanism = mechanism
        self.state = State.SASL
        events.append(SaslStep(mechanism, data))

    def _on_response(self, el: Element, events: list[Event]) -> None:
        data = self._decode_sasl(el.text)
        if data is not None:
            events.append(SaslStep(None, data))

    def _on_abort(self, el: Element, events: list[Event]) -> None:
        self._sasl_failure(Failure("aborted"))

    def _decode_sasl(self, text: str) -> bytes | None:
        text = text.strip()
        if text == "=" or not text:
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._sasl_failure(Failure("incorrect-encoding", "the SASL data is not valid base64"))
            return None

    def sasl_reply(self, step: Challenge | Success | Failure) -> None:
        """Answer the last SaslStep."""
        if self.state is State.CLOSED:
            return
        if isinstance(step, Challenge):
            self._write_top(Element("challenge", ns.SASL, children=[base64.b64encode(step.data).decode() or "="]))
        elif isinstance(step, Success):
            payload = base64.b64encode(step.data).decode() if step.data else ""
            self._write_top(Element("success", ns.SASL, children=[payload] if payload else []))
            self.is_authenticated = True
            self.username = step.username
            self._restart()
        else:
            self._sasl_failure(step)

    def _sasl_failure(self, failure: Failure) -> None:
        el = Element("failure", ns.SASL)
        el.add(failure.condition)
        if failure.text:
            el.add("text", attrs={"xml:lang": "en"}, text=failure.text)
        self._write_top(el)
        self.state = State.AUTH
        self._auth_failures += 1
        if self._auth_failures >= self.options.max_auth_attempts:
            self._fail(StreamError("policy-violation", "too many failed authentication attempts"))

    # -- resource binding -----------------------------------------------------------------------
    def _on_bind_iq(self, iq: Element, events: list[Event]) -> None:
        bind = iq.find("bind", ns.BIND)
        session = iq.find("session", ns.SESSION)
        if iq.get("type") == "set" and bind is not None:
            resource = bind.find_text("resource", ns.BIND)
            self._bind_iq = iq
            self.state = State.BINDING
            events.append(BindRequest(resource.strip() if resource and resource.strip() else None))
        elif iq.get("type") == "set" and session is not None:
            self._reply(iq)      # legacy session establishment (RFC 3921): a no-op
        else:
            raise StreamError("not-authorized", "bind a resource before sending other requests")

    def bound(self, jid: JID) -> list[Event]:
        """The resource is bound; returns events for stanzas the client pipelined behind the request."""
        iq = self._bind_iq
        assert iq is not None and self.state is State.BINDING
        self.jid = jid
        result = self._result(iq)
        result.add("bind", ns.BIND).add("jid", text=str(jid))
        self._write_top(result)
        self._bind_iq = None
        self.state = State.OPEN
        events: list[Event] = []
        held, self._held = self._held, []
        for el in held:
            try:
                self._on_open_element(el, events)
            except StreamError as exc:
                events.extend(self._fail(exc))
                break
        return events

    def resumed(self, jid: JID) -> None:
        """A previous session was resumed (XEP-0198) instead of binding a new resource."""
        assert self.state is State.BIND
        self.jid = jid
        self.state = State.OPEN

    def bind_failed(self, error: StanzaError) -> None:
        iq = self._bind_iq
        assert iq is not None
        self._write_top(error_reply(iq, error))
        self._bind_iq = None
        self._held.clear()
        self.state = State.BIND

    # -- established ------------------------------------------------------------------------------
    def _on_open_element(self, el: Element, events: list[Event]) -> None:
        if el.xmlns == self.content_ns and el.name in ("message", "presence", "iq"):
            if el.name == "iq" and el.get("type") == "set" and el.find("session", ns.SESSION) is not None:
                self._reply(el)
                return
            events.append(StanzaReceived(el))
        elif el.xmlns == self.content_ns:
            raise StreamError("unsupported-stanza-type", f"<{el.name}/> is not a stanza")
        else:
            events.append(NonzaReceived(el))

    def _result(self, iq: Element) -> Element:
        attrs = {"type": "result"}
        if "id" in iq.attrs:
            attrs["id"] = iq.attrs["id"]
        return Element("iq", self.content_ns, attrs)

    def _reply(self, iq: Element) -> None:
        self._write_top(self._result(iq))

    # -- output ---------------------------------------------------------------------------------
    def send(self, element: Element) -> None:
        """Queue a top-level element (a stanza, or a stream-level element) for the client."""
        if self.state is State.CLOSED:
            return
        if element.xmlns == self.content_ns and not self.options.framed:
            self._out.append(element.serialize(self.content_ns))    # a stanza: _top_bytes' last case
            return
        self._write_top(element)

    def send_raw(self, data: bytes) -> None:
        """Queue an already serialised top-level element."""
        if self.state is not State.CLOSED:
            self._out.append(data)

    def _write_top(self, element: Element) -> None:
        self._out.append(self._top_bytes(element))

    def _top_bytes(self, element: Element) -> bytes:
        if self.options.framed and element.xmlns == ns.STREAMS:
            # A WebSocket message is a document of its own: declare the stream prefix in it.
            body = element.serialize(ns.STREAMS)
            body = b"<stream:" + body[1:].replace(b">", b' xmlns:stream="' + ns.STREAMS.encode() + b'">', 1)
            return _prefix_close(body, element.name)
        if element.xmlns == ns.STREAMS:
            return _prefix_close(b"<stream:" + element.serialize(ns.STREAMS)[1:], element.name)
        if self.options.framed:
            return element.serialize("")
        return element.serialize(self.content_ns)

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    # -- closing --------------------------------------------------------------------------------
    def close(self, error: StreamError | None = None) -> StreamClosed:
        """Close the stream from our side (with a stream error, or cleanly)."""
        if error is not None:
            events = self._fail(error)
            return events[0] if events else StreamClosed(error)
        return self._close()

    def _close(self, by_peer: bool = False) -> StreamClosed:
        if self.state is not State.CLOSED:
            if not self._header_sent:
                self._send_header(None)
            self._out.append(b'<close xmlns="' + ns.FRAMING.encode() + b'"/>' if self.options.framed
                             else b"</stream:stream>")
            self.state = State.CLOSED
        return StreamClosed(None, by_peer)

    def _fail(self, error: StreamError) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        if not self._header_sent:
            self._send_header(None)
        self._write_top(error.to_element())
        self._close()
        return [StreamClosed(error)]


def _prefix_close(body: bytes, name: str) -> bytes:
    closing = f"</{name}>".encode()
    if body.endswith(closing):
        body = body[: -len(closing)] + f"</stream:{name}>".encode()
    return body
