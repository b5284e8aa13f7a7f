"""Quarantine review through the admin API: alice's message with "Project Falcon" is held (bob
receives nothing, alice is told); the compliance officer lists it and releases it (bob gets it
with a delay stamp) or rejects it (alice is told); nobody else may read held messages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from stockade.testing.server import RunningServer

from ..admin.conftest import AdminApi, make_admins, token_for
from .conftest import DOMAIN, OTHER, USERS, jid, login

POLICY = {"dlp": {"rules": [{"name": "falcon", "kind": "keywords", "keywords": ["Project Falcon"],
                             "action": "quarantine"}]}}
DELAY = "{urn:xmpp:delay}delay"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with RunningServer(config={"hosts": [{"domain": DOMAIN, "policy": POLICY}, {"domain": OTHER}]}) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        make_admins(srv)
        yield srv


@pytest.fixture(scope="module")
def apis(server) -> dict[str, AdminApi]:
    return {name: AdminApi(server, token_for(server, name)) for name in ("ops", "tadmin", "comp")}


async def held_message(alice, text: str) -> None:
    """alice sends bob `text` and waits for the server's notice that it was held."""
    alice.send_message(mto=jid("bob"), mbody=text, mtype="chat")
    notice = await alice.next_message()
    assert str(notice["from"]) == DOMAIN and "held for review" in notice["body"], notice


def held_id(api: AdminApi, text: str) -> str:
    reply = api("GET", f"/hosts/{DOMAIN}/quarantine")
    assert reply.status == 200, reply.body
    found = [m for m in reply.body["messages"] if m["body"] == text]
    assert len(found) == 1 and found[0]["rule"] == "dlp.falcon" and found[0]["sender"].startswith(jid("alice"))
    return found[0]["id"]


async def test_release_delivers_the_held_message_with_a_delay_stamp(server, apis):
    comp = apis["comp"]
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        await held_message(alice, "Project Falcon budget: 2M")
        alice.send_message(mto=jid("bob"), mbody="ordinary", mtype="chat")
        assert (await bob.next_message())["body"] == "ordinary"             # the held one was not delivered
        item = await asyncio.to_thread(held_id, comp, "Project Falcon budget: 2M")
        reply = await asyncio.to_thread(comp, "POST", f"/hosts/{DOMAIN}/quarantine/{item}/release")
        assert reply.status == 200, reply.body
        released = await bob.next_message()
        assert released["body"] == "Project Falcon budget: 2M" and released.xml.find(DELAY) is not None
    gone = await asyncio.to_thread(comp, "POST", f"/hosts/{DOMAIN}/quarantine/{item}/release")
    assert gone.status == 404 and "no held message" in gone.error
    entries = server.call(server.server.audit.entries(DOMAIN, action="quarantine.release", limit=5))
    assert entries and entries[0]["actor"] == "admin:comp" and entries[0]["detail"]["id"] == item
    # The journal holds the held original (the quarantine verdict) and the released message.
    records = server.call(server.server.journal.read(host=DOMAIN))
    verdicts = [r for r in records if r.kind == "verdict" and "Project Falcon budget" in (r.payload or {}).get("stanza", "")]
    released_records = [r for r in records if r.kind == "chat" and (r.payload or {}).get("quarantine_id") == item]
    assert len(verdicts) == 1 and verdicts[0].payload["verdict"] == "quarantine"
    assert len(released_records) == 1 and released_records[0].payload["released_by"] == "admin:comp"
    assert "Project Falcon budget: 2M" in released_records[0].payload["stanza"]


async def test_reject_drops_it_and_tells_the_sender(server, apis):
    comp = apis["comp"]
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        await held_message(alice, "Project Falcon layoffs")
        item = await asyncio.to_thread(held_id, comp, "Project Falcon layoffs")
        reply = await asyncio.to_thread(comp, "POST", f"/hosts/{DOMAIN}/quarantine/{item}/reject")
        assert reply.status == 200, reply.body
        told = await alice.next_message()
        assert "rejected by a compliance officer" in told["body"] and str(told["from"]) == DOMAIN
        alice.send_message(mto=jid("bob"), mbody="after the rejection", mtype="chat")
        assert (await bob.next_message())["body"] == "after the rejection"   # nothing else came first
    listed = await asyncio.to_thread(comp, "GET", f"/hosts/{DOMAIN}/quarantine")
    assert all(m["id"] != item for m in listed.body["messages"])
    assert server.call(server.server.audit.entries(DOMAIN, action="quarantine.reject", limit=5))


def test_only_the_compliance_officer_reads_held_messages(apis):
    for name in ("ops", "tadmin"):
        reply = apis[name]("GET", f"/hosts/{DOMAIN}/quarantine")
        assert reply.status == 403 and "quarantine.review" in reply.error, (name, reply.body)
    assert apis["comp"]("POST", f"/hosts/{OTHER}/quarantine/abc/release").status == 403    # not its tenant
