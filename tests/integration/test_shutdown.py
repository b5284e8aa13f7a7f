"""Graceful shutdown of a real `stockade serve` process, and refusals to start.

    (accounts made with `stockade user add` before the server starts)
    alice, bob  <- logged in
    kill -TERM <server>
    alice, bob  <- <stream:error><system-shutdown/></stream:error>
    server      -> exits 0 before shutdown_grace ran out
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from stockade.testing.process import ServerProcess, free_port, run_cli, to_toml
from stockade.testing.xmpp import TIMEOUT, client

DOMAIN = "example.com"
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22"}
GRACE = 10.0


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding alice and bob, made once with the real `stockade user add`."""
    folder = tmp_path_factory.mktemp("accounts")
    template = ServerProcess(folder, [DOMAIN])
    for user, password in USERS.items():
        result = template.cli("user", "add", jid(user), "--password", password)
        assert result.status == 0, result
    return template.data_dir


@pytest.fixture
def proc(tmp_path: Path, accounts: Path) -> Iterator[ServerProcess]:
    """A server process (not started yet) on a copy of the accounts' data folder."""
    shutil.copytree(accounts, tmp_path / "data")
    server = ServerProcess(tmp_path, [DOMAIN], config={"server": {"shutdown_grace": GRACE}})
    try:
        yield server
    finally:
        server.stop()                  # SIGTERM, then SIGKILL if needed: never left running


async def test_sigterm_ends_every_session_with_system_shutdown_and_exits_0(proc):
    await proc.astart()
    async with client(proc, jid("alice"), USERS["alice"]) as alice, \
               client(proc, jid("bob"), USERS["bob"]) as bob:
        proc.terminate()
        sent = time.monotonic()
        for user in (alice, bob):
            error = await asyncio.wait_for(user.stream_errors.get(), TIMEOUT)
            assert error["condition"] == "system-shutdown"
            await asyncio.wait_for(user.disconnected_event.wait(), TIMEOUT)
        status = await proc.await_exit(GRACE + TIMEOUT)
        took = time.monotonic() - sent
    assert status == 0, proc.log
    assert took < GRACE, f"exit took {took:.1f} s"
    assert "did not finish within" not in proc.log
    assert "Traceback" not in proc.log


async def test_a_message_stored_just_before_sigterm_is_delivered_after_restart(proc):
    await proc.astart()
    before = datetime.now(timezone.utc)
    async with client(proc, jid("alice"), USERS["alice"]) as alice:
        alice.send_message(mto=jid("bob"), mbody="see you tomorrow", mtype="chat")
        # A client's stanzas are processed in order: once the ping is answered, the message was
        # handed to offline storage (whose write may still be in its batch when SIGTERM arrives).
        await alice.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        proc.terminate()
        assert (await asyncio.wait_for(alice.stream_errors.get(), TIMEOUT))["condition"] == "system-shutdown"
    assert await proc.await_exit(GRACE + TIMEOUT) == 0, proc.log

    await proc.astart()                               # the same data folder, new ports
    async with client(proc, jid("bob"), USERS["bob"], plugins=("xep_0199", "xep_0203")) as bob:
        msg = await bob.next_message()
        assert msg["body"] == "see you tomorrow"
        assert msg["from"].bare == jid("alice")
        delay = msg["delay"]
        assert delay["from"] == DOMAIN
        assert before - timedelta(seconds=1) <= delay["stamp"] <= datetime.now(timezone.utc)


@pytest.mark.parametrize("taken", ["port", "direct_tls_port"])
def test_a_taken_port_stops_startup_with_one_line(tmp_path, accounts, taken):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        c2s = {"interfaces": ["127.0.0.1"], "port": free_port(), "direct_tls_port": free_port(), taken: port}
        config = tmp_path / "stockade.toml"
        config.write_text(to_toml({"server": {"data_dir": str(tmp_path / "data")}, "c2s": c2s,
                                   "hosts": [{"domain": DOMAIN}]}))
        result = run_cli("serve", config=config)
    assert result.status != 0
    assert result.stdout == ""
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("stockade: cannot start: cannot listen for c2s"), line
    assert f"127.0.0.1:{port}" in line and "in use" in line, line


def test_an_unknown_key_stops_startup_with_one_line(tmp_path):
    config = tmp_path / "stockade.toml"
    config.write_text(to_toml({"server": {"data_dir": str(tmp_path / "data")},
                               "c2s": {"interfaces": ["127.0.0.1"], "prot": 5222}, "hosts": [{"domain": DOMAIN}]}))
    result = run_cli("serve", config=config)
    assert result.status == 2
    assert result.stdout == ""
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith(f"stockade: configuration error: {config}: c2s.prot: unknown option")
    assert not (tmp_path / "data").exists()
