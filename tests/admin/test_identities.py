"""Admin identities and tokens: argon2 password hashes, TOTP, tokens stored only as SHA-256 and
scoped within their creator's permissions; the `stockade admin` command on the server's database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from pathlib import Path

import pyotp
import pytest

from stockade.admin.identities import (ACCOUNTS_STORE, TOKENS_STORE, AdminDirectory, AdminError, TokenRejected,
                                       principal_of)
from stockade.admin.roles import ROLE_PERMISSIONS
from stockade.compliance import AuditLog
from stockade.storage import Storage
from stockade.testing.clock import FakeClock
from stockade.testing.process import stockade_command, to_toml
from stockade.testing.server import RunningServer

from .conftest import A, AdminApi

PASSWORD = "a-long-admin-password"


@pytest.fixture
async def directory(tmp_path):
    storage = await Storage.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = FakeClock(1_700_000_000.0)
    yield AdminDirectory(storage, clock, {A, "other.org"}), storage, clock
    await storage.close()


async def test_passwords_are_stored_as_argon2id_hashes(directory):
    admins, storage, _ = directory
    account, uri = await admins.create("ops", "operator", [], PASSWORD)
    stored = json.dumps(await storage.map(ACCOUNTS_STORE).get("", "", "ops"))
    assert PASSWORD not in stored and account.password_hash.startswith("$argon2id$")
    assert await admins.check_password("ops", PASSWORD) == account
    assert await admins.check_password("ops", PASSWORD + "x") is None
    assert await admins.check_password("nobody", PASSWORD) is None
    assert uri == pyotp.TOTP(account.totp_secret).provisioning_uri(name="ops", issuer_name="Stockade")
    assert admins.check_totp(account, pyotp.TOTP(account.totp_secret).now())
    assert not admins.check_totp(account, "000000" if pyotp.TOTP(account.totp_secret).now() != "000000" else "111111")


@pytest.mark.parametrize("name, role, hosts, password, reason", [
    ("Bad Name", "operator", [], PASSWORD, "not a valid admin name"),
    ("x", "king", [A], PASSWORD, "unknown role 'king'"),
    ("x", "operator", [A], PASSWORD, "an operator manages every host"),
    ("x", "helpdesk", [], PASSWORD, "needs at least one host"),
    ("x", "helpdesk", ["elsewhere.net"], PASSWORD, "elsewhere.net is not a host this server serves"),
    ("x", "auditor", [A], "short", "at least 12 characters"),
])
async def test_bad_admins_are_refused_with_the_reason(directory, name, role, hosts, password, reason):
    admins, _, _ = directory
    with pytest.raises(AdminError, match=reason):
        await admins.create(name, role, hosts, password)


async def test_tokens_are_stored_hashed_scoped_and_expire(directory):
    admins, storage, clock = directory
    account, _ = await admins.create("desk", "helpdesk", [A], PASSWORD, with_totp=False)
    creator = principal_of(account)
    assert creator.permissions == ROLE_PERMISSIONS["helpdesk"]
    with pytest.raises(AdminError, match="scopes you do not hold yourself: users.create"):
        await admins.create_token(creator, ["users.create"], 1)
    token, info = await admins.create_token(creator, ["users.read"], 2)
    stored = await storage.map(TOKENS_STORE).get_all("", "")
    assert list(stored) == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in json.dumps(stored)
    who = await admins.authenticate_token(token)
    assert who.may("users.read", A) and not who.may("users.read", "other.org")
    assert not who.may("sessions.read", A)                         # the role has it, the token does not
    clock.advance(2 * 86400)
    with pytest.raises(TokenRejected, match="expired"):
        await admins.authenticate_token(token)
    assert await admins.revoke_token("desk", info.id)
    with pytest.raises(TokenRejected, match="unknown or revoked"):
        await admins.authenticate_token(token)


async def test_removing_an_admin_ends_its_tokens(directory):
    admins, _, _ = directory
    account, _ = await admins.create("aud", "auditor", [A], PASSWORD)
    token, _ = await admins.create_token(principal_of(account), ["audit.read"], 1)
    await admins.remove("aud")
    with pytest.raises(TokenRejected):
        await admins.authenticate_token(token)


def admin_cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*stockade_command(), "--config", str(config), "admin", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_the_command_line_creates_admins_and_tokens_the_running_server_accepts(tmp_path):
    data = tmp_path / "data"
    with RunningServer(domains=[A], data_dir=data) as srv:
        config = tmp_path / "stockade.toml"
        config.write_text(to_toml({"server": {"data_dir": str(data)}, "hosts": [{"domain": A}]}))
        made = admin_cli(config, "create", "ops", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
        assert made.stdout.splitlines()[0] == "created admin ops (operator, every host)"
        assert made.stdout.splitlines()[-1].startswith("otpauth://totp/Stockade:ops?secret=")
        refused = admin_cli(config, "create", "desk", "--role", "helpdesk", "--password-stdin", stdin=PASSWORD + "\n")
        assert refused.returncode == 1 and "needs at least one host" in refused.stderr
        listed = admin_cli(config, "list")
        assert listed.stdout.split() == ["ops", "operator", "TOTP", "every", "host"]
        token = admin_cli(config, "token", "ops", "--scope", "users.read", "--expires", "1")
        assert token.returncode == 0 and token.stdout.startswith("stk_") and "shown once" in token.stderr
        api = AdminApi(srv, token.stdout.strip())
        assert api("GET", f"/hosts/{A}/users").status == 200
        assert api("GET", f"/hosts/{A}/sessions").status == 403


def test_the_command_line_resets_a_forgotten_password_and_a_lost_authenticator(tmp_path):
    """ops forgot the console password and lost the phone: the operator at the machine sets a
    new password and a new TOTP secret; the old password and the old codes stop working."""
    data = tmp_path / "data"
    config = tmp_path / "stockade.toml"
    config.write_text(to_toml({"server": {"data_dir": str(data)}, "hosts": [{"domain": A}]}))
    made = admin_cli(config, "create", "ops", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    old_secret = made.stdout.splitlines()[-1].split("secret=")[1].split("&")[0]
    weak = admin_cli(config, "passwd", "ops", "--password-stdin", stdin="short\n")
    assert weak.returncode == 1 and "password" in weak.stderr
    changed = admin_cli(config, "passwd", "ops", "--password-stdin", stdin="another-long-admin-password\n")
    assert changed.returncode == 0 and "password changed for admin ops" in changed.stdout, changed.stderr
    reset = admin_cli(config, "reset-totp", "ops")
    assert reset.returncode == 0, reset.stderr
    new_secret = reset.stdout.splitlines()[-1].split("secret=")[1].split("&")[0]
    assert new_secret != old_secret
    assert admin_cli(config, "passwd", "nobody", "--password-stdin", stdin=PASSWORD + "\n").returncode == 1

    async def check() -> None:
        from stockade.config import config_from_dict
        from stockade.storage.keyfile import load_keyring
        storage = await Storage.open(f"sqlite:///{data / 'stockade.db'}",
                                     keyring=load_keyring(config_from_dict({"hosts": [{"domain": A}]}, "(test)", tmp_path), data))
        try:
            directory = AdminDirectory(storage, FakeClock(), {A})
            assert await directory.check_password("ops", PASSWORD) is None
            account = await directory.check_password("ops", "another-long-admin-password")
            assert account is not None
            assert directory.check_totp(account, pyotp.TOTP(new_secret).now())
            old_code, new_code = pyotp.TOTP(old_secret).now(), pyotp.TOTP(new_secret).now()
            assert old_code == new_code or not directory.check_totp(account, old_code)
            entries = await AuditLog(storage.audit, FakeClock()).entries(limit=10)
            assert {"admin.password", "admin.totp.reset"} <= {e["action"] for e in entries}
        finally:
            await storage.close()
    asyncio.run(check())
