"""The restricted XML stream reader (RFC 6120 section 11) and element serialisation."""

from __future__ import annotations

import gc
import weakref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.protocol.xml import STREAM_END, Element, StreamHeader, StreamReader, XmlError, parse

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")
STANZAS = (b"<message to='bob@example.com' type='chat' id='m1'><body>hi &amp; &lt;bye&gt; &#x263A;</body>"
           b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
           b"<presence><show>away</show><status xml:lang='en'>out</status></presence>"
           b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
STREAM = HEADER + STANZAS + b"</stream:stream>"


def feed_all(data: bytes, splits: list[int] | None = None, **limits) -> list:
    reader = StreamReader(**limits)
    events = []
    cuts = sorted(set(splits or [])) + [len(data)]
    start = 0
    for cut in cuts:
        events += reader.feed(data[start:cut])
        start = cut
    return events


def describe(events: list) -> list:
    return [e.serialize("jabber:client") if isinstance(e, Element) else type(e).__name__ for e in events]


def test_reads_header_stanzas_and_end():
    events = feed_all(STREAM)
    assert isinstance(events[0], StreamHeader) and events[0].attrs["to"] == "example.com"
    assert events[0].content_ns == "jabber:client"
    assert [e.name for e in events[1:4]] == ["message", "presence", "iq"]
    assert events[1].find("body").text == "hi & <bye> \u263a"
    assert events[2].find("status").get("xml:lang") == "en"
    assert events[3].find("ping", "urn:xmpp:ping") is not None
    assert events[-1] is STREAM_END


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_split_of_the_input_gives_the_same_events(splits):
    assert describe(feed_all(STREAM, splits)) == describe(feed_all(STREAM))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_garbage_only_ever_raises_the_protocol_error(garbage, splits):
    try:
        feed_all(HEADER + garbage, [len(HEADER) + s for s in splits if s <= len(garbage)])
    except XmlError as exc:
        assert exc.condition in {"not-well-formed", "restricted-xml", "invalid-namespace", "bad-format",
                                 "policy-violation"}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_text_round_trips_through_serialisation(text):
    el = Element("message", "jabber:client", {"to": text or "x"})
    el.add("body", text=text)
    try:
        back = parse(el.serialize(""))
    except XmlError:
        # Characters XML 1.0 cannot carry (control characters) are refused, never mangled.
        assert any(ord(c) < 0x20 and c not in "\t\n\r" or c in "\ufffe\uffff" for c in text)
        return
    assert back.find("body").text == text
    assert back.get("to") == (text or "x")


@pytest.mark.parametrize("bad, condition", [
    (b"<message><body>&x;</body></message>", "restricted-xml"),
    (b"<?php evil ?>", "restricted-xml"),
    (b"<!-- a comment -->", "restricted-xml"),
    (b"<message><body>unclosed</message>", "not-well-formed"),
    (b"<a:message/>", "invalid-namespace"),
    (b"just text", "bad-format"),
])
def test_restricted_and_malformed_xml_is_refused(bad, condition):
    with pytest.raises(XmlError) as exc:
        feed_all(HEADER + bad)
    assert exc.value.condition == condition


def test_a_dtd_before_the_stream_is_refused():
    with pytest.raises(XmlError) as exc:
        feed_all(b"<?xml version='1.0'?><!DOCTYPE stream>" + HEADER[21:])
    assert exc.value.condition == "restricted-xml"


def test_billion_laughs_never_expands():
    bomb = (b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
            b"<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]><lolz>&lol2;</lolz>")
    with pytest.raises(XmlError) as exc:
        feed_all(bomb)
    assert exc.value.condition == "restricted-xml"


def test_oversized_stanza_is_refused_even_when_it_never_ends():
    reader = StreamReader(max_stanza_size=4096)
    reader.feed(HEADER)
    reader.feed(b"<message><body>")
    with pytest.raises(XmlError) as exc:
        for _ in range(10):
            reader.feed(b"x" * 1000)
    assert exc.value.condition == "policy-violation"


def test_oversized_attribute_in_an_unfinished_tag_is_refused():
    reader = StreamReader(max_stanza_size=4096)
    reader.feed(HEADER)
    with pytest.raises(XmlError):
        for _ in range(10):
            reader.feed(b"<message to='" + b"a" * 1000)


def test_a_stanza_under_the_limit_passes_and_the_limit_is_per_stanza():
    body = b"x" * 3000
    stanza = b"<message><body>" + body + b"</body></message>"
    events = feed_all(HEADER + stanza * 5, max_stanza_size=4096)
    assert len(events) == 6


def test_depth_and_attribute_limits():
    with pytest.raises(XmlError) as exc:
        feed_all(HEADER + b"<a>" * 40, max_depth=32)
    assert exc.value.condition == "policy-violation"
    attrs = b" ".join(b"a%d='1'" % i for i in range(70))
    with pytest.raises(XmlError):
        feed_all(HEADER + b"<message " + attrs + b"/>", max_attrs=64)


def test_raw_content_is_reused_and_dropped_on_change():
    events = feed_all(STREAM)
    msg = events[1]
    assert msg._inner is not None
    msg.set("from", "alice@example.com/home")
    out = msg.serialize("jabber:client")
    assert b"from=\"alice@example.com/home\"" in out and b"&#x263A;" in out   # raw bytes kept
    msg.find("body").set_text("changed")
    assert msg._inner is None
    assert b"<body>changed</body>" in msg.serialize("jabber:client")


def _rebuilt(element: Element) -> bytes:
    """The element serialised from its tree alone, without any cached raw content."""
    fresh = Element(element.name, element.xmlns, dict(element.attrs),
                    [_rebuilt_child(c) for c in element.children])
    return fresh.serialize("jabber:client")


def _rebuilt_child(node):
    if isinstance(node, str):
        return node
    return Element(node.name, node.xmlns, dict(node.attrs), [_rebuilt_child(c) for c in node.children])


def test_a_child_appended_to_a_stanza_keeps_its_raw_content_and_is_written_at_the_end():
    msg = feed_all(STREAM)[1]
    stamp = msg.add("stanza-id", "urn:xmpp:sid:0", {"id": "abc", "by": "bob@example.com"})
    msg.append("tail & more")
    assert msg._inner is not None                     # no re-serialising for a stamp
    assert _rebuilt(parse(msg.serialize(""))) == _rebuilt(msg)     # the same XML as the tree
    stamp.set("id", "changed")                        # a later change to the stamp still counts
    assert msg._inner is None
    assert b'id="changed"' in msg.serialize("jabber:client")


def _stamped() -> Element:
    msg = feed_all(STREAM)[1]
    msg.add_leaf("stanza-id", "urn:xmpp:sid:0", {"id": "abc", "by": "bob@example.com"})
    return msg


def _added() -> Element:
    msg = feed_all(STREAM)[1]
    msg.add("x", "urn:example:x", {"a": "1"}, "text")
    return msg


@pytest.mark.parametrize("make", [lambda: feed_all(STREAM)[1], _stamped, _added,
                                  lambda: feed_all(STREAM)[1].copy()],
                         ids=["as read", "stamped", "child added", "copied"])
def test_a_stanza_and_its_children_are_freed_without_the_cyclic_collector(make):
    """A child knows the stanza whose raw content includes it by a weak reference: with a strong
    one every stanza with a child would be a reference cycle that only the collector frees (it
    took about a seventh of a busy server's time). A child kept after its stanza is gone can
    still be changed."""
    gc.collect()
    gc.disable()
    try:
        stanza = make()
        body = stanza.find("body")
        freed = weakref.ref(stanza)
        del stanza
        assert freed() is None
        body.set_text("changed")
        assert body.serialize("jabber:client") == b"<body>changed</body>"
    finally:
        gc.enable()


def test_a_change_to_a_copy_never_shows_the_original_raw_content():
    msg = feed_all(STREAM)[1]
    clone = msg.copy()
    clone.find("body").set_text("only in the copy")
    assert b"<body>only in the copy</body>" in clone.serialize("jabber:client")
    assert b"only in the copy" not in msg.serialize("jabber:client")
    assert _rebuilt(parse(clone.serialize(""))) == _rebuilt(clone)


def test_raw_content_is_not_used_when_it_needs_a_prefix_from_the_stream_root():
    events = feed_all(HEADER + b"<message><stream:foo/></message>")
    assert events[1]._inner is None
    assert b"xmlns=\"http://etherx.jabber.org/streams\"" in events[1].serialize("jabber:client")


def test_websocket_framing_reads_one_element_per_message():
    reader = StreamReader(framed=True)
    (opening,) = reader.feed(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>")
    assert opening.name == "open"
    (msg,) = reader.feed(b"<message xmlns='jabber:client' to='a@example.com'><body>x</body></message>")
    assert msg.find("body").text == "x"


def test_a_stored_stanza_comes_back_in_its_namespace():
    reader = StreamReader()
    reader.feed(HEADER)
    (msg,) = reader.feed(b"<message to='a@example.com'><body>x</body></message>")
    again = parse(msg.serialize(""))
    assert again.xmlns == "jabber:client" and again.find("body").xmlns == "jabber:client"
    assert again.serialize("jabber:client").startswith(b"<message to=")


def test_an_idle_stream_drops_its_parser_and_goes_on_as_before():
    reader = StreamReader()
    reader.feed(HEADER)
    reader.feed(b"<message to='a@example.com'><body>one</body></message>  ")
    assert reader.compact() and reader._parser is None
    assert not reader.compact()                               # already compact
    events = reader.feed(b"<message to='b@example.com'><stream:x/><body>two</body></message><iq/>")
    assert [e.name for e in events] == ["message", "iq"]       # no second header event
    assert events[0].find("body").text == "two"
    assert events[0].find("x", "http://etherx.jabber.org/streams") is not None   # prefix still bound
    assert reader.feed(b"</stream:stream>") == [STREAM_END]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20), st.data())
