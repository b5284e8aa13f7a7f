"""LDAP logins: SASL PLAIN inside TLS checked by a bind as the user; disabled users are cut off."""

from __future__ import annotations

import asyncio

from stockade.testing.raw import RawStream, header
from stockade.testing.xmpp import Client, client

from .conftest import DOMAIN, PEOPLE, directory_server, jid, sync


async def _attempt(srv, user: str, password: str) -> bytes:
    raw = await RawStream.open(srv)
    try:
        await raw.starttls()
        return await raw.authenticate(user, password, mechanism="PLAIN")
    finally:
        await raw.close()


async def test_directory_user_logs_in_with_plain_over_starttls(server):
    async with client(server, jid("alice"), PEOPLE["alice"], mechanism="PLAIN") as alice:
        assert alice.boundjid.bare == jid("alice")


async def test_directory_user_logs_in_over_direct_tls(server):
    c = Client(jid("bob"), PEOPLE["bob"], port=server.direct_tls_port, cert=server.cert_path, direct_tls=True,
               mechanism="PLAIN")
    try:
        assert await c.login()
    finally:
        await c.close()


async def test_a_wrong_ldap_password_is_refused(server):
    c = Client(jid("alice"), "not-alices-password", port=server.c2s_port, cert=server.cert_path, mechanism="PLAIN")
    try:
        assert await c.login() is False
    finally:
        await c.close()
    answer = await _attempt(server, "alice", "still-not-it")
    assert b"<not-authorized/>" in answer and b"wrong user name or password" in answer


async def test_scram_cannot_log_in_a_directory_user(server):
    c = Client(jid("alice"), PEOPLE["alice"], port=server.c2s_port, cert=server.cert_path, mechanism="SCRAM-SHA-256")
    try:
        assert await c.login() is False          # the server holds no keys for directory users
    finally:
        await c.close()


async def test_plain_is_never_accepted_before_tls(server):
    raw = await RawStream.open(server)
    await raw.send(header(DOMAIN))
    features = await raw.read_until(b"</stream:features>")
    assert b"PLAIN" not in features
    await raw.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLWxkYXAtcHc=</auth>")
    rest = await raw.read_to_close()
    assert b"success" not in rest


async def test_repeated_wrong_ldap_passwords_lock_the_account(ldap):
    with directory_server(ldap, server={"auth": {"max_failures_per_account": 3}}) as srv:
        sync(srv)
        for _ in range(3):
            assert b"<not-authorized/>" in await _attempt(srv, "bob", "guess-pw")
        locked = await _attempt(srv, "bob", PEOPLE["bob"])          # even the right password
        assert b"<temporary-auth-failure/>" in locked


async def test_an_unreachable_directory_refuses_logins_without_counting_them(ldap):
    with directory_server(ldap, server={"auth": {"max_failures_per_account": 2}}) as srv:
        sync(srv)
        ldap.stop()
        for _ in range(3):
            answer = await _attempt(srv, "alice", PEOPLE["alice"])
            assert b"<temporary-auth-failure/>" in answer and b"directory cannot be reached" in answer
        assert srv.server.throttle.locked(srv.server.throttle.account_key(DOMAIN, "alice")) == 0


async def test_a_user_disabled_in_ldap_loses_the_session_at_the_next_sync(server, ldap):
    async with client(server, jid("carol"), PEOPLE["carol"], mechanism="PLAIN") as carol, \
               client(server, jid("dave"), PEOPLE["dave"], mechanism="PLAIN") as dave:
        ldap.set_attribute(ldap.user_dn("carol"), "employeeType", ["disabled"])
        report = await server.acall(server.server.directory.sync(DOMAIN))
        assert report.disabled == ["carol"]
        error = await carol.next_of(carol.stream_errors)
        assert error["condition"] == "not-authorized"
        assert "disabled in the company directory" in error["text"]
        await asyncio.wait_for(carol.disconnected_event.wait(), 20)
        await dave.roundtrip()                       # dave, still enabled, is still connected
    again = Client(jid("carol"), PEOPLE["carol"], port=server.c2s_port, cert=server.cert_path, mechanism="PLAIN")
    try:
        assert await again.login() is False
    finally:
        await again.close()
    ldap.set_attribute(ldap.user_dn("carol"), "employeeType", [])
    assert (await server.acall(server.server.directory.sync(DOMAIN))).enabled == ["carol"]
    async with client(server, jid("carol"), PEOPLE["carol"], mechanism="PLAIN"):
        pass


