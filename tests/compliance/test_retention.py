"""Retention and legal hold against the real server, real slixmpp clients and a fake clock.

    example.com keeps records 30 days; members of the group `trading` keep them 365 days.
    alice -> bob, alice -> carol (offline), erin -> dave (trading); alice uploads a file.
    bob is held; the group `legal` (carol) is held.
    31 days later the server's scheduled purge runs: alice's and erin's records go, bob's,
    carol's and dave's stay; the journal chain still verifies.
    The holds are released: the next purge removes bob's and carol's records.
    A year later dave's records go too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stockade.compliance.journal import read_records
from stockade.compliance.journal_verify import verify_journal
from stockade.compliance.retention import RetentionError
from stockade.modules.upload.catalog import Catalog
from stockade.testing.clock import FakeClock
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from ..integration.test_upload import eventually, stored_files, upload

DOMAIN = "example.com"
DAY = 86400.0
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-3", "dave": "dave-pw-44",
         "erin": "erin-pw-555"}
RETENTION = {"default_days": 30, "groups": [{"group": "trading", "days": 365}]}


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"


def retention_server(clock: FakeClock, retention: dict[str, Any] | None = None) -> RunningServer:
    return RunningServer(domains=[DOMAIN], clock=clock,
                         config={"hosts": [{"domain": DOMAIN, "retention": retention or RETENTION}]})


def counts(srv: RunningServer, store: str) -> dict[str, int]:
    storage = srv.server.storage

    async def read() -> dict[str, int]:
        await storage.flush()
        return {u: await storage.archive(store).count(DOMAIN, u) for u in USERS}
    return srv.call(read())


def journal_rows(srv: RunningServer) -> list[Any]:
    async def read() -> list[Any]:
        await srv.server.journal.flush()
        return await read_records(srv.server.storage, host=DOMAIN)
    return srv.call(read())


def live_rows_with(srv: RunningServer, user: str) -> int:
    return sum(1 for r in journal_rows(srv) if r.purged is None and jid(user) in (r.participants or "").split())


def settled(srv: RunningServer) -> None:
    """Wait until every archive and journal write queued so far is committed (group commit)."""
    srv.call(srv.server.storage.flush())
    srv.call(srv.server.journal.flush())


def scheduled_purge(srv: RunningServer) -> None:
    """Let the server's own scheduler run one round on the (moved) fake clock."""
    settled(srv)
    scheduler = srv.server.retention_scheduler
    done = srv.run(lambda: scheduler.runs)
    srv.run(scheduler.wake)
    srv.call(scheduler.wait_for_runs(done + 1), timeout=60)


def audit_entries(srv: RunningServer, action: str) -> list[dict[str, Any]]:
    return srv.call(srv.server.audit.entries(DOMAIN, action=action, limit=50))


async def converse(srv: RunningServer) -> None:
    async with client(srv, jid("alice"), USERS["alice"]) as alice, \
            client(srv, jid("bob"), USERS["bob"]) as bob, \
            client(srv, jid("dave"), USERS["dave"]) as dave, \
            client(srv, jid("erin"), USERS["erin"]) as erin:
        alice.send_message(mto=jid("bob"), mbody="the quarterly numbers", mtype="chat")
        assert (await bob.next_message())["body"] == "the quarterly numbers"
        alice.send_message(mto=jid("carol"), mbody="call me back", mtype="chat")     # carol is offline
        erin.send_message(mto=jid("dave"), mbody="sell 500 at the open", mtype="chat")
        assert (await dave.next_message())["body"] == "sell 500 at the open"
        await upload(srv, alice, "minutes.txt", b"meeting minutes")
        await alice.roundtrip()


