"""Link policy over XMPP. example.com warns about links outside its allow-list and refuses
denied and look-alike domains; other.org blocks every link not allowed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade.policy.links import NS_POLICY, find_hosts, skeleton
from stockade.testing.server import RunningServer

from stockade.policy.dlp import mask
from stockade.testing.xmpp import client

from .conftest import DOMAIN, OTHER, USERS, jid, login
from .test_dlp import refusal

LINKS = {"mode": "warn", "allow_domains": ["wiki.example.net", "python.org"], "deny_domains": ["evil.test"]}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    dlp = {"rules": [{"name": "ssn", "kind": "ssn", "action": "redact"}]}
    config = {"hosts": [{"domain": DOMAIN, "policy": {"links": LINKS, "dlp": dlp}},
                        {"domain": OTHER, "policy": {"links": {"mode": "block", "allow_domains": ["python.org"]}}}]}
    with RunningServer(config=config) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        srv.add_user(f"erin@{OTHER}", "erin-pw-55")
        srv.add_user(f"fred@{OTHER}", "fred-pw-66")
        yield srv


def test_links_are_found_in_text():
    text = ("see https://docs.python.org/3/ and www.Wikipedia.org, mail bob@example.com, "
            "version 1.2.3, http://user@evil.test:8080/x and shop.example.co.uk/cart")
    assert find_hosts(text) == ["docs.python.org", "www.wikipedia.org", "evil.test", "shop.example.co.uk"]
    assert skeleton("examp1e.com") == skeleton("example.com") == skeleton("exаmple.com")
    assert skeleton("rnicrosoft.com") == skeleton("microsoft.com")


async def test_an_allow_listed_link_passes_untouched(server):
    body = "the docs: https://docs.python.org/3/library/ and https://wiki.example.net/page"
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody=body, mtype="chat")
        received = await bob.next_message()
        assert received["body"] == body
        assert received.xml.find(f"{{{NS_POLICY}}}warning") is None


async def test_warn_labels_bobs_copy(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="look at http://news.site/today", mtype="chat")
        received = await bob.next_message()
        first, rest = received["body"].split("\n", 1)
        assert first.startswith("[Warning from Stockade: this message links to news.site") and rest == \
            "look at http://news.site/today"
        warning = received.xml.find(f"{{{NS_POLICY}}}warning")
        assert warning is not None and warning.get("type") == "link" and warning.get("domain") == "news.site"


async def test_a_denied_domain_is_refused_naming_it(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="login at https://portal.evil.test/login", mtype="chat")
        condition, text = refusal(await alice.next_message())
        assert condition == "policy-violation" and "a link to portal.evil.test" in text
        assert "links to evil.test are not allowed" in text
        alice.send_message(mto=jid("bob"), mbody="fine", mtype="chat")
        assert (await bob.next_message())["body"] == "fine"


@pytest.mark.parametrize("link, shown", [
    ("http://examp1e.com/reset", "examp1e.com looks like example.com"),
    ("http://exаmple.com/reset", "mixes letters of different scripts"),                 # Cyrillic а
    ("https://xn--80ak6aa92e.com/", "is an international domain name (xn--80ak6aa92e.com)"),
    ("https://wiki.examp1e.net/", "looks like wiki.example.net"),
])
async def test_look_alike_domains_are_refused(server, link, shown):
    async with login(server, "alice") as alice:
        alice.send_message(mto=jid("bob"), mbody=f"urgent: {link}", mtype="chat")
        condition, text = refusal(await alice.next_message())
        assert condition == "policy-violation" and shown in text, text


async def test_block_mode_refuses_other_links_and_passes_allowed_ones(server):
    async with client(server, f"erin@{OTHER}", "erin-pw-55") as erin, \
               client(server, f"fred@{OTHER}", "fred-pw-66") as fred:
        erin.send_message(mto=f"fred@{OTHER}", mbody="see www.news.site", mtype="chat")
        condition, text = refusal(await erin.next_message())
        assert condition == "policy-violation" and "a link to www.news.site" in text
        erin.send_message(mto=f"fred@{OTHER}", mbody="see python.org and our own other.org/help", mtype="chat")
        assert (await fred.next_message())["body"] == "see python.org and our own other.org/help"


async def test_a_message_dlp_redacts_still_meets_the_link_policy(server):
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="SSN 123-45-6789, form at https://evil.test/f", mtype="chat")
        condition, text = refusal(await alice.next_message())
        assert condition == "policy-violation" and "a link to evil.test" in text
        alice.send_message(mto=jid("bob"), mbody="SSN 123-45-6789, form at https://forms.site/f", mtype="chat")
        received = await bob.next_message()
        assert received["body"].endswith(f"SSN {mask('ssn')}, form at https://forms.site/f")
        assert received.xml.find(f"{{{NS_POLICY}}}warning").get("domain") == "forms.site"
