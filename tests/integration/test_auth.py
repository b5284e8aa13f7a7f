"""Authentication: SCRAM over TLS, PLAIN only inside TLS, throttling and lockout, stored keys only."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from stockade.testing.clock import FakeClock
from stockade.testing.raw import RawStream, header
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client, client

from .conftest import DOMAIN, USERS, jid


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_each_mechanism_logs_in_over_starttls(server, mechanism):
    async with client(server, jid("alice"), USERS["alice"], mechanism=mechanism) as alice:
        assert alice.boundjid.bare == jid("alice")


async def test_direct_tls_port_logs_in(server):
    c = Client(jid("alice"), USERS["alice"], port=server.direct_tls_port, cert=server.cert_path, direct_tls=True)
    try:
        assert await c.login()
    finally:
        await c.close()


async def test_wrong_password_is_refused(server):
    c = Client(jid("alice"), "not-her-password", port=server.c2s_port, cert=server.cert_path)
    try:
        assert await c.login() is False
    finally:
        await c.close()


async def test_unknown_user_is_refused_like_a_wrong_password(server):
    raw = await RawStream.open(server)
    await raw.starttls()
    answer = await raw.authenticate("nobody", "whatever-pw")
    assert b"<not-authorized/>" in answer
    await raw.close()


async def test_auth_without_tls_ends_the_stream(server):
    raw = await RawStream.open(server)
    await raw.send(header(DOMAIN))
    features = await raw.read_until(b"</stream:features>")
    assert b"<required/>" in features and b"mechanism" not in features
    await raw.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXB3LTE=</auth>")
    rest = await raw.read_to_close()
    assert b"<policy-violation" in rest and rest.endswith(b"</stream:stream>")


async def test_bad_sasl_exchange_gets_a_sasl_failure(server):
    raw = await RawStream.open(server)
    await raw.starttls()
    await raw.send(header(DOMAIN))
    await raw.read_until(b"</stream:features>")
    await raw.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>biwsbj1hLHI9Yg==</auth>")
    answer = await raw.read_until(b"</challenge>")
    await raw.send(b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Z2FyYmFnZQ==</response>")
    failure = await raw.read_until(b"</failure>")
    assert b"<malformed-request/>" in failure
    await raw.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>")
    assert b"<invalid-mechanism/>" in await raw.read_until(b"</failure>")
    await raw.close()
    del answer


async def _attempt(server, user: str, password: str) -> bytes:
    raw = await RawStream.open(server)
    try:
        await raw.starttls()
        return await raw.authenticate(user, password)
    finally:
        await raw.close()


async def test_repeated_failures_lock_the_account_then_it_unlocks():
    clock = FakeClock()
    with RunningServer([DOMAIN], clock=clock, config={"auth": {"max_failures_per_account": 3, "lockout": 600.0}}) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        for _ in range(3):
            assert b"<not-authorized/>" in await _attempt(srv, "alice", "guess-pw")
        locked = await _attempt(srv, "alice", USERS["alice"])        # even the right password
        assert b"<temporary-auth-failure/>" in locked
        assert b"too many failed logins for this account" in locked
        srv.run(lambda: clock.advance(601))
        assert b"success" in await _attempt(srv, "alice", USERS["alice"])


async def test_lockout_counts_unknown_accounts_the_same(server):
    for _ in range(5):
        await _attempt(server, "ghost", "guess-pw")
    assert b"<temporary-auth-failure/>" in await _attempt(server, "ghost", "guess-pw")


async def test_repeated_failures_from_one_address_lock_the_address():
    with RunningServer([DOMAIN], config={"auth": {"max_failures_per_address": 4}}) as srv:
        srv.add_user(jid("bob"), USERS["bob"])
        for user in ("u1", "u2", "u3", "u4"):
            await _attempt(srv, user, "guess-pw")
        answer = await _attempt(srv, "bob", USERS["bob"])
        assert b"<temporary-auth-failure/>" in answer and b"from your address" in answer


def test_the_database_holds_no_password(server):
    db = server.data_dir / "stockade.db"
    server.call(server.server.storage.flush())
    blob = db.read_bytes() + b"".join(p.read_bytes() for p in server.data_dir.glob("stockade.db-*"))
    for password in USERS.values():
        assert password.encode() not in blob
    rows = sqlite3.connect(db).execute("select count(*) from credentials").fetchone()[0]
    assert rows == 2 * len(USERS)        # SCRAM-SHA-1 and SCRAM-SHA-256 keys for each account


async def test_an_account_removed_from_the_command_line_loses_its_session(tmp_path):
    from stockade.cli import main
    config = tmp_path / "stockade.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path}"\naccount_check_interval = 1.0\n[[hosts]]\ndomain = "{DOMAIN}"\n')
    with RunningServer([DOMAIN], data_dir=tmp_path, config={"server": {"account_check_interval": 1.0}}) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            assert await asyncio.to_thread(main, ["--config", str(config), "user", "remove", jid("alice")]) == 0
            error = await alice.next_of(alice.stream_errors)
            assert error["condition"] == "not-authorized"
