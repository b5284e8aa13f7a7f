"""Account security from the command line, beside a running server on the same database:
the password policy, ending a lockout, and revoking every session of a stolen account."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import pytest

from stockade.cli import main
from stockade.core.hooks import POLICY, SessionInterrupted
from stockade.core.revocation import SessionRevocation
from stockade.testing.process import CliResult, run_cli, to_toml
from stockade.testing.raw import RawStream
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_auth import _attempt
from .test_stream_management import SM, enable, reconnect


def write_config(folder: Path, data: Path, **sections) -> Path:
    path = folder / "stockade.toml"
    path.write_text(to_toml({"server": {"data_dir": str(data)}, **sections, "hosts": [{"domain": DOMAIN}]}))
    return path


async def stockade(config: Path, *args: str) -> CliResult:
    """The real command, in a child process (from a worker thread: the test loop keeps running)."""
    return await asyncio.to_thread(run_cli, *args, config=config)


def refused(result: CliResult, reason: str) -> bool:
    return result.status == 1 and result.stdout == "" and reason in result.stderr


# -- the password policy, on the command line ---------------------------------------------------
def test_weak_common_and_reused_passwords_are_refused_with_the_rule(tmp_path):
    config = write_config(tmp_path, tmp_path / "data", auth={"reject_username_in_password": True})
    assert refused(run_cli("user", "add", jid("alice"), "--password", "x7#q", config=config),
                   "the password is too short: use at least 8 characters")
    assert refused(run_cli("user", "add", jid("alice"), "--password", "Sunshine2024!", config=config),
                   "the password is too common")
    assert refused(run_cli("user", "add", jid("alice"), "--password", "alice-rocks-77", config=config),
                   "the password contains the user name")
    assert run_cli("user", "add", jid("alice"), "--password", "plum-orbit-42", config=config).status == 0
    assert run_cli("user", "passwd", jid("alice"), "--password", "gravel-tide-8", config=config).status == 0
    assert refused(run_cli("user", "passwd", jid("alice"), "--password", "plum-orbit-42", config=config),
                   f"the password was used before: the last 5 password(s) of {jid('alice')} cannot be used again")


# -- lockouts -----------------------------------------------------------------------------------
async def test_an_administrator_ends_a_lockout_and_the_running_server_lets_the_user_in(tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path, data)
    with RunningServer([DOMAIN], data_dir=data, config={"auth": {"max_failures_per_account": 3, "lockout": 3600.0}}) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        assert (await stockade(config, "user", "lockouts")).stdout == "no account or address is locked\n"
        for _ in range(3):
            assert b"<not-authorized/>" in await _attempt(srv, "alice", "guess-pw")
        assert b"<temporary-auth-failure/>" in await _attempt(srv, "alice", USERS["alice"])

        listed = await stockade(config, "user", "lockouts")
        assert listed.status == 0
        assert re.search(rf"^account +{jid('alice')} +locked until .* UTC \(\d+ s left\)$", listed.stdout, re.M), listed

        assert (await stockade(config, "user", "unlock", jid("alice"))).stdout == f"unlocked {jid('alice')}\n"
        assert b"success" in await _attempt(srv, "alice", USERS["alice"])     # at once: no waiting
        assert (await stockade(config, "user", "lockouts")).stdout == "no account or address is locked\n"
        assert refused(await stockade(config, "user", "unlock", jid("alice")), f"{jid('alice')} is not locked")


async def test_an_administrator_ends_the_lockout_of_an_address(tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path, data)
    with RunningServer([DOMAIN], data_dir=data, config={"auth": {"max_failures_per_address": 3}}) as srv:
        srv.add_user(jid("bob"), USERS["bob"])
        for user in ("u1", "u2", "u3"):
            await _attempt(srv, user, "guess-pw")
        assert b"from your address" in await _attempt(srv, "bob", USERS["bob"])
        assert "address  127.0.0.1" in (await stockade(config, "user", "lockouts")).stdout
        assert (await stockade(config, "user", "unlock", "--address", "127.0.0.1")).stdout == "unlocked 127.0.0.1\n"
        assert b"success" in await _attempt(srv, "bob", USERS["bob"])


# -- revoking every session ---------------------------------------------------------------------
async def test_revoke_ends_live_sessions_and_a_hibernating_one_cannot_resume(tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path, data)
    with RunningServer([DOMAIN], data_dir=data, config={"server": {"account_check_interval": 1.0}}) as srv:
        for user in ("alice", "bob"):
            srv.add_user(jid(user), USERS[user])
        # Told when the server keeps a dropped session for resumption (XEP-0198).
        loop, hibernating = asyncio.get_running_loop(), asyncio.Event()
        srv.run(lambda: srv.server.bus.on(SessionInterrupted,
                                          lambda e: loop.call_soon_threadsafe(hibernating.set), POLICY))
        async with client(srv, jid("alice"), USERS["alice"]) as laptop, client(srv, jid("bob"), USERS["bob"]) as bob:
            phone = await RawStream.open(srv)
            await phone.login("alice", USERS["alice"], resource="phone")
            previd = await enable(phone)
            phone.writer.transport.abort()                  # the stolen phone drops off the network
            await asyncio.wait_for(hibernating.wait(), 20)

            result = await stockade(config, "user", "revoke", jid("alice"))
            assert result.status == 0 and result.stdout.startswith(f"revoked every session of {jid('alice')}")

            error = await laptop.next_of(laptop.stream_errors)
            assert error["condition"] == "not-authorized"
            assert error["text"] == f"all sessions of {jid('alice')} were revoked by an administrator; log in again"
            again = await reconnect(srv, "alice")
            await again.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
            assert b"<item-not-found" in await again.read_until(b"</failed>")
            await again.close()
            await bob.roundtrip()                           # other accounts are untouched
        async with client(srv, jid("alice"), USERS["alice"]) as fresh:   # logging in again works
            assert fresh.boundjid.bare == jid("alice")


async def test_the_revocation_service_ends_sessions_in_the_server_at_once(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        revocations = server.server.ctx.services[SessionRevocation]
        assert await server.acall(revocations.revoke(DOMAIN, "alice")) == 1
        error = await alice.next_of(alice.stream_errors)
        assert "revoked by an administrator" in error["text"]


def test_revoking_an_unknown_account_is_refused(tmp_path):
    config = write_config(tmp_path, tmp_path / "data")
    assert refused(run_cli("user", "revoke", jid("nobody"), config=config), f"{jid('nobody')} does not exist")


@pytest.mark.parametrize("args, reason", [
    (("user", "unlock"), "give the account (user@domain) or --address IP"),
    (("user", "unlock", "--address", "not-an-ip"), "'not-an-ip' is not an IP address"),
    (("user", "unlock", "alice@elsewhere.org"), "'elsewhere.org' is not a domain this server serves"),
])
def test_unlock_usage_errors_say_what_to_give(tmp_path, args, reason):
    config = write_config(tmp_path, tmp_path / "data")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["--config", str(config), *args])
    assert status == 1 and reason in err.getvalue()

