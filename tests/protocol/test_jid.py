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


def test_two_threads_making_the_same_new_jid_at_once_get_one_object(monkeypatch):
    """Both threads find no JID for the address and go on to make one: the second to enter
    must take the first's, or the two would be equal addresses that are not equal."""
    import itertools
    import threading

    from stockade.protocol import jid as jid_module

    both_missed = threading.Barrier(2, timeout=30)
    interned = jid_module._interned

    class Table:
        """The intern table, whose first two look-ups wait for each other (the race)."""
        def __init__(self) -> None:
            self.lookups = itertools.count(1)     # next() is atomic: no count is lost

        def get(self, key):
            found = interned.get(key)
            if next(self.lookups) <= 2:
                both_missed.wait()
            return found

        def __setitem__(self, key, value):
            interned[key] = value

    monkeypatch.setattr(jid_module, "_interned", Table())
    made: list[JID] = []
    threads = [threading.Thread(target=lambda: made.append(JID("dave", "example.com", None))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(made) == 2 and made[0] is made[1]
