"""RFC 7622 JIDs: normalisation, validation, caching."""

import pytest

from stockade.protocol.jid import InvalidJid, parse_jid


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