def test_compacting_at_any_moment_never_changes_what_is_read(splits, data):
    reader = StreamReader()
    events, start = [], 0
    for cut in sorted(set(splits)) + [len(STREAM)]:
        events += reader.feed(STREAM[start:cut])
        start = cut
        if data.draw(st.booleans()):
            reader.compact()          # refused unless it is safe
    assert describe(events) == describe(feed_all(STREAM))


def test_a_half_read_tag_is_never_dropped():
    reader = StreamReader()
    reader.feed(HEADER)
    reader.feed(b"<message to='a>b@example.com'")            # ends with a '>' inside a value
    assert not reader.compact()
    reader.feed(b"><body>x</body></message>")
    assert reader.compact()


def test_add_leaf_serialises_like_add_with_and_without_cached_content():
    reader = StreamReader()
    reader.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    attrs = {"id": "01H<&\"x", "by": "alice@example.com"}
    for data in (b"<message to='a@b'><body>hi &amp; bye</body></message>", b"<message to='a@b'/>"):
        fast, slow = reader.feed(data)[0], reader.feed(data)[0]
        fast.add_leaf("stanza-id", "urn:xmpp:sid:0", dict(attrs))
        slow.add("stanza-id", "urn:xmpp:sid:0", dict(attrs))
        assert fast.serialize() == slow.serialize()
        assert b'id="01H&lt;&amp;&quot;x"' in fast.serialize()
        fast.children[-1].set("by", "bob@example.com")        # a later change to the leaf is seen
        assert b'by="bob@example.com"' in fast.serialize()


