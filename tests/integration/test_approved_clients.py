"""Approved client software: an unlisted or outdated client is refused with <policy-violation/>
naming what is approved, and sees nothing meanwhile; an approved one logs in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.app import module_options
from stockade.config import ConfigError, config_from_dict
from stockade.modules.approved_clients import ApprovedClients, parse_entry, parse_version
from stockade.testing.raw import RawStream
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client

from .conftest import DOMAIN, USERS, jid

ALLOW = ["Gajim >= 1.8", "Conversations >= 2.10"]
APPROVED = "approved clients: Gajim >= 1.8, Conversations >= 2.10; ask your administrator"


@pytest.fixture
def server() -> Iterator[RunningServer]:
    config = {"modules": {"approved_clients": {"allow": ALLOW, "query_timeout": 2.0}}}
    with RunningServer([DOMAIN], config=config) as srv:
        for user in ("alice", "bob"):
            srv.add_user(jid(user), USERS[user])
        yield srv


def software(server: RunningServer, user: str, name: str, version: str) -> Client:
    """A client that answers XEP-0092 queries as `name` `version`."""
    c = Client(jid(user), USERS[user], port=server.c2s_port, cert=server.cert_path)
    c.plugin["xep_0092"].software_name = name
    c.plugin["xep_0092"].version = version
    return c


async def refusal_of(c: Client) -> str:
    """Log in, then the stream error the server ends the stream with."""
    try:
        assert await c.login(presence=False, roster=False)
        error = await c.next_of(c.stream_errors)
        assert error["condition"] == "policy-violation"
        return error["text"]
    finally:
        await c.close()


async def test_an_approved_client_logs_in_and_its_software_is_listed(server):
    gajim = software(server, "alice", "Gajim", "1.9.1")
    try:
        assert await gajim.login()               # roster and own presence: nothing held back for good
        await gajim.roundtrip()
        listed = server.run(lambda: server.server.ctx.services[ApprovedClients].sessions())
        assert [(s["jid"], s["name"], s["version"]) for s in listed] == [(str(gajim.boundjid), "Gajim", "1.9.1")]
        assert gajim.pending(gajim.stream_errors) == []
    finally:
        await gajim.close()


async def test_an_unapproved_client_is_refused_with_the_list_of_approved_ones(server):
    assert await refusal_of(software(server, "alice", "Foo", "1.0")) == f"client Foo 1.0 is not approved here; {APPROVED}"


async def test_an_outdated_client_is_refused_and_told_to_update(server):
    text = await refusal_of(software(server, "alice", "Conversations", "2.9.13"))
    assert text == f"client Conversations 2.9.13 is older than the approved minimum Conversations >= 2.10; update it ({APPROVED})"


async def test_a_silent_client_is_refused_and_what_was_sent_to_it_waits_offline(server):
    bob = software(server, "bob", "gajim", "1.8")          # names compare without case; 1.8 is the minimum
    try:
        assert await bob.login()
        silent = await RawStream.open(server)
        await silent.login("alice", USERS["alice"], resource="silent")
        await silent.read_until(b"jabber:iq:version")      # asked; it never answers
        bob.send_message(mto=jid("alice") + "/silent", mbody="for approved eyes only", mtype="chat")
        await bob.roundtrip()
        rest = await silent.read_to_close()
        assert b"<policy-violation" in rest and b"did not tell which software it is" in rest
        assert b"for approved eyes only" not in rest
        await silent.close()
        alice = software(server, "alice", "Gajim", "1.8.0")
        try:
            assert await alice.login()
            msg = await alice.next_message()
            assert msg["body"] == "for approved eyes only"
        finally:
            await alice.close()
    finally:
        await bob.close()


async def test_without_an_allow_list_every_client_is_allowed_and_not_asked():
    with RunningServer([DOMAIN]) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        c = Client(jid("alice"), USERS["alice"], port=srv.c2s_port, cert=srv.cert_path)
        try:
            assert await c.login()
            await c.roundtrip()
            assert srv.run(lambda: [s.client_info for s in srv.server.sessions]) == [{}]
        finally:
            await c.close()


# -- the decision ---------------------------------------------------------------------------------
def test_versions_compare_by_their_numbers():
    assert parse_version("2.10.1+free") > parse_version("2.9.13")
    assert parse_version("1.8") == parse_version("1.8.0")
    assert parse_version("nightly") is None
    assert parse_entry(" Gajim>=1.8 ").text == "Gajim >= 1.8"
    with pytest.raises(ValueError, match="is not 'Name' or 'Name >= VERSION'"):
        parse_entry("Gajim > 1.8")


def test_a_bad_allow_entry_stops_startup_naming_the_key():
    with pytest.raises(ConfigError) as bad:
        config_from_dict({"modules": {"approved_clients": {"allow": ["Gajim => 1"]}}}, "(test)", Path("."),
                         module_options())
    assert bad.value.key == "modules.approved_clients.allow"
