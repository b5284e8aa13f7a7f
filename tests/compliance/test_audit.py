"""The audit log: a hash chain that names the first entry someone edited, deleted or forged.

    the server records  1 user.create alice   2 auth.failure alice   3 ...
    someone runs        UPDATE audit SET detail = '...' WHERE id = 2
    verify says         BROKEN at entry 2: the entry was edited after it was written

Storage tests run on SQLite and PostgreSQL (`storage_url`); tampering is done with plain SQL
beside the server, as someone with database access would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from stockade.compliance import AuditLog
from stockade.storage import Storage
from stockade.storage.audit import GENESIS_HASH, entry_hash
from stockade.testing.clock import FakeClock
from stockade.testing.process import run_cli, to_toml
from stockade.testing.raw import RawStream
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client

DOMAIN = "example.com"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    opened = await Storage.open(storage_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def audit(storage: Storage, clock: FakeClock) -> AuditLog:
    return AuditLog(storage.audit, clock)


@pytest.fixture
def sql(storage_url: str):
    """Run SQL statements against the database directly with the plain drivers, bypassing
    Stockade (the tamperer). `:name` parameters; the rows of each statement."""

    async def run(*statements: str, **params: object) -> list[list[tuple]]:
        if storage_url.startswith("sqlite:///"):
            return await asyncio.to_thread(_run_sqlite, storage_url.removeprefix("sqlite:///"), statements, params)
        conn = await asyncpg.connect(storage_url)
        try:
            async with conn.transaction():
                results = []
                for statement in statements:
                    names = re.findall(r":(\w+)", statement)
                    numbered = re.sub(r":(\w+)", lambda m: f"${names.index(m.group(1)) + 1}", statement)
                    rows = await conn.fetch(numbered, *(params[n] for n in dict.fromkeys(names)))
                    results.append([tuple(row) for row in rows])
                return results
        finally:
            await conn.close()

    return run


def _run_sqlite(path: str, statements: tuple[str, ...], params: dict) -> list[list[tuple]]:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        return [conn.execute(statement, {k: v for k, v in params.items() if f":{k}" in statement}).fetchall()
                for statement in statements]


async def record_five(audit: AuditLog, clock: FakeClock) -> None:
    """Five entries, ids 1 to 5, one second apart."""
    await audit.record(DOMAIN, "cli", "user.create", "alice@example.com")
    for n in range(3):
        clock.advance(1)
        await audit.record(DOMAIN, "alice@example.com", "auth.failure", "alice@example.com",
                           address=f"192.0.2.{n}", reason="not-authorized")
    clock.advance(1)
    await audit.record("", "admin:root", "permission.change", "group:sales",
                       before={"upload": True}, after={"upload": False})


# -- the chain ----------------------------------------------------------------------------------
async def test_entries_chain_from_zeros_and_verify_says_intact(audit, clock):
    await record_five(audit, clock)
    newest_first = await audit.entries()
    assert [e["id"] for e in newest_first] == [5, 4, 3, 2, 1]
    oldest = newest_first[-1]
    assert oldest["prev_hash"] == GENESIS_HASH
    assert (oldest["host"], oldest["actor"], oldest["action"], oldest["target"], oldest["detail"]) == \
        (DOMAIN, "cli", "user.create", "alice@example.com", {})
    assert oldest["ts"] == 1_700_000_000.0
    for before, after in zip(newest_first[1:], newest_first[:-1]):
        assert after["prev_hash"] == before["hash"]
    assert newest_first[0]["detail"] == {"before": {"upload": True}, "after": {"upload": False}}

    result = await audit.verify()
    assert result.is_intact, result
    assert (result.count, result.last_id, result.last_hash) == (5, 5, newest_first[0]["hash"])


async def test_the_hash_is_sha256_of_the_canonical_fields(audit, clock):
    await audit.record(DOMAIN, "cli", "user.create", "alice@example.com", reason="hired")
    [entry] = await audit.entries()
    assert entry["hash"] == entry_hash(1, 1_700_000_000.0, DOMAIN, "cli", "user.create",
                                       "alice@example.com", '{"reason":"hired"}', GENESIS_HASH)


async def test_an_empty_log_is_intact(audit):
    result = await audit.verify()
    assert result.is_intact and result.count == 0 and result.last_hash == GENESIS_HASH


async def test_concurrent_records_form_one_linear_chain(audit):
    await asyncio.gather(*(audit.record(DOMAIN, "system", "auth.failure", f"u{n}@example.com")
                           for n in range(40)))
    result = await audit.verify()
    assert result.is_intact, result
    assert result.count == 40


async def test_entries_filter_by_host_and_action_and_page_backwards(audit, clock):
    await record_five(audit, clock)
    failures = await audit.entries(DOMAIN, action="auth.failure")
    assert [e["id"] for e in failures] == [4, 3, 2]
    assert [e["detail"]["address"] for e in failures] == ["192.0.2.2", "192.0.2.1", "192.0.2.0"]
    assert [e["id"] for e in await audit.entries(DOMAIN, action="auth.failure", limit=2, before_id=4)] == [3, 2]
    assert [e["id"] for e in await audit.entries("")] == [5]
    assert [e["id"] for e in await audit.entries(limit=2)] == [5, 4]


# -- tampering ----------------------------------------------------------------------------------
async def test_editing_an_entry_with_sql_is_reported_at_that_entry(audit, clock, sql):
    await record_five(audit, clock)
    await sql("UPDATE audit SET detail = :d WHERE id = 3", d='{"address":"203.0.113.9","reason":"not-authorized"}')
    result = await audit.verify()
    assert not result.is_intact
    assert result.bad_id == 3
    assert "edited" in result.reason
    assert result.count == 2


async def test_an_edit_whose_hash_was_recomputed_is_reported_at_the_next_entry(audit, clock, sql):
    await record_five(audit, clock)
    [[row]] = await sql("SELECT id, ts, host, actor, action, target, prev_hash FROM audit WHERE id = 2")
    forged_detail = '{"address":"203.0.113.9","reason":"not-authorized"}'
    new_hash = entry_hash(row[0], row[1], row[2], row[3], row[4], row[5], forged_detail, row[6])
    await sql("UPDATE audit SET detail = :d, hash = :h WHERE id = 2", d=forged_detail, h=new_hash)
    result = await audit.verify()
    assert (result.is_intact, result.bad_id) == (False, 3)
    assert "prev_hash does not match the hash of entry 2" in result.reason


@pytest.mark.parametrize("batch_size", [1000, 2])
async def test_deleting_a_middle_entry_is_detected(audit, clock, sql, batch_size):
    await record_five(audit, clock)
    await sql("DELETE FROM audit WHERE id = 3")
    result = await audit.verify(batch_size=batch_size)
    assert (result.is_intact, result.bad_id, result.count) == (False, 4, 2)
    assert result.reason == "entry 3 missing before it: deleted from the log"


async def test_a_deleted_last_entry_shows_once_the_next_is_recorded(audit, clock, sql):
    await record_five(audit, clock)
    await sql("DELETE FROM audit WHERE id = 5")
    await audit.record(DOMAIN, "system", "user.remove", "alice@example.com")
    result = await audit.verify()
    # The new entry chains correctly from entry 4, but ids are never reused: it is number 6.
    assert (result.is_intact, result.bad_id) == (False, 6)
    assert "entry 5 missing" in result.reason


async def test_deleting_the_first_entries_is_detected(audit, clock, sql):
    await record_five(audit, clock)
    await sql("DELETE FROM audit WHERE id IN (1, 2)")
    result = await audit.verify()
    assert (result.is_intact, result.bad_id, result.count) == (False, 3, 0)
    assert "entries 1 to 2 missing" in result.reason


_INSERT = ("INSERT INTO audit (id, ts, host, actor, action, target, detail, prev_hash, hash) "
           "VALUES (:id, :ts, :host, :actor, :action, :target, :detail, :prev, :hash)")


async def test_inserting_a_forged_entry_with_a_made_up_hash_is_detected(audit, clock, sql):
    await record_five(audit, clock)
    [[(last_hash,)]] = await sql("SELECT hash FROM audit WHERE id = 5")
    await sql(_INSERT, id=6, ts=1_700_000_010.0, host=DOMAIN, actor="admin:root", action="user.create",
              target="mallory@example.com", detail="{}", prev=last_hash, hash="ab" * 32)
    await audit.record(DOMAIN, "system", "user.remove", "bob@example.com")    # goes on as id 7
    result = await audit.verify()
    assert (result.is_intact, result.bad_id) == (False, 6)
    assert "edited" in result.reason


async def test_replacing_an_entry_by_a_forged_one_breaks_the_link_after_it(audit, clock, sql):
    await record_five(audit, clock)
    [[(prev,)]] = await sql("SELECT hash FROM audit WHERE id = 2")
    # The forger knows the algorithm: the forged entry's own hash is right, its link is too.
    forged = dict(id=3, ts=1_700_000_002.0, host=DOMAIN, actor="alice@example.com", action="auth.success",
                  target="alice@example.com", detail="{}", prev=prev)
    forged["hash"] = entry_hash(3, forged["ts"], DOMAIN, forged["actor"], forged["action"], forged["target"],
                                "{}", prev)
    await sql("DELETE FROM audit WHERE id = 3", _INSERT, **forged)
    result = await audit.verify()
    assert (result.is_intact, result.bad_id) == (False, 4)
    assert "prev_hash does not match the hash of entry 3" in result.reason


# -- failures do not reach the caller --------------------------------------------------------------
async def test_a_failed_write_is_logged_and_never_raised(audit, sql, caplog):
    await sql("DROP TABLE audit")
    with caplog.at_level(logging.ERROR, logger="stockade.audit"):
        await audit.record(DOMAIN, "cli", "user.create", "alice@example.com")     # no exception
    assert audit.failed_writes == 1
    assert any("could not write the audit entry user.create" in r.getMessage() for r in caplog.records)


# -- the command line ----------------------------------------------------------------------------
def _config(tmp_path: Path, storage_url: str) -> Path:
    path = tmp_path / "stockade.toml"
    path.write_text(to_toml({"server": {"data_dir": str(tmp_path / "data")}, "storage": {"url": storage_url},
                             "hosts": [{"domain": DOMAIN}]}))
    return path


async def test_cli_verify_prints_intact_then_names_the_first_bad_entry(audit, clock, sql, storage_url, tmp_path):
    config = _config(tmp_path, storage_url)
    await record_five(audit, clock)
    [last] = await audit.entries(limit=1)

    intact = await asyncio.to_thread(run_cli, "audit", "verify", config=config)
    assert (intact.status, intact.stdout, intact.stderr) == (
        0, f"audit log intact: 5 entries, last hash {last['hash']}\n", "")

    await sql("UPDATE audit SET target = 'someone-else@example.com' WHERE id = 2")
    broken = await asyncio.to_thread(run_cli, "audit", "verify", config=config)
    assert broken.status == 1, broken
    assert broken.stdout == ""
    assert broken.error_lines == [
        "stockade: audit log BROKEN at entry 2: its stored hash does not match its contents: "
        "the entry was edited after it was written (1 entries before it are intact)"]


async def test_cli_user_commands_are_recorded_and_listed(storage_url, tmp_path):
    config = _config(tmp_path, storage_url)
    added = await asyncio.to_thread(run_cli, "user", "add", "alice@example.com", "--password", "alice-pw-1",
                                    config=config)
    assert added.status == 0, added
    await asyncio.to_thread(run_cli, "user", "passwd", "alice@example.com", "--password", "alice-pw-2", config=config)
    await asyncio.to_thread(run_cli, "user", "remove", "alice@example.com", config=config)
    listed = await asyncio.to_thread(run_cli, "audit", "list", "--host", DOMAIN, config=config)
    assert listed.status == 0, listed
    fields = [line.split(" ")[:6] for line in listed.lines]
    assert [(f[0], f[2], f[3], f[4], f[5]) for f in fields] == [
        ("3", DOMAIN, "cli", "user.remove", "alice@example.com"),
        ("2", DOMAIN, "cli", "user.password", "alice@example.com"),
        ("1", DOMAIN, "cli", "user.create", "alice@example.com"),
    ]
    only = await asyncio.to_thread(run_cli, "audit", "list", "--action", "user.create", "--limit", "5", config=config)
    assert [line.split(" ")[4] for line in only.lines] == ["user.create"]
    assert (await asyncio.to_thread(run_cli, "audit", "verify", config=config)).status == 0


# -- the running server ---------------------------------------------------------------------------
async def _attempt(server: RunningServer, user: str, password: str) -> bytes:
    raw = await RawStream.open(server)
    try:
        await raw.starttls()
        return await raw.authenticate(user, password)
    finally:
        await raw.close()


async def test_failed_logins_and_the_lockout_are_recorded_by_the_server():
    clock = FakeClock()
    config = {"auth": {"max_failures_per_account": 3, "lockout": 600.0}}
    with RunningServer([DOMAIN], clock=clock, config=config) as srv:
        srv.add_user("alice@example.com", "alice-pw-1")
        audit: AuditLog = srv.server.ctx.services[AuditLog]

        # alice's client logs in with a wrong password: refused, and recorded with her address.
        # (One mechanism: by default slixmpp tries the next one after a failure.)
        c = Client("alice@example.com", "not-her-password", port=srv.c2s_port, cert=srv.cert_path,
                   mechanism="SCRAM-SHA-256")
        try:
            assert await c.login() is False
        finally:
            await c.close()
        await srv.acall(audit.flush())
        [failure] = await srv.acall(audit.entries(DOMAIN, action="auth.failure"))
        assert (failure["actor"], failure["target"]) == ("alice@example.com", "alice@example.com")
        assert failure["detail"] == {"address": "127.0.0.1", "reason": "not-authorized"}
        assert await srv.acall(audit.entries(DOMAIN, action="auth.lockout")) == []

        # Two more failures reach the limit of 3: the account is locked, and that is recorded.
        for _ in range(2):
            assert b"<not-authorized/>" in await _attempt(srv, "alice", "guess-pw")
        await srv.acall(audit.flush())
        assert len(await srv.acall(audit.entries(DOMAIN, action="auth.failure"))) == 3
        [lockout] = await srv.acall(audit.entries(DOMAIN, action="auth.lockout"))
        assert (lockout["actor"], lockout["target"]) == ("system", "alice@example.com")
        assert lockout["detail"] == {"scope": "account", "address": "127.0.0.1", "username": "alice",
                                     "until": clock.time() + 600.0}

        created = await srv.acall(audit.entries(DOMAIN, action="user.create"))
        assert [(e["actor"], e["target"]) for e in created] == [("system", "alice@example.com")]
        result = await srv.acall(audit.verify())
        assert result.is_intact and result.count == 5, result
