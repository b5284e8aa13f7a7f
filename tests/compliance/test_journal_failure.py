"""When the journal cannot write, nothing passes unrecorded: the database is made to refuse journal
inserts (a trigger, added with sqlite3 while the server runs), and

    alice -> <message to='bob'><body>while broken</body></message>
    alice <- <message type='error'><error type='wait'><resource-constraint/>
             <text>the compliance archive cannot record messages right now; ...</text></error>
    bob   <- nothing

Dropping the trigger lets the kept batch commit and messages flow again. A tenant with
journal_on_failure = "deliver" gets its messages through, and the audit log says so once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest

from stockade.compliance.journal import REFUSAL_TEXT
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import TIMEOUT, client

from tests.integration.conftest import DOMAIN, USERS, jid
from tests.integration.test_upload import put, request_slot


def start(domain_options: dict | None = None) -> RunningServer:
    srv = RunningServer(config={"hosts": [{"domain": DOMAIN, **(domain_options or {})}]})
    srv.start()
    for user in ("alice", "bob"):
        srv.add_user(jid(user), USERS[user])
    return srv


@pytest.fixture
def server() -> Iterator[RunningServer]:
    srv = start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def delivering_server() -> Iterator[RunningServer]:
    srv = start({"journal_on_failure": "deliver"})
    try:
        yield srv
    finally:
        srv.stop()


def database(server: RunningServer, statement: str) -> None:
    db = sqlite3.connect(server.data_dir / "stockade.db", timeout=30)
    try:
        db.execute(statement)
        db.commit()
    finally:
        db.close()


def break_journal(server: RunningServer) -> None:
    database(server, "CREATE TRIGGER journal_refuses BEFORE INSERT ON journal_blocks "
                     "BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END")


def repair_journal(server: RunningServer) -> None:
    database(server, "DROP TRIGGER journal_refuses")


async def eventually(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true in time"
        await asyncio.sleep(0.02)


def failing(server: RunningServer) -> bool:
    return server.run(lambda: server.server.journal.is_failing)


def records_of(server: RunningServer, kind: str) -> list:
    journal = server.server.journal
    server.call(journal.flush())
    return server.call(journal.read(0, 10_000, kind=kind))


def journaled_bodies(server: RunningServer) -> list[str]:
    journal = server.server.journal
    server.call(journal.flush())
    return [r.payload["stanza"] for r in server.call(journal.read(0, 10_000, kind="chat"))]


async def test_a_failing_journal_refuses_messages_and_recovers(server: RunningServer) -> None:
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        break_journal(server)
        # The first message is queued before anyone knows; its batch fails and is kept.
        alice.send_message(mto=jid("bob"), mbody="before anyone knew", mtype="chat")
        assert (await bob.next_message())["body"] == "before anyone knew"
        await eventually(lambda: failing(server))

        alice.send_message(mto=jid("bob"), mbody="while broken", mtype="chat")
        error = await alice.next_message()
        assert error["type"] == "error" and error["error"]["type"] == "wait"
        assert error["error"]["condition"] == "resource-constraint"
        assert error["error"]["text"] == REFUSAL_TEXT
        await bob.roundtrip()
        assert [m["body"] for m in bob.pending(bob.messages)] == []
        # An upload cannot become downloadable unrecorded either.
        put_url, _get_url = await request_slot(alice, "minutes.txt", 5)
        refused = await put(server, put_url, b"notes")
        assert refused.status == 403 and REFUSAL_TEXT in refused.body.decode()

        repair_journal(server)
        await eventually(lambda: not failing(server))
        alice.send_message(mto=jid("bob"), mbody="back again", mtype="chat")
        assert (await bob.next_message())["body"] == "back again"
    stanzas = journaled_bodies(server)
    assert ["before anyone knew" in s for s in stanzas] == [True, False]
    assert "back again" in stanzas[1]
    assert not any("while broken" in s for s in stanzas)
    assert records_of(server, "upload") == []


async def test_a_tenant_that_prefers_delivery_gets_it_and_the_bypass_is_audited(
        delivering_server: RunningServer) -> None:
    server = delivering_server
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        break_journal(server)
        alice.send_message(mto=jid("bob"), mbody="first", mtype="chat")
        await bob.next_message()
        await eventually(lambda: failing(server))
        for body in ("second", "third"):
            alice.send_message(mto=jid("bob"), mbody=body, mtype="chat")
            assert (await bob.next_message())["body"] == body
        audit = server.server.audit
        server.call(audit.flush())
        bypasses = server.call(audit.entries(action="journal.bypass"))
        assert len(bypasses) == 1 and bypasses[0]["host"] == DOMAIN
        assert "disk is full" in bypasses[0]["detail"]["reason"]
        repair_journal(server)
        await eventually(lambda: not failing(server))
    stanzas = journaled_bodies(server)
    assert [next(b for b in ("first", "second", "third") if b in s) for s in stanzas] == \
        ["first", "second", "third"]