def test_purge_honours_retention_groups_and_holds_and_keeps_the_journal_verifiable():
    clock = FakeClock()
    with retention_server(clock) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        groups, holds = srv.server.groups, srv.server.holds
        srv.call(groups.create(DOMAIN, "trading"))
        srv.call(groups.set_members(DOMAIN, "trading", add=["dave"]))
        srv.call(groups.create(DOMAIN, "legal"))
        srv.call(groups.set_members(DOMAIN, "legal", add=["carol"]))
        srv.call(srv.server.retention_scheduler.wait_for_runs(1), timeout=60)     # the start-up round
        asyncio.run(converse(srv))
        assert counts(srv, "mam") == {"alice": 2, "bob": 1, "carol": 1, "dave": 1, "erin": 1}
        assert counts(srv, "offline")["carol"] == 1
        assert len(stored_files(srv)) == 1
        assert live_rows_with(srv, "bob") >= 1 and live_rows_with(srv, "carol") >= 1

        bob_hold = srv.call(holds.create(DOMAIN, "user", "bob", reason="matter 17", actor="cli"))
        legal_hold = srv.call(holds.create(DOMAIN, "group", "legal", reason="matter 18", actor="cli"))

        # A purge the same day removes nothing: nothing is 30 days old.
        scheduled_purge(srv)
        assert counts(srv, "mam") == {"alice": 2, "bob": 1, "carol": 1, "dave": 1, "erin": 1}

        clock.advance(31 * DAY)
        scheduled_purge(srv)
        assert counts(srv, "mam") == {"alice": 0, "bob": 1, "carol": 1, "dave": 1, "erin": 0}
        assert counts(srv, "offline")["carol"] == 1          # held through the group legal
        assert stored_files(srv) == []                        # alice's file was 31 days old
        rows = journal_rows(srv)
        assert any(r.purged is not None for r in rows)
        assert live_rows_with(srv, "bob") >= 1                # alice -> bob: bob is held
        assert live_rows_with(srv, "carol") >= 1              # alice -> carol: carol is held
        assert live_rows_with(srv, "dave") >= 1               # erin -> dave: dave trades (365 days)
        purged = [r for r in rows if r.purged is not None]
        record = next(r for r in rows if r.kind == "purge")           # the chain says why
        assert record.payload["counts"]["mam"] == 3 and record.payload["actor"] == "system"
        assert all(r.payload is None and r.participants is None for r in purged)
        result = srv.call(verify_journal(srv.server.storage.journal, None))
        assert result.is_intact, result.problem
        assert result.purged == len(purged)
        entry = audit_entries(srv, "retention.purge")[0]
        assert entry["actor"] == "system"
        assert entry["detail"]["counts"]["mam"] == 3 and entry["detail"]["counts"]["files"] == 1
        assert entry["detail"]["held"] == 2
        assert entry["detail"]["cutoffs"]["mam"] == clock.time() - 30 * DAY

        # Releasing the holds lets the next purge apply retention to what they kept.
        srv.call(holds.release(DOMAIN, bob_hold.id, actor="cli"))
        srv.call(holds.release(DOMAIN, legal_hold.id, actor="cli"))
        assert [e["action"] for e in audit_entries(srv, "hold.release")] == ["hold.release"] * 2
        assert {e["target"] for e in audit_entries(srv, "hold.create")} == {"user:bob", "group:legal"}
        clock.advance(3600)                                   # purge_interval: the next round is due
        scheduled_purge(srv)
        assert counts(srv, "mam") == {"alice": 0, "bob": 0, "carol": 0, "dave": 1, "erin": 0}
        assert counts(srv, "offline")["carol"] == 0
        assert live_rows_with(srv, "bob") == 0 and live_rows_with(srv, "carol") == 0
        assert live_rows_with(srv, "dave") >= 1

        # The trading desk's records go after their own, longer retention.
        clock.advance(365 * DAY)
        scheduled_purge(srv)
        assert counts(srv, "mam")["dave"] == 0
        assert live_rows_with(srv, "dave") == 0
        result = srv.call(verify_journal(srv.server.storage.journal, None))
        assert result.is_intact, result.problem


def test_a_dry_run_counts_and_deletes_nothing_and_no_policy_purges_nothing():
    clock = FakeClock()
    with retention_server(clock) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        srv.call(srv.server.groups.create(DOMAIN, "trading"))          # with nobody in it
        asyncio.run(converse(srv))
        clock.advance(31 * DAY)
        settled(srv)
        report = srv.call(srv.server.retention.purge(DOMAIN, dry_run=True, actor="cli"))
        assert report.counts["mam"] == 6 and report.counts["offline"] == 1 and report.counts["files"] == 1
        assert report.counts["journal"] >= 3
        assert counts(srv, "mam") == {"alice": 2, "bob": 1, "carol": 1, "dave": 1, "erin": 1}
        assert len(stored_files(srv)) == 1
        assert audit_entries(srv, "retention.purge")[0]["detail"]["dry_run"] is True

    with RunningServer(domains=[DOMAIN], clock=clock) as srv:          # no [hosts.retention]
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        asyncio.run(converse(srv))
        clock.advance(10000 * DAY)
        settled(srv)
        report = srv.call(srv.server.retention.purge(DOMAIN))
        assert not any(report.counts.values())
        assert counts(srv, "mam")["alice"] == 2


def test_the_journal_keeps_at_least_what_the_message_archive_keeps():
    clock = FakeClock()
    with retention_server(clock, {"default_days": 30, "journal_days": 10}) as srv:
        policy = srv.server.retention.policy(DOMAIN)
        assert policy.days("journal") == 30
    with retention_server(clock, {"default_days": 30, "journal_days": 10, "journal_may_be_shorter": True}) as srv:
        assert srv.server.retention.policy(DOMAIN).days("journal") == 10


