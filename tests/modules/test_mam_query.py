"""XEP-0313 query parsing, XEP-0082 stamps, XEP-0441 preferences, and what is worth archiving."""

from __future__ import annotations

import pytest

from stockade.modules.mam.archiving import SignedIds, is_worth_archiving, new_archive_id
from stockade.modules.mam.prefs import ArchivePrefs
from stockade.modules.mam.query import NS_MAM, format_stamp, parse_query, parse_stamp, query_form
from stockade.modules.rsm import RsmRequest
from stockade.protocol.errors import StanzaError
from stockade.protocol.jid import parse_jid
from stockade.protocol.xml import parse


def form(*fields: tuple[str, list[str]], form_type: str | None = NS_MAM, type_: str = "submit") -> str:
    out = [f"<x xmlns='jabber:x:data' type='{type_}'>"]
    if form_type is not None:
        out.append(f"<field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>")
    for var, values in fields:
        out.append(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>")
    return "".join(out) + "</x>"


def query(inner: str = "", attrs: str = "") -> object:
    return parse(f"<query xmlns='{NS_MAM}' {attrs}>{inner}</query>")


def test_an_empty_query_matches_everything():
    q = parse_query(query(attrs="queryid='f27'"))
    assert q.queryid == "f27" and q.with_jid is None and q.start is None and q.rsm is None
    assert not q.is_flipped


def test_every_field_and_rsm_are_read():
    q = parse_query(query(form(("with", ["Juliet@Capulet.lit"]), ("start", ["2010-06-07T00:00:00Z"]),
                               ("end", ["2010-07-07T13:23:54.5+02:00"]), ("after-id", ["a1"]),
                               ("before-id", ["b2"]), ("ids", ["x", "y"]))
                          + "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set>"
                          + f"<flip-page xmlns='{NS_MAM}'/>"))
    assert q.with_jid == parse_jid("juliet@capulet.lit")
    assert q.start == 1275868800.0 and q.end == 1278501834.5
    assert (q.after_id, q.before_id, q.ids) == ("a1", "b2", ("x", "y"))
    assert q.rsm == RsmRequest(max=10, before="") and q.is_flipped


@pytest.mark.parametrize("inner, condition", [
    (form(("colour", ["blue"])), "feature-not-implemented"),
    (form(("include-groupchat", ["true"])), "feature-not-implemented"),    # not advertised
    (form(("start", ["2010-06-07"])), "bad-request"),
    (form(("start", ["2010-06-07T00:00:00"])), "bad-request"),              # no time zone
    (form(("start", ["2010-13-07T00:00:00Z"])), "bad-request"),
    (form(("end", ["2010-01-01T00:00:00Z"]), ("start", ["2011-01-01T00:00:00Z"])), "bad-request"),
    (form(("with", ["a@b"]), ("with", ["c@d"])), "bad-request"),
    (form(("with", ["a@b", "c@d"])), "bad-request"),
    (form(("with", ["@@"])), "jid-malformed"),
    (form(form_type="urn:xmpp:mam:1"), "bad-request"),
    (form(type_="form"), "bad-request"),
    ("<x xmlns='jabber:x:data' type='submit'><field><value>1</value></field></x>", "bad-request"),
])
def test_bad_queries_are_refused_with_the_condition_the_xep_names(inner, condition):
    with pytest.raises(StanzaError) as info:
        parse_query(query(inner))
    assert info.value.condition == condition and info.value.text


def test_pubsub_nodes_are_not_user_archives():
    with pytest.raises(StanzaError) as info:
        parse_query(query(attrs="node='urn:xmpp:microblog:0'"))
    assert info.value.condition == "item-not-found"


def test_stamps_round_trip_and_accept_offsets_and_long_fractions():
    assert parse_stamp("1970-01-01T00:00:00Z", "start") == 0.0
    assert parse_stamp("1970-01-01T01:00:00+01:00", "start") == 0.0
    assert parse_stamp("1970-01-01T00:00:01.1234567890Z", "start") == pytest.approx(1.123456)
    assert format_stamp(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert parse_stamp(format_stamp(1_700_000_000.25), "x") == 1_700_000_000.25


def test_the_form_lists_every_supported_field():
    x = query_form().find("x", "jabber:x:data")
    fields = {f.get("var"): f.get("type") for f in x.elements("field")}
    assert fields == {"FORM_TYPE": "hidden", "with": "jid-single", "start": "text-single", "end": "text-single",
                      "before-id": "text-single", "after-id": "text-single", "ids": "list-multi"}
    assert all(f.find("required") is None for f in x.elements("field"))


# -- preferences ----------------------------------------------------------------------------------
J = parse_jid


def test_preferences_decide_by_full_jid_then_bare_jid_then_default():
    prefs = ArchivePrefs("roster", always=frozenset({J("romeo@montague.lit")}),
                         never=frozenset({J("romeo@montague.lit/orchard"), J("tybalt@capulet.lit")}))
    contacts = {J("nurse@capulet.lit")}
    assert prefs.decide(J("romeo@montague.lit/balcony"), contacts) is True
    assert prefs.decide(J("romeo@montague.lit/orchard"), contacts) is False
    assert prefs.decide(J("tybalt@capulet.lit/x"), contacts) is False
    assert prefs.decide(J("nurse@capulet.lit/kitchen"), contacts) is True
    assert prefs.decide(J("friar@verona.lit"), contacts) is False
    assert prefs.decide(J("friar@verona.lit"), None) is None          # needs the roster
    assert ArchivePrefs("always").decide(J("x@y"), None) is True
    assert ArchivePrefs("never").decide(J("x@y"), None) is False


def test_preferences_round_trip_through_xml_and_storage():
    prefs = ArchivePrefs.from_element(parse(
        f"<prefs xmlns='{NS_MAM}' default='roster'><always><jid>Romeo@Montague.lit</jid></always>"
        f"<never><jid>montague@montague.lit</jid></never></prefs>"))
    assert prefs.always == frozenset({J("romeo@montague.lit")})
    again = ArchivePrefs.from_element(prefs.to_element())
    assert again == prefs == ArchivePrefs.from_json(prefs.to_json(), "always")
    empty = ArchivePrefs("never").to_element()
    assert empty.find("always", NS_MAM) is not None and empty.find("never", NS_MAM) is not None


@pytest.mark.parametrize("xml, condition", [
    (f"<prefs xmlns='{NS_MAM}' default='sometimes'/>", "bad-request"),
    (f"<prefs xmlns='{NS_MAM}'/>", "bad-request"),
    (f"<prefs xmlns='{NS_MAM}' default='always'><always><jid>@@</jid></always></prefs>", "jid-malformed"),
    (f"<prefs xmlns='{NS_MAM}' default='always'><always><jid>a@b</jid></always>"
     f"<never><jid>A@b</jid></never></prefs>", "bad-request"),
    (f"<prefs xmlns='{NS_MAM}' default='always'><always/><always/></prefs>", "bad-request"),
])
def test_bad_preferences_are_refused(xml, condition):
    with pytest.raises(StanzaError) as info:
        ArchivePrefs.from_element(parse(xml))
    assert info.value.condition == condition and info.value.text


# -- what is archived -----------------------------------------------------------------------------
@pytest.mark.parametrize("xml, expected", [
    ("<message type='chat'><body>hi</body></message>", True),
    ("<message><body>normal</body></message>", True),
    ("<message type='headline'><body>news</body></message>", False),
    ("<message type='groupchat'><body>room</body></message>", False),
    ("<message type='error'><body>bounced</body></message>", False),
    ("<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", False),
    ("<message type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>", False),
    ("<message type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>", False),
    ("<message type='chat'><store xmlns='urn:xmpp:hints'/><active xmlns='http://jabber.org/protocol/chatstates'/>"
     "</message>", True),
    ("<message type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>", True),
    ("<message type='chat'><reactions xmlns='urn:xmpp:reactions:0' id='x'/></message>", True),
])
def test_what_is_worth_archiving(xml, expected):
    stanza = parse(xml.replace("<message", "<message xmlns='jabber:client'", 1))
    assert is_worth_archiving(stanza) is expected


def test_signed_ids_are_unpredictable_and_bound_to_their_archive():
    ids = SignedIds()
    alice, bob = J("alice@example.com"), J("bob@example.com")
    made = {ids.new(alice) for _ in range(1000)}
    assert len(made) == 1000 and all(len(i) == 26 for i in made)
    one = next(iter(made))
    assert ids.is_ours(one, alice)
    assert not ids.is_ours(one, bob)                      # not valid for another archive
    assert not SignedIds().is_ours(one, alice)            # nor for another key
    assert not ids.is_ours("A" * 24, alice) and not ids.is_ours("forged", alice)
    assert not ids.is_ours("%%%%", alice) and not ids.is_ours("%" * 26, alice)
    assert not ids.is_ours("0" * 26, alice) and not ids.is_ours("é" * 26, alice)
    # The time prefix of a genuine id with another signature, or another prefix: refused.
    assert not ids.is_ours(one[:14] + "A" * 12, alice)
    assert not ids.is_ours(f"{int(one[:14], 16) + 1:014x}" + one[14:], alice)


def test_signed_ids_stay_valid_when_the_per_owner_cache_starts_again(monkeypatch):
    """SignedIds keeps the MAC state of each owner (a bounded cache): ids made before the cache
    was emptied still verify, and every owner's ids stay bound to that owner."""
    monkeypatch.setattr(SignedIds, "OWNERS", 8)
    ids = SignedIds()
    owners = [J(f"user{n}@example.com") for n in range(30)]
    made = [(owner, ids.new(owner)) for owner in owners]          # the cache started again thrice
    assert all(ids.is_ours(archive_id, owner) for owner, archive_id in made)
    assert not any(ids.is_ours(archive_id, owners[(n + 1) % 30]) for n, (_, archive_id) in enumerate(made))
    assert len(ids._by_owner) <= 8


def test_the_archive_stamp_is_written_out_as_the_serialiser_would():
    """Archiver._stamp writes <stanza-id/> itself: the stanza then serialises exactly as with
    the element added the generic way, also for an owner with characters beyond ASCII, and the
    parsed stamp reads back."""
    from stockade.modules.mam.archiving import Archiver, NS_SID
    from stockade.protocol.xml import StreamReader
    reader = StreamReader()
    reader.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    for owner in (J("alice@example.com"), J("zoë@exämple.com")):
        stamped, plain = (reader.feed(b"<message to='a@b'><body>hi</body></message>")[0] for _ in range(2))
        archive_id = SignedIds().new(owner)
        Archiver._stamp(stamped, owner, archive_id)
        plain.add("stanza-id", NS_SID, {"by": str(owner), "id": archive_id})
        assert parse(stamped.serialize()).serialize() == plain.serialize()
        assert stamped.find("stanza-id", NS_SID).attrs == {"by": str(owner), "id": archive_id}
        again = parse(stamped.serialize("")).find("stanza-id", NS_SID)
        assert again.get("by") == str(owner) and again.get("id") == archive_id


def test_archive_ids_sort_in_the_order_they_were_made():
    """The archive's key index is then appended at its end (storage/keys.py)."""
    ids = SignedIds()
    alice = J("alice@example.com")
    made = [ids.new(alice) if n % 2 else new_archive_id() for n in range(2000)]
    assert made == sorted(made) and len(set(made)) == 2000
    assert len({i[:14] for i in made}) == 2000            # the prefix alone is unique
