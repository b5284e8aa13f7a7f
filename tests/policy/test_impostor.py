"""Impostors: external-sender labels, look-alike warnings and first-contact notices, for users of
example.com. examp1e.com (a one for the l) and other.org are other tenants of the same server:
to example.com their users are external, as federated users would be.

    example.com   ceo, alice, bob
    examp1e.com   ceo                 the impostor
    other.org     partner             an ordinary external sender
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slixmpp.xmlstream import ET

from stockade.testing.server import RunningServer

from .threats import add_users, body, label, login, send

A, FAKE, OTHER = "example.com", "examp1e.com", "other.org"
CEO, ALICE, BOB = f"ceo@{A}", f"alice@{A}", f"bob@{A}"
IMPOSTOR, PARTNER = f"ceo@{FAKE}", f"partner@{OTHER}"


def impostor_server(**impostor: object) -> RunningServer:
    hosts = [{"domain": A, "policy": {"impostor": impostor}}, {"domain": FAKE}, {"domain": OTHER}]
    return RunningServer(config={"hosts": hosts})


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with impostor_server(external_prefix="[External] ") as srv:
        add_users(srv, CEO, ALICE, BOB, IMPOSTOR, PARTNER)
        yield srv


async def test_a_message_from_another_domain_is_labeled_and_one_from_a_colleague_is_not(server):
    async with login(server, ALICE) as alice, login(server, PARTNER) as partner, login(server, BOB) as bob:
        send(partner, ALICE, "the contract draft", "p1")
        received = await body(alice, "[External] the contract draft")
        external = label(received, "external")
        assert external is not None and external.get("domain") == OTHER
        assert label(received, "lookalike") is None          # an ordinary external sender: no warning
        send(bob, ALICE, "lunch?", "b1")
        received = await body(alice, "lunch?")                # no prefix
        assert label(received, "external") is None


async def test_a_sender_cannot_forge_or_hide_the_labels(server):
    async with login(server, ALICE) as alice, login(server, PARTNER) as partner:
        msg = partner.make_message(mto=ALICE, mbody="trust me", mtype="chat")
        msg.xml.append(ET.Element("{urn:stockade:policy:0}external", {"domain": A}))
        msg.send()
        received = await body(alice, "[External] trust me")
        labels = received.xml.findall("{urn:stockade:policy:0}external")
        assert [e.get("domain") for e in labels] == [OTHER]


async def test_a_look_alike_of_a_directory_user_gets_the_recipient_a_warning(server):
    async with login(server, ALICE) as alice, login(server, IMPOSTOR) as impostor, login(server, PARTNER) as partner:
        send(impostor, ALICE, "please buy gift cards today", "i1")
        received = await alice.next_of(alice.messages, lambda m: "gift cards" in m["body"])
        warning = label(received, "lookalike")
        assert warning is not None and warning.get("resembles") == CEO
        assert received["body"] == ("[External] [Warning: this sender looks like ceo@example.com but is not] "
                                    "please buy gift cards today")
        assert label(received, "external").get("domain") == FAKE
        # a nickname imitating a user is a look-alike too (XEP-0172), from any domain
        msg = partner.make_message(mto=ALICE, mbody="it is me, your CEO", mtype="chat")
        nick = ET.Element("{http://jabber.org/protocol/nick}nick")
        nick.text = "C3O"
        msg.xml.append(nick)
        msg.send()
        received = await alice.next_of(alice.messages, lambda m: "your CEO" in m["body"])
        assert label(received, "lookalike").get("resembles") == CEO


async def test_first_contact_notice_on_the_first_message_only():
    with impostor_server(first_contact=True, first_contact_prefix="[First contact] ") as server:
        add_users(server, ALICE, BOB, PARTNER)
        async with login(server, ALICE) as alice, login(server, PARTNER) as partner, login(server, BOB) as bob:
            send(partner, ALICE, "hello, I am new here", "p1")
            first = await alice.next_of(alice.messages, lambda m: "new here" in m["body"])
            assert label(first, "first-contact") is not None
            assert first["body"] == "[First contact] hello, I am new here"
            send(partner, ALICE, "second message", "p2")
            second = await body(alice, "second message")
            assert label(second, "first-contact") is None
            # someone alice wrote to first is no stranger when they answer
            send(alice, BOB, "are you coming?", "a1")
            await body(bob, "[First contact] are you coming?")     # bob never heard from alice
            send(bob, ALICE, "yes", "b1")
            answer = await body(alice, "yes")
            assert label(answer, "first-contact") is None


def test_the_confusables_skeleton_matches_look_alikes_and_nothing_else():
    from stockade.policy.confusables import looks_alike
    for fake, real in (("examp1e.com", "example.com"), ("c3o", "ceo"), ("сео", "ceo"),   # Cyrillic с, е, о
                       ("rnicrosoft.com", "microsoft.com"), ("EXAMPLE.COM", "example.com"), ("paypa1", "paypal")):
        assert looks_alike(fake, real), (fake, real)
    for other, real in (("other.org", "example.com"), ("partner", "ceo"), ("example.co", "example.com"),
                        ("ceo", "ceo")):
        assert not looks_alike(other, real), (other, real)