def test_serialize_stanza_is_reused_only_while_the_stanza_is_unchanged():
    reader = StreamReader()
    reader.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    stanza = reader.feed(b"<message to='a@b'><body>one</body></message>")[0]
    first = stanza.serialize_stanza()
    assert first == stanza.serialize() and stanza.serialize_stanza() is first      # made once
    stanza.attrs["from"] = "c@d/r"                                                # attribute set directly
    assert stanza.serialize_stanza() == stanza.serialize() and b'from="c@d/r"' in stanza.serialize_stanza()
    stanza.add_leaf("stanza-id", "urn:xmpp:sid:0", {"id": "x", "by": "a@b"})
    assert b"<stanza-id" in stanza.serialize_stanza()
    stanza.find("body").set_text("two")
    assert b"<body>two</body>" in stanza.serialize_stanza()
    assert stanza.serialize_stanza() == stanza.serialize()


def test_the_kept_attributes_of_a_stanza_follow_every_change_and_either_namespace():
    """serialize() keeps a stanza's attributes serialised while they stay equal; the copies with
    and without the default namespace share them, and a changed attribute is always seen."""
    reader = StreamReader()
    reader.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    stanza = reader.feed(b"<message to='a@b' type='chat' id='m1'><body>one</body></message>")[0]
    stanza.attrs["from"] = "c@d/r"
    plain = stanza.serialize_stanza()
    assert plain == (b'<message xmlns="jabber:client" to="a@b" type="chat" id="m1" from="c@d/r">'
                     b"<body>one</body></message>")
    stanza.add_leaf("stanza-id", "urn:xmpp:sid:0", {"id": "x", "by": "a@b"})
    delivered = stanza.serialize("jabber:client")
    assert delivered == (b'<message to="a@b" type="chat" id="m1" from="c@d/r"><body>one</body>'
                         b'<stanza-id xmlns="urn:xmpp:sid:0" id="x" by="a@b"/></message>')
    stanza.attrs["to"] = "e@f"                                 # changed in place
    assert b'to="e@f"' in stanza.serialize("jabber:client") and b'to="e@f"' in stanza.serialize_stanza()
    stanza.set("type", "normal")
    stanza.attrs.pop("id")
    assert stanza.serialize("jabber:client") == (b'<message to="e@f" type="normal" from="c@d/r"><body>one</body>'
                                                 b'<stanza-id xmlns="urn:xmpp:sid:0" id="x" by="a@b"/></message>')
    assert stanza.serialize_stanza() == stanza.serialize()
    stanza.attrs["{urn:example}flag"] = 'a"b'                   # a namespaced attribute, escaped
    assert b' xmlns:ns0="urn:example" ns0:flag="a&quot;b"' in stanza.serialize("jabber:client")


def test_a_released_reader_frees_its_parser_and_refuses_what_comes_after():
    """What a connection that moved to another worker process keeps (net/connection.py
    `moved_away`): no parser, and no way to parse again."""
    reader = StreamReader()
    assert isinstance(reader.feed(STREAM[:STREAM.index(b"<message")])[0], StreamHeader)
    reader.release()
    assert reader._parser is None and not reader._buf
    with pytest.raises(XmlError) as exc:
        reader.feed(b"<message/>")
    assert exc.value.condition == "not-well-formed"
