"""RFC 7622 JIDs: normalisation, validation, caching."""

import pytest

from stockade.protocol.jid import JID, InvalidJid, parse_jid


@pytest.mark.parametrize("text, expected", [
    ("Alice@Example.COM", "alice@example.com"),
    ("alice@example.com/Laptop", "alice@example.com/Laptop"),
    ("example.com", "example.com"),
    ("example.com.", "example.com"),
    ("ÅLICE@bücher.de/x", "ålice@bücher.de/x"),
    ("alice@xn--bcher-kva.de", "alice@bücher.de"),
    ("alice@example.com/a/b@c", "alice@example.com/a/b@c"),
])
def test_normalised_forms(text, expected):
    assert str(parse_jid(text)) == expected


@pytest.mark.parametrize("text", ["", "@example.com", "alice@", "alice@example.com/", "a b@example.com",
                                  "a\"b@example.com", "alice@exa mple.com", "x" * 1100 + "@example.com"])
def test_invalid_jids_are_refused_with_a_reason(text):
    with pytest.raises(InvalidJid) as exc:
        parse_jid(text)
    assert str(exc.value)


def test_bare_and_equality():
    full = parse_jid("Alice@example.com/phone")
    assert full.bare == parse_jid("alice@example.com")
    assert full.bare.is_bare and not full.is_bare
    assert parse_jid("example.com").is_domain
    assert hash(full) == hash(parse_jid("alice@example.com/phone"))


def test_equal_jids_are_one_object_however_they_are_made():
    """JIDs compare and hash by identity (in C): that is only right if every way of making a
    JID gives the one object in use for that address."""
    import copy
    import pickle

    from stockade.protocol import jid as jid_module
    parsed = parse_jid("Bob@Example.COM/desk")
    made = [JID("bob", "example.com", "desk"), parse_jid("bob@example.com").with_resource("desk"),
            copy.copy(parsed), copy.deepcopy(parsed), pickle.loads(pickle.dumps(parsed))]
    jid_module._cache.clear()              # past the parse cache: parsing again normalises anew
    made.append(parse_jid("BOB@example.com/desk"))
    assert all(j is parsed for j in made)
    assert {parsed: 1}.get(JID("bob", "example.com", "desk")) == 1
    assert parsed.bare is JID("bob", "example.com", None) is parse_jid("bob@example.com")
    assert parsed != parse_jid("bob@example.com/phone") and parsed != "bob@example.com/desk"


def test_a_jid_no_longer_used_is_not_kept():
    import gc
    import weakref

    from stockade.protocol import jid as jid_module
    text = "carol@example.com/only-here"
    ref = weakref.ref(parse_jid(text))
    jid_module._cache.clear()
    gc.collect()
    assert ref() is None and text not in jid_module._interned