async def test_disabled_in_ldap_cannot_log_in_even_before_the_next_sync(server, ldap):
    ldap.set_attribute(ldap.user_dn("dave"), "employeeType", ["disabled"])
    assert b"<not-authorized/>" in await _attempt(server, "dave", PEOPLE["dave"])
    assert b"success" in await _attempt(server, "alice", PEOPLE["alice"])


async def test_a_user_deleted_from_ldap_is_removed_and_disconnected(server, ldap):
    async with client(server, jid("dave"), PEOPLE["dave"], mechanism="PLAIN") as dave:
        ldap.delete(ldap.user_dn("dave"))
        report = await server.acall(server.server.directory.sync(DOMAIN))
        assert report.removed == ["dave"]
        error = await dave.next_of(dave.stream_errors)
        assert error["condition"] == "not-authorized"
    assert not await server.acall(server.server.accounts.exists(DOMAIN, "dave"))
    assert b"<not-authorized/>" in await _attempt(server, "dave", PEOPLE["dave"])


async def test_a_sync_by_the_command_line_cuts_off_a_disabled_user(tmp_path, ldap):
    from stockade.cli import main
    from .test_sync import _config
    config = _config(tmp_path, ldap, disabled_filter="(employeeType=disabled)")
    assert await asyncio.to_thread(main, ["--config", config, "directory", "sync"]) == 0
    from stockade.testing.server import RunningServer
    settings = {"url": ldap.url, "base_dn": ldap.suffix, "bind_dn": ldap.admin_dn, "bind_password": ldap.admin_password,
                "disabled_filter": "(employeeType=disabled)", "sync_interval": 0.0}
    with RunningServer([DOMAIN], data_dir=tmp_path, config={"server": {"account_check_interval": 1.0},
                                                            "hosts": [{"domain": DOMAIN, "directory": settings}]}) as srv:
        async with client(srv, jid("bob"), PEOPLE["bob"], mechanism="PLAIN") as bob:
            ldap.set_attribute(ldap.user_dn("bob"), "employeeType", ["disabled"])
            assert await asyncio.to_thread(main, ["--config", config, "directory", "sync"]) == 0
            error = await bob.next_of(bob.stream_errors)        # the server notices within a second
            assert error["condition"] == "not-authorized"


async def test_the_periodic_sync_cuts_off_a_disabled_user_without_anyone_asking(ldap):
    with directory_server(ldap, sync_interval=1.0) as srv:
        sync(srv)
        async with client(srv, jid("alice"), PEOPLE["alice"], mechanism="PLAIN") as alice:
            ldap.set_attribute(ldap.user_dn("alice"), "employeeType", ["disabled"])
            error = await alice.next_of(alice.stream_errors)       # within about a second
            assert error["condition"] == "not-authorized"


async def test_a_held_user_deleted_from_ldap_is_disabled_and_kept_until_the_hold_is_released(server, ldap):
    holds = server.server.holds
    await server.acall(holds.create(DOMAIN, "user", "dave", reason="matter 2026-04", actor="admin:comp"))
    async with client(server, jid("dave"), PEOPLE["dave"], mechanism="PLAIN") as dave:
        ldap.delete(ldap.user_dn("dave"))
        report = await server.acall(server.server.directory.sync(DOMAIN))
        assert report.removed == [] and any("dave@example.com" in w and "legal hold" in w for w in report.warnings)
        error = await dave.next_of(dave.stream_errors)              # access ends at once
        assert error["condition"] == "not-authorized"
    assert await server.acall(server.server.accounts.exists(DOMAIN, "dave"))    # data kept
    assert b"<not-authorized/>" in await _attempt(server, "dave", PEOPLE["dave"])
    [hold] = await server.acall(holds.list(DOMAIN))
    await server.acall(holds.release(DOMAIN, hold.id, actor="admin:comp"))
    report = await server.acall(server.server.directory.sync(DOMAIN))
    assert report.removed == ["dave"]
    assert not await server.acall(server.server.accounts.exists(DOMAIN, "dave"))
