"""XEP-0191 section 3.2 JID matching (the order of XEP-0016) and the <blocked/> error."""

from __future__ import annotations

import pytest

from stockade.modules.blocking import NS_BLOCKING_ERRORS, Blocklist
from stockade.core.verdict import Deny
from stockade.protocol.jid import parse_jid as J
from stockade.protocol.xml import Element


@pytest.mark.parametrize("listed, sender, blocked", [
    ("romeo@montague.net/orchard", "romeo@montague.net/orchard", True),     # 1: only that resource
    ("romeo@montague.net/orchard", "romeo@montague.net/balcony", False),
    ("romeo@montague.net/orchard", "romeo@montague.net", False),
    ("romeo@montague.net", "romeo@montague.net/anything", True),            # 2: any resource
    ("romeo@montague.net", "romeo@montague.net", True),
    ("romeo@montague.net", "benvolio@montague.net", False),
    ("montague.net/gateway", "montague.net/gateway", True),                 # 3: domain/resource
    ("montague.net/gateway", "montague.net", False),
    ("montague.net/gateway", "romeo@montague.net/gateway", True),      # the user part dropped (ejabberd too)
    ("montague.net", "montague.net", True),                                 # 4: the domain ...
    ("montague.net", "romeo@montague.net/orchard", True),                   # ... everyone at it
    ("montague.net", "montague.net/gateway", True),
    ("montague.net", "chat.montague.net", True),                            # ... and subdomains
    ("montague.net", "room@chat.montague.net/nick", True),
    ("montague.net", "evilmontague.net", False),                            # not a subdomain
    ("montague.net", "montague.net.example", False),
])
def test_matching(listed, sender, blocked):
    assert Blocklist([J(listed)]).blocks(J(sender)) is blocked


def test_an_empty_list_blocks_nobody():
    assert not Blocklist([]).blocks(J("anyone@anywhere.example/x"))
    assert len(Blocklist([J("a@b"), J("a@b")])) == 1


def test_the_outbound_error_carries_the_blocked_condition():
    verdict = Deny("not-acceptable", "you have blocked bob@example.com", rule="blocking",
                   app_condition=Element("blocked", NS_BLOCKING_ERRORS), error_type="cancel")
    assert isinstance(verdict, Deny)
    error = verdict.error().to_element()
    assert error.get("type") == "cancel"
    assert error.find("not-acceptable") is not None and error.find("blocked", NS_BLOCKING_ERRORS) is not None