def test_the_upload_modules_own_expiry_keeps_the_files_of_held_users():
    clock = FakeClock()
    with RunningServer(domains=[DOMAIN], clock=clock,
                       config={"modules": {"upload": {"file_expiry_days": 1, "purge_interval": 1}}}) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        srv.call(srv.server.holds.create(DOMAIN, "user", "alice", reason="matter 3", actor="cli"))

        async def both_upload() -> None:
            async with client(srv, jid("alice"), USERS["alice"]) as alice, \
                    client(srv, jid("bob"), USERS["bob"]) as bob:
                await upload(srv, alice, "held.txt", b"kept for the case")
                await upload(srv, bob, "free.txt", b"may expire")
        asyncio.run(both_upload())
        catalog = srv.server.ctx.services[Catalog]
        owners = srv.run(lambda: {f.username: f.id for f in catalog.stored.values()})
        assert set(owners) == {"alice", "bob"}
        clock.advance(2 * DAY)
        # The sweep runs every second: once bob's file is gone, a sweep saw the moved clock.
        asyncio.run(eventually(lambda: owners["bob"] not in stored_files(srv), timeout=60))
        assert stored_files(srv) == [owners["alice"]]


def test_a_hold_on_another_domain_of_the_server_keeps_the_messages_its_user_received():
    clock = FakeClock()
    hosts = [{"domain": DOMAIN, "retention": {"default_days": 30}},
             {"domain": "other.org", "retention": {"default_days": 30}}]
    with RunningServer(domains=[DOMAIN, "other.org"], clock=clock, config={"hosts": hosts}) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        srv.add_user(jid("erin"), USERS["erin"])
        srv.add_user("bob@other.org", "bob-pw-22")
        srv.call(srv.server.holds.create("other.org", "user", "bob", reason="matter 5", actor="cli"))

        async def talk() -> None:
            async with client(srv, jid("alice"), USERS["alice"]) as alice, \
                    client(srv, "bob@other.org", "bob-pw-22") as bob, \
                    client(srv, jid("erin"), USERS["erin"]) as erin:
                alice.send_message(mto="bob@other.org", mbody="across tenants", mtype="chat")
                assert (await bob.next_message())["body"] == "across tenants"
                alice.send_message(mto=jid("erin"), mbody="same tenant", mtype="chat")
                assert (await erin.next_message())["body"] == "same tenant"
        asyncio.run(talk())
        clock.advance(31 * DAY)
        settled(srv)
        report = srv.call(srv.server.retention.purge(DOMAIN))
        assert report.counts["mam"] == 3                       # alice's two copies and erin's
        assert live_rows_with(srv, "erin") == 0
        kept = [r for r in journal_rows(srv) if r.purged is None and "bob@other.org" in (r.participants or "")]
        assert len(kept) == 1 and "across tenants" in kept[0].payload["stanza"]


def test_a_policy_naming_a_missing_group_purges_nothing():
    clock = FakeClock()
    with retention_server(clock, {"default_days": 30, "groups": [{"group": "tradng", "days": 2555}]}) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        asyncio.run(converse(srv))
        clock.advance(31 * DAY)
        settled(srv)
        with pytest.raises(RetentionError, match="tradng"):
            srv.call(srv.server.retention.purge(DOMAIN))
        scheduled_purge(srv)                                   # the scheduler logs it and goes on
        assert counts(srv, "mam")["alice"] == 2
        srv.call(srv.server.groups.create(DOMAIN, "tradng"))
        assert srv.call(srv.server.retention.purge(DOMAIN)).counts["mam"] == 6


async def test_purged_offline_messages_no_longer_count_against_the_limit():
    """carol's offline store is full (2 of max_messages 2); a purge empties it; new messages
    for her are stored again, not refused as if the store were still full."""
    clock = FakeClock()
    with RunningServer(domains=[DOMAIN], clock=clock,
                       config={"hosts": [{"domain": DOMAIN, "retention": {"default_days": 30}}],
                               "modules": {"offline": {"max_messages": 2}}}) as srv:
        for user in ("alice", "carol"):
            srv.add_user(jid(user), USERS[user])
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            for text in ("old one", "old two"):
                alice.send_message(mto=jid("carol"), mbody=text, mtype="chat")
            alice.send_message(mto=jid("alice"), mbody="stored", mtype="chat")     # handled after both
            assert (await alice.next_message())["body"] == "stored"
            assert counts(srv, "offline")["carol"] == 2
            alice.send_message(mto=jid("carol"), mbody="one too many", mtype="chat")
            refused = await alice.next_message()
            assert refused["type"] == "error"                       # the store is full
            clock.advance(31 * DAY)
            await asyncio.to_thread(scheduled_purge, srv)
            assert counts(srv, "offline")["carol"] == 0
            for text in ("new one", "new two"):
                alice.send_message(mto=jid("carol"), mbody=text, mtype="chat")
            alice.send_message(mto=jid("alice"), mbody="marker", mtype="chat")   # ordered after both
            assert (await alice.next_message())["body"] == "marker"            # no error came first
        async with client(srv, jid("carol"), USERS["carol"]) as carol:
            got = {(await carol.next_message())["body"] for _ in range(2)}
            assert got == {"new one", "new two"}
