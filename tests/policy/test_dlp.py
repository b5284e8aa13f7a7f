"""DLP over XMPP: alice sends bob (and people elsewhere) messages that carry confidential data;
each rule's action is seen from both sides, and ordinary text passes untouched.

    cards        card          block         any direction
    ssn          ssn           redact
    falcon       keywords      quarantine
    iban         iban          flag
    keys-out     credentials   block         external only
    pricelist    keywords      block         senders in group "sales" only (alice)
    slow         regex (a+)+$  flag          RE2: linear time
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.config import ConfigError, config_from_dict
from stockade.policy.dlp import mask
from stockade.policy.patterns import find_cards, find_credentials, find_ibans, find_ssns
from stockade.testing.server import RunningServer

from .conftest import DOMAIN, OTHER, USERS, jid, login, make_groups

STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
CARD = "4111 1111 1111 1111"
RULES = [
    {"name": "cards", "kind": "card", "action": "block"},
    {"name": "ssn", "kind": "ssn", "action": "redact"},
    {"name": "falcon", "kind": "keywords", "keywords": ["Project Falcon"], "action": "quarantine"},
    {"name": "iban", "kind": "iban", "action": "flag"},
    {"name": "keys-out", "kind": "credentials", "direction": "external", "action": "block"},
    {"name": "pricelist", "kind": "keywords", "keywords": ["price list"], "groups": ["sales"], "action": "block",
     "text": "Price lists stay inside the sales team: this message was not sent."},
    {"name": "slow", "kind": "regex", "pattern": "(a+)+$", "action": "flag"},
]


def refusal(reply: Any) -> tuple[str, str]:
    """(condition, text) of an error stanza, read from the XML (slixmpp does not know
    <policy-violation/>)."""
    assert reply["type"] == "error", reply
    error = reply.xml.find("{jabber:client}error")
    condition = next(c.tag.split("}")[1] for c in error if c.tag.startswith(STANZAS) and not c.tag.endswith("}text"))
    return condition, reply["error"]["text"]


def policy_config(rules: list[dict]) -> dict:
    return {"hosts": [{"domain": DOMAIN, "policy": {"dlp": {"rules": rules}}}, {"domain": OTHER}]}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with RunningServer(config=policy_config(RULES)) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        srv.add_user(f"erin@{OTHER}", "erin-pw-55")
        make_groups(srv, {"sales": ["alice"]})
        yield srv


def audit(server: RunningServer, action: str) -> list[dict]:
    server.call(server.server.audit.flush())
    return server.call(server.server.audit.entries(DOMAIN, action=action, limit=50))


# -- the detectors ----------------------------------------------------------------------------------
def test_the_detectors_find_real_numbers_and_skip_look_alikes():
    assert find_cards(f"card {CARD} ok") and find_cards("5500-0000-0000-0004")
    assert not find_cards("4111 1111 1111 1112")           # fails Luhn
    assert not find_cards("order 2024-11-26 ref 1234 5678")
    # Long ids and timestamps pass Luhn one time in ten: only card networks' prefixes count.
    assert not find_cards("sent at 1764120000000000005")    # 19 digits, passes Luhn, no network
    assert not find_cards("ticket 9000000000000001")        # 16 digits, passes Luhn, no network
    assert find_cards("amex 3782 822463 10005") and find_cards("jcb 3530111333300000")
    assert find_ssns("ssn 123-45-6789")
    assert not any(find_ssns(s) for s in ("000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"))
    assert find_ibans("GB82 WEST 1234 5698 7654 32") and find_ibans("DE89370400440532013000")
    assert not find_ibans("GB82WEST12345698765433")       # bad check digits
    assert find_credentials("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----")
    assert find_credentials("AKIAIOSFODNN7EXAMPLE") and find_credentials("ghp_" + "a1" * 18)
    assert find_credentials("xoxb-123456789012-abcdefghij") and find_credentials("api_key = 'Zx8fQ2LmP0aB9cDeF1'")
    assert not find_credentials("the key to success is practice")


# -- configuration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule, reason", [
    ({"name": "bad", "kind": "regex", "pattern": "(unclosed"}, "rule 'bad': the pattern '(unclosed' is not a valid RE2"),
    ({"name": "look", "kind": "regex", "pattern": r"(?<=x)y"}, "rule 'look': the pattern"),
    ({"name": "all", "kind": "regex", "pattern": "x*"}, "rule 'all': the pattern 'x*' matches empty text"),
    ({"name": "act", "kind": "card", "action": "delete"}, "rule 'act': unknown action 'delete'"),
    ({"name": "k", "kind": "passport"}, "rule 'k': unknown kind 'passport'"),
    ({"name": "empty", "kind": "keywords"}, "rule 'empty': a keywords rule needs a non-empty keywords list"),
])
def test_a_malformed_rule_stops_startup_naming_the_rule(rule, reason):
    with pytest.raises(ConfigError) as raised:
        config_from_dict(policy_config([rule]), "stockade.toml", Path("."))
    assert raised.value.key == "hosts[0].policy.dlp.rules"
    assert raised.value.reason.startswith(reason), raised.value.reason


def test_a_catastrophic_pattern_is_accepted_because_matching_is_linear():
    config = config_from_dict(policy_config([RULES[-1]]), "stockade.toml", Path("."))
    from stockade.policy.dlp import compile_rule
    rule = compile_rule(config.hosts[0].policy.dlp.rules[0])
    assert rule.find("a" * 200_000 + "b") == []          # completes; backtracking engines never would
    assert rule.find("xaaa") == [(1, 4)]


# -- actions over XMPP -------------------------------------------------------------------------------
async def test_a_card_number_is_blocked_with_the_rule_text(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody=f"my card is {CARD}, thanks", mtype="chat")
        condition, text = refusal(await alice.next_message())
        assert condition == "policy-violation"
        assert text == ("This message was not sent: it contains what looks like a payment card number "
                        "(rule 'cards'). Remove it and send again.")
        alice.send_message(mto=jid("bob"), mbody="after the card", mtype="chat")
        assert (await bob.next_message())["body"] == "after the card"     # the card never arrived
    assert any(e["detail"]["rule"] == "dlp.cards" for e in audit(server, "policy.deny"))


async def test_ordinary_numbers_pass_untouched(server):
    text = "Order 4111 1111 1111 1112 ships 2026-11-26; call +1 555 123 4567, room 1234-5678."
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody=text, mtype="chat")
        assert (await bob.next_message())["body"] == text


async def test_redact_masks_the_number_in_bobs_copy(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="SSN 123-45-6789 for the form", mtype="chat")
        received = await bob.next_message()
        assert received["body"] == f"SSN {mask('ssn')} for the form"
    assert any(e["detail"]["rule"] == "dlp.ssn" and e["target"] == jid("bob") for e in audit(server, "policy.redact"))


async def test_quarantine_holds_the_message_and_tells_the_sender(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="the Project Falcon numbers", mtype="chat")
        notice = await alice.next_message()
        assert str(notice["from"]) == DOMAIN and "held for review" in notice["body"] and "'dlp.falcon'" in notice["body"]
        alice.send_message(mto=jid("bob"), mbody="next", mtype="chat")
        assert (await bob.next_message())["body"] == "next"         # the held one did not come first
        held = server.call(server.server.quarantine.list(DOMAIN))
        assert [h["body"] for h in held if h["rule"] == "dlp.falcon"] == ["the Project Falcon numbers"]


async def test_flag_delivers_and_writes_the_audit_entry(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="pay to GB82 WEST 1234 5698 7654 32", mtype="chat")
        assert (await bob.next_message())["body"] == "pay to GB82 WEST 1234 5698 7654 32"
    flags = [e for e in audit(server, "policy.flag") if e["detail"]["rule"] == "dlp.iban"]
    assert flags and flags[0]["actor"].startswith(jid("alice")) and "bank account" in flags[0]["detail"]["reason"]


async def test_keywords_apply_to_the_rules_groups_only(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="here is the Price List", mtype="chat")
        assert refusal(await alice.next_message()) == (
            "policy-violation", "Price lists stay inside the sales team: this message was not sent.")
        bob.send_message(mto=jid("alice"), mbody="here is the price list", mtype="chat")   # bob is not in sales
        assert (await alice.next_message())["body"] == "here is the price list"


async def test_an_external_rule_applies_only_to_other_domains(server):
    key = "AKIAIOSFODNN7EXAMPLE"
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto="partner@elsewhere.net", mbody=f"key {key}", mtype="chat")
        condition, text = refusal(await alice.next_message())
        assert condition == "policy-violation" and "(rule 'keys-out')" in text   # before remote-server-not-found
        alice.send_message(mto="partner@elsewhere.net", mbody="hello", mtype="chat")
        assert refusal(await alice.next_message())[0] == "remote-server-not-found"
        alice.send_message(mto=jid("bob"), mbody=f"key {key}", mtype="chat")
        assert (await bob.next_message())["body"] == f"key {key}"              # internal: allowed


async def test_a_long_input_against_a_catastrophic_pattern_is_delivered(server):
    body = "a" * 60_000 + "!"
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody=body, mtype="chat")
        assert (await bob.next_message())["body"] == body
