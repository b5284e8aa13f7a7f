"""Worms: one account messaging its 200 contacts in a burst is throttled and reported while
others go on chatting; the fan-out limit; automatic suspension and an administrator's unlock.
The clock is fake: every message of the burst falls in the same window."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from stockade.core.lockouts import account_key
from stockade.protocol.jid import parse_jid
from stockade.testing.clock import FakeClock
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client, client

from .threats import add_users, body, condition, error_for, errors, login, password, send

DOMAIN = "example.com"
MALLORY, ADMIN, DAVE, ERIN = (f"{u}@{DOMAIN}" for u in ("mallory", "admin", "dave", "erin"))
CONTACTS = [f"u{i:03d}@{DOMAIN}" for i in range(200)]


def worm_server(clock: FakeClock, **flood: object) -> RunningServer:
    policy = {"alert_jids": [ADMIN], "flood": flood}
    return RunningServer(config={"hosts": [{"domain": DOMAIN, "policy": policy}]}, clock=clock)


def provision(server: RunningServer, owner: str, contacts: list[str]) -> None:
    """The contacts' accounts and the owner's roster entries, through the services."""
    from stockade.modules.roster import RosterService

    async def make() -> None:
        await asyncio.gather(*(server.server.accounts.create(DOMAIN, c.split("@")[0], password(c))
                               for c in contacts))
        roster = server.server.ctx.services[RosterService]
        for contact in contacts:
            await roster.set_item(parse_jid(owner), parse_jid(contact), contact.split("@")[0], ["Friends"])
    server.call(make(), timeout=120)


async def audit_entries(server: RunningServer, action: str) -> list[dict]:
    await server.acall(server.server.audit.flush())
    return await server.acall(server.server.audit.entries(DOMAIN, action=action))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock) -> Iterator[RunningServer]:
    with worm_server(clock) as srv:           # the defaults: 30 identical bodies, 120 recipients a minute
        add_users(srv, MALLORY, ADMIN, DAVE, ERIN)
        provision(srv, MALLORY, CONTACTS)
        yield srv


async def test_a_worm_messaging_200_contacts_is_throttled_and_reported_while_others_chat(server, clock):
    async with login(server, ADMIN) as admin, login(server, DAVE) as dave, login(server, ERIN) as erin, \
            login(server, MALLORY) as mallory:
        # mallory's client sends the same link to every contact; dave and erin chat meanwhile
        for i, contact in enumerate(CONTACTS):
            send(mallory, contact, "look at this! http://worm.example/x", f"w{i}")
            if i % 20 == 0:
                send(dave, ERIN, f"dave {i}", f"d{i}")
                send(erin, DAVE, f"erin {i}", f"e{i}")
        last = await error_for(mallory, "w199")
        assert condition(last) == "policy-violation"
        assert "many different people" in last["error"]["text"]
        refused = {m["id"] for m in errors(mallory)} | {"w199"}
        assert refused == {f"w{i}" for i in range(29, 200)}      # the 30th identical message is the worm

        # the normal conversation went on: every message delivered, no errors
        for i in range(0, 200, 20):
            await body(erin, f"dave {i}")
            await body(dave, f"erin {i}")
        assert errors(dave) == [] and errors(erin) == []

        # the administrator got a headline alert, and the audit log has it
        alert = await admin.next_of(admin.messages, lambda m: m["type"] == "headline")
        assert alert["from"] == DOMAIN
        assert "worm" in alert["subject"] and MALLORY in alert["body"]
        entries = await audit_entries(server, "alert.worm")
        assert [e["target"] for e in entries] == [MALLORY]
        assert entries[0]["detail"]["pattern"] == "identical" and entries[0]["detail"]["recipients"] == 30

        # throttled: no new recipients, but a conversation already going on continues
        send(mallory, DAVE, "hi dave", "new")
        assert "many different people" in (await error_for(mallory, "new"))["error"]["text"]
        send(mallory, CONTACTS[0], "sorry, that was not me", "old")
        await mallory.roundtrip()
        assert "old" not in {m["id"] for m in errors(mallory)}

        # the throttle ends after throttle_for (15 minutes by default); one alert only
        clock.advance(901)
        send(mallory, DAVE, "hi dave, all clean now", "clean")
        await body(dave, "hi dave, all clean now")
        assert len(await audit_entries(server, "alert.worm")) == 1


async def test_ordinary_messages_to_many_people_are_not_a_worm(server):
    async with login(server, MALLORY) as mallory, login(server, DAVE) as dave:
        # a different message to each of 25 colleagues, and the same message to 20 others
        for i, contact in enumerate(CONTACTS[:25]):
            send(mallory, contact, f"hi {contact}, about ticket {i}", f"p{i}")
        for i, contact in enumerate(CONTACTS[25:45]):
            send(mallory, contact, "lunch at noon?", f"l{i}")
        send(mallory, DAVE, "done", "done")
        await body(dave, "done")
        assert errors(mallory) == []


async def test_the_fan_out_limit_counts_distinct_recipients_per_minute(clock):
    with worm_server(clock, fanout_per_minute=10, identical_recipients=0) as server:
        add_users(server, MALLORY, ADMIN, DAVE)
        provision(server, MALLORY, CONTACTS[:12])
        async with login(server, MALLORY) as mallory, login(server, ADMIN) as admin:
            for i, contact in enumerate(CONTACTS[:10]):
                send(mallory, contact, f"message {i}", f"f{i}")
            await mallory.roundtrip()
            assert errors(mallory) == []                    # 10 people within a minute: fine
            send(mallory, CONTACTS[10], "message 10", "f10")
            assert condition(await error_for(mallory, "f10")) == "policy-violation"
            alert = await admin.next_of(admin.messages, lambda m: m["type"] == "headline")
            assert "10 different people" in alert["body"] or "11 different people" in alert["body"]
        assert (await audit_entries(server, "alert.worm"))[0]["detail"]["pattern"] == "fanout"


async def test_suspend_on_worm_ends_the_sessions_and_locks_until_an_admin_unlocks(clock):
    with worm_server(clock, identical_recipients=5, suspend_on_worm=True) as server:
        add_users(server, MALLORY, ADMIN)
        provision(server, MALLORY, CONTACTS[:6])
        async with login(server, ADMIN) as admin, login(server, MALLORY) as mallory:
            for i, contact in enumerate(CONTACTS[:6]):
                send(mallory, contact, "look at this", f"s{i}")
            error = await mallory.next_of(mallory.stream_errors)
            assert error["condition"] == "policy-violation" and "suspended" in error["text"]
            await mallory.disconnected_event.wait()
            alert = await admin.next_of(admin.messages, lambda m: m["type"] == "headline")
            assert "suspended" in alert["body"] and "stockade user unlock" in alert["body"]
        # the account is locked: logging in fails
        again = Client(MALLORY, password(MALLORY), port=server.c2s_port, cert=server.cert_path)
        try:
            assert await again.login() is False
        finally:
            await again.close()
        assert [e["target"] for e in await audit_entries(server, "auth.lockout")] == [MALLORY]
        # an administrator lifts the lock (as `stockade user unlock` does): the account is back
        assert await server.acall(server.server.lockouts.unlock(account_key(DOMAIN, "mallory")))
        async with client(server, MALLORY, password(MALLORY)) as mallory:
            send(mallory, CONTACTS[0], "back", "back")
            await mallory.roundtrip()
            assert errors(mallory) == []
