"""Unsolicited contact: the members of "execs" accept messages and subscription requests only
from their contacts; example.com refuses subscription requests from other domains; everyone
else may be reached by anyone.

    example.com   ceo (in execs), bob, alice
    other.org     zed (another tenant: an external sender)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client

from .conftest import make_groups
from .threats import add_users, body, condition, error_for, error_text, errors, login, send

A, B = "example.com", "other.org"
CEO, BOB, ALICE, ZED = f"ceo@{A}", f"bob@{A}", f"alice@{A}", f"zed@{B}"
CONTACT = {"accepts": "anyone", "refuse_external_subscriptions": True,
           "rules": [{"groups": ["execs"], "accepts": "contacts"}]}


@pytest.fixture
def server() -> Iterator[RunningServer]:
    config = {"hosts": [{"domain": A, "policy": {"contact": CONTACT}}, {"domain": B}]}
    with RunningServer(config=config) as srv:
        add_users(srv, CEO, BOB, ALICE, ZED)
        make_groups(srv, {"execs": ["ceo"]}, host=A)
        yield srv


async def subscribe_and_approve(asker: Client, approver: Client) -> None:
    """asker asks for approver's presence; approver approves."""
    asker.send_presence(pto=approver.boundjid.bare, ptype="subscribe")
    await approver.next_of(approver.subscription_requests)
    approver.send_presence(pto=asker.boundjid.bare, ptype="subscribed")
    await asker.next_of(asker.all_presence, lambda p: p["type"] == "subscribed")


async def test_contacts_only_refuses_a_stranger_and_lets_a_contact_through(server):
    async with login(server, CEO) as ceo, login(server, BOB) as bob, login(server, ALICE) as alice:
        # ceo adds bob (ceo asks, bob approves): bob is now in ceo's roster with a subscription
        await subscribe_and_approve(ceo, bob)
        send(bob, CEO, "the figures you asked for", "b1")
        await body(ceo, "the figures you asked for")
        # alice is a stranger to ceo
        send(alice, CEO, "hi, quick question", "a1")
        refusal = await error_for(alice, "a1")
        assert condition(refusal) == "forbidden"
        assert error_text(refusal).startswith(f"{CEO} accepts messages and contact requests only from their contacts")
        # nor may she ask for ceo's presence
        alice.send_presence(pto=CEO, ptype="subscribe")
        error = await alice.next_of(alice.all_presence, lambda p: p["type"] == "error")
        assert condition(error) == "forbidden"
        await ceo.roundtrip()
        assert ceo.pending(ceo.subscription_requests) == []
        assert [m["body"] for m in ceo.pending(ceo.messages) if m["body"]] == []
        # people outside execs get messages from anyone
        send(alice, BOB, "hello bob", "a2")
        await body(bob, "hello bob")
        assert [m["id"] for m in errors(alice)] == []


async def test_a_stranger_is_refused_while_the_recipient_is_offline_and_a_contact_is_not(server):
    async with login(server, CEO) as ceo, login(server, BOB) as bob:
        await subscribe_and_approve(ceo, bob)
    # ceo is offline: the roster is loaded to decide; bob's message waits offline, alice's is refused
    async with login(server, ALICE) as alice, login(server, BOB) as bob:
        send(alice, CEO, "are you there?", "a1")
        assert condition(await error_for(alice, "a1")) == "forbidden"
        send(bob, CEO, "for when you are back", "b1")
        await bob.roundtrip()
        assert errors(bob) == []
    async with login(server, CEO) as ceo:
        await body(ceo, "for when you are back")
        await ceo.roundtrip()
        assert "are you there?" not in [m["body"] for m in ceo.pending(ceo.messages)]


async def test_subscription_requests_from_another_domain_are_refused_and_local_ones_pass(server):
    async with login(server, ALICE) as alice, login(server, ZED) as zed, login(server, BOB) as bob:
        zed.send_presence(pto=ALICE, ptype="subscribe")
        answer = await zed.next_of(zed.all_presence, lambda p: p["type"] in ("unsubscribed", "subscribed", "error"))
        assert answer["type"] == "unsubscribed" and answer["from"].bare == ALICE
        # a colleague's request reaches alice
        bob.send_presence(pto=ALICE, ptype="subscribe")
        request = await alice.next_of(alice.subscription_requests)
        assert request["from"].bare == BOB
        assert all(p["from"].bare != ZED for p in alice.pending(alice.subscription_requests))
        # zed may still message alice (her rule is "anyone"): only the subscription was refused
        send(zed, ALICE, "hello from other.org", "z1")
        await body(alice, "hello from other.org")


async def test_a_policy_change_through_the_engine_takes_effect_at_once(server):
    engine = server.server.policy_engine
    async with login(server, ALICE) as alice, login(server, BOB) as bob:
        send(alice, BOB, "before", "m1")
        await body(bob, "before")
        await server.acall(engine.set(A, {"contact": {"accepts": "contacts"}}, actor="admin:test"))
        send(alice, BOB, "after", "m2")
        assert condition(await error_for(alice, "m2")) == "forbidden"
        await server.acall(engine.reset(A, actor="admin:test"))     # the configured policy again
        send(alice, BOB, "reset", "m3")
        await body(bob, "reset")
