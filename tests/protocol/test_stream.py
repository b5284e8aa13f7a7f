"""Client stream negotiation, sans-IO: bytes in, events and bytes out."""

from __future__ import annotations

from stockade.protocol.errors import StanzaError
from stockade.protocol.jid import parse_jid
from stockade.protocol.sasl import Failure, Success
from stockade.protocol.stream import (BindRequest, ClientStream, SaslStep, StanzaReceived, StartTls, State,
                                      StreamClosed, StreamOptions)

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")


def new_stream(**kw) -> ClientStream:
    return ClientStream(StreamOptions(is_host_served=lambda d: d == "example.com", **kw))


def out(stream: ClientStream) -> bytes:
    return b"".join(stream.data_to_send())


def secured(**kw) -> ClientStream:
    s = new_stream(**kw)
    s.receive_data(HEADER)
    out(s)
    s.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    out(s)
    s.tls_established()
    return s


def authenticated() -> ClientStream:
    s = secured()
    s.receive_data(HEADER)
    out(s)
    s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>")
    s.sasl_reply(Success("alice"))
    out(s)
    s.receive_data(HEADER)
    out(s)
    return s


def test_client_sees_only_starttls_required_before_tls():
    s = new_stream()
    assert s.receive_data(HEADER) == []
    data = out(s)
    assert b"<stream:stream" in data and b'from="example.com"' in data
    assert b"<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></starttls>" in data
    assert b"mechanisms" not in data


def test_stanza_before_tls_and_auth_ends_the_stream_with_not_authorized():
    s = new_stream()
    s.receive_data(HEADER)
    out(s)
    events = s.receive_data(b"<message to='bob@example.com'><body>x</body></message>")
    assert isinstance(events[-1], StreamClosed) and events[-1].error.condition == "not-authorized"
    assert b"<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>" in out(s)


def test_auth_before_tls_is_refused_when_tls_is_required():
    s = new_stream()
    s.receive_data(HEADER)
    out(s)
    events = s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
    assert isinstance(events[-1], StreamClosed)
    assert events[-1].error.condition == "policy-violation"


def test_plaintext_after_starttls_is_dropped_and_never_parsed():
    s = new_stream()
    s.receive_data(HEADER)
    out(s)
    events = s.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message><body>injected</body></message>")
    assert [type(e) for e in events] == [StartTls]
    assert b"<proceed" in out(s)
    assert s.state is State.TLS_HANDSHAKE


def test_after_tls_the_mechanisms_include_plain():
    s = secured()
    s.receive_data(HEADER)
    data = out(s)
    assert b"<mechanism>SCRAM-SHA-256</mechanism>" in data and b"<mechanism>PLAIN</mechanism>" in data
    assert b"starttls" not in data


def test_plain_is_never_offered_without_tls():
    s = new_stream(tls_required=False)
    s.receive_data(HEADER)
    data = out(s)
    assert b"SCRAM-SHA-256" in data and b"PLAIN" not in data
    s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
    assert b"<encryption-required/>" in out(s)


def test_sasl_success_restarts_and_offers_bind():
    s = secured()
    s.receive_data(HEADER)
    out(s)
    (step,) = s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>")
    assert isinstance(step, SaslStep) and step.mechanism == "PLAIN" and step.data == b"\0alice\0pw"
    s.sasl_reply(Success("alice"))
    assert b"<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>" in out(s)
    s.receive_data(HEADER)
    data = out(s)
    assert b"urn:ietf:params:xml:ns:xmpp-bind" in data


def test_three_failed_exchanges_end_the_stream():
    s = secured()
    s.receive_data(HEADER)
    for _ in range(3):
        s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
        s.sasl_reply(Failure("not-authorized", "wrong user name or password"))
    assert s.is_closed
    assert b"too many failed authentication attempts" in out(s)


def test_bad_base64_gets_incorrect_encoding():
    s = secured()
    s.receive_data(HEADER)
    out(s)
    s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!notbase64</auth>")
    assert b"<incorrect-encoding/>" in out(s)


def test_bind_and_pipelined_stanzas_are_released_in_order():
    s = authenticated()
    events = s.receive_data(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                            b"<resource>laptop</resource></bind></iq><presence/><message to='x@example.com'/>")
    assert events == [BindRequest("laptop")]
    held = s.bound(parse_jid("alice@example.com/laptop"))
    assert [e.stanza.name for e in held if isinstance(e, StanzaReceived)] == ["presence", "message"]
    assert b"<jid>alice@example.com/laptop</jid>" in out(s)


def test_bind_failure_is_a_stanza_error_and_binding_can_be_retried():
    s = authenticated()
    s.receive_data(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    s.bind_failed(StanzaError("bad-request", "no"))
    assert b"type=\"error\"" in out(s)
    assert s.state is State.BIND


def test_unknown_host_version_and_namespace():
    s = new_stream()
    events = s.receive_data(HEADER.replace(b"example.com", b"elsewhere.org"))
    assert events[-1].error.condition == "host-unknown"
    s = new_stream()
    events = s.receive_data(HEADER.replace(b"to='example.com' version='1.0'", b"to='example.com'"))
    assert events[-1].error.condition == "unsupported-version"
    s = new_stream()
    events = s.receive_data(HEADER.replace(b"jabber:client", b"jabber:server"))
    assert events[-1].error.condition == "invalid-namespace"


def test_stream_error_before_header_sends_a_header_first():
    s = new_stream()
    s.receive_data(b"<?xml version='1.0'?><!DOCTYPE x><x/>")
    data = out(s)
    assert data.startswith(b"<?xml version='1.0'?><stream:stream")
    assert b"<restricted-xml" in data and data.endswith(b"</stream:stream>")


def test_client_closing_the_stream_is_answered_in_kind():
    s = authenticated()
    events = s.receive_data(b"</stream:stream>")
    assert isinstance(events[-1], StreamClosed) and events[-1].by_peer
    assert out(s).endswith(b"</stream:stream>")


def test_streams_sharing_options_send_the_features_their_own_state_calls_for():
    """<stream:features/> is serialised once per (authenticated, encrypted) and shared by the
    streams of the same options: each stream still gets what its own state calls for."""
    from stockade.protocol.xml import Element
    options = StreamOptions(is_host_served=lambda d: d == "example.com", tls_required=False,
                            extra_features=[Element("sm", "urn:xmpp:sm:3")])
    plain, tls = ClientStream(options), ClientStream(options)
    plain.receive_data(HEADER)
    before_tls = out(plain)
    assert b"<starttls" in before_tls and b"<mechanism>PLAIN</mechanism>" not in before_tls
    tls.receive_data(HEADER)
    assert out(tls).split(b">", 2)[2] == before_tls.split(b">", 2)[2]   # same features (ids differ)
    tls.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    out(tls)
    tls.tls_established()
    tls.receive_data(HEADER)
    after_tls = out(tls)
    assert b"<starttls" not in after_tls and b"<mechanism>PLAIN</mechanism>" in after_tls
    tls.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>")
    tls.sasl_reply(Success("alice"))
    out(tls)
    tls.receive_data(HEADER)
    bound = out(tls)
    assert b"<bind" in bound and b'<sm xmlns="urn:xmpp:sm:3"/>' in bound and b"mechanism" not in bound
    assert set(options.features_sent) == {(False, False), (False, True), (True, True)}
