"""The `stockade` command's contract (DESIGN.md "Interfaces others rely on").

    $ stockade --config stockade.toml user add alice@example.com --password alice-pw-1
    created alice@example.com                                   (exit 0)
    $ stockade --config stockade.toml user add alice@example.com --password alice-pw-1
    stockade: alice@example.com already exists                  (exit 1, on stderr)
    $ stockade --config broken.toml user list
    stockade: configuration error: broken.toml: c2s.prot: ...   (exit 2, on stderr)

Most cases call `main()` in this process (fast); a few run the real command to show that the
process exit status and streams are the ones `main()` produces.
"""

from __future__ import annotations

import asyncio
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Callable

import pytest

from stockade.cli import main
from stockade.testing.process import CliResult, run_cli, to_toml
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client, client

GOOD_CONFIG = {"server": {"data_dir": "data"}, "hosts": [{"domain": "example.com"}, {"domain": "example.org"}]}

Stockade = Callable[..., CliResult]


def ok(*lines: str) -> CliResult:
    return CliResult(0, "".join(f"{line}\n" for line in lines), "")


def assert_refused(result: CliResult, reason: str, status: int = 1) -> None:
    """Refused: the status, nothing on stdout, and one line on stderr that gives the reason."""
    assert result.status == status, result
    assert result.stdout == "", result
    assert len(result.error_lines) == 1, result
    assert result.error_lines[0].startswith("stockade: "), result
    assert reason in result.error_lines[0], result


def run_main(*args: str, stdin: str = "") -> CliResult:
    """`main(args)` with its standard streams captured; `stdin` is what it reads when it asks."""
    out, err = io.StringIO(), io.StringIO()
    saved_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                status = main(list(args))
            except SystemExit as exc:          # argparse usage errors
                status = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stdin = saved_stdin
    return CliResult(status, out.getvalue(), err.getvalue())


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "stockade.toml"
    path.write_text(to_toml(GOOD_CONFIG))
    return path


@pytest.fixture
def stockade(config_file: Path) -> Stockade:
    """`stockade --config <a good file> ARGS...`, run in this process."""
    def run(*args: str, stdin: str = "") -> CliResult:
        return run_main("--config", str(config_file), *args, stdin=stdin)
    return run


# -- success ------------------------------------------------------------------------------------
def test_user_add_passwd_remove_and_list_confirm_in_one_line(stockade):
    assert stockade("user", "add", "alice@example.com", "--password", "alice-pw-1") == ok("created alice@example.com")
    assert stockade("user", "add", "bob@example.org", "--password", "bob-pw-22") == ok("created bob@example.org")
    assert stockade("user", "list") == ok("alice@example.com", "bob@example.org")
    assert stockade("user", "list", "--host", "example.org") == ok("bob@example.org")
    assert stockade("user", "passwd", "alice@example.com", "--password", "alice-pw-2") == \
        ok("password changed for alice@example.com")
    assert stockade("user", "remove", "alice@example.com") == ok("removed alice@example.com")
    assert stockade("user", "list") == ok("bob@example.org")


def test_user_add_confirms_the_normalised_address(stockade):
    assert stockade("user", "add", "Alice@Example.COM", "--password", "alice-pw-1") == ok("created alice@example.com")
    assert_refused(stockade("user", "add", "ALICE@example.com", "--password", "alice-pw-1"), "already exists")


def test_without_password_option_the_password_is_read_from_standard_input(stockade):
    assert stockade("user", "add", "alice@example.com", stdin="piped-pw-1\n") == ok("created alice@example.com")
    assert_refused(stockade("user", "passwd", "alice@example.com", stdin=""), "no password given")


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, reason", [
    (("user", "add", "alice@example.com", "--password", "another-pw-1"), "alice@example.com already exists"),
    (("user", "add", "bob@nowhere.net", "--password", "bob-pw-22"), "'nowhere.net' is not a domain this server serves"),
    (("user", "add", "a b@example.com", "--password", "bob-pw-22"), "'a b@example.com' is not a valid address"),
    (("user", "add", "example.com", "--password", "bob-pw-22"), "is not an account address"),
    (("user", "add", "bob@example.com/phone", "--password", "bob-pw-22"), "is not an account address"),
    (("user", "add", "bob@example.com", "--password", "short"), "the password is too short: use at least 8"),
    (("user", "passwd", "alice@example.com", "--password", "short"), "the password is too short"),
    (("user", "passwd", "nobody@example.com", "--password", "nobody-pw-1"), "nobody@example.com does not exist"),
    (("user", "remove", "nobody@example.com"), "nobody@example.com does not exist"),
    (("user", "remove", "alice@nowhere.net"), "'nowhere.net' is not a domain this server serves"),
    (("user", "list", "--host", "nowhere.net"), "'nowhere.net' is not a domain this server serves"),
])
def test_a_refused_user_command_exits_1_with_the_reason_and_changes_nothing(stockade, args, reason):
    assert stockade("user", "add", "alice@example.com", "--password", "alice-pw-1").status == 0
    assert_refused(stockade(*args), reason)
    assert stockade("user", "list") == ok("alice@example.com")


def test_an_unusable_data_folder_is_named(tmp_path):
    not_a_folder = tmp_path / "occupied"
    not_a_folder.write_text("a file, not a folder")
    path = tmp_path / "stockade.toml"
    path.write_text(to_toml({"server": {"data_dir": str(not_a_folder)}, "hosts": [{"domain": "example.com"}]}))
    result = run_main("--config", str(path), "user", "list")
    assert_refused(result, f"cannot use the data folder {not_a_folder}")
    assert "server.data_dir" in result.stderr


# -- configuration ------------------------------------------------------------------------------
BAD_CONFIGS = [
    ('[server]\ndata_dir = "data"\nbogus = 1\n[[hosts]]\ndomain = "example.com"\n', "server.bogus", "unknown option"),
    ('[c2s]\nport = 70000\n[[hosts]]\ndomain = "example.com"\n', "c2s.port", "70000 is above the maximum 65535"),
    ('[c2s]\nport = "5222"\n[[hosts]]\ndomain = "example.com"\n', "c2s.port", "expected an integer"),
    ('[frob]\n[[hosts]]\ndomain = "example.com"\n', "frob", "unknown section"),
    ('[[hosts]]\ndomain = "Example.COM"\n', "hosts[0].domain", "normalised form"),
    ('[[hosts]]\ndomain = "example.com"\n[[components]]\ndomain = "bot.example.com"\nsecret = "x"\n',
     "components[0].secret", "at least 8 characters"),
    ('[c2s\nport = 1\n', "(syntax)", "not valid TOML"),
]


@pytest.mark.parametrize("text, key, reason", BAD_CONFIGS, ids=[key for _, key, _ in BAD_CONFIGS])
@pytest.mark.parametrize("command", [("user", "list"), ("user", "add", "alice@example.com", "--password", "alice-pw-1"),
                                     ("check-config",)], ids=["list", "add", "check-config"])
def test_a_bad_configuration_file_exits_2_naming_file_key_and_reason(tmp_path, text, key, reason, command):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    result = run_main("--config", str(path), *command)
    assert_refused(result, f"stockade: configuration error: {path}: {key}: ", status=2)
    assert reason in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_missing_configuration_file_exits_2(tmp_path):
    path = tmp_path / "absent.toml"
    result = run_main("--config", str(path), "user", "list")
    assert_refused(result, f"{path}: (file): cannot read the configuration file: No such file or directory", status=2)


def test_check_config_accepts_a_good_file(config_file):
    assert run_main("--config", str(config_file), "check-config") == ok(f"{config_file}: ok (2 domain(s))")


# -- the real command ---------------------------------------------------------------------------
def test_the_installed_command_exits_with_the_same_statuses(config_file, tmp_path):
    assert run_cli("user", "add", "alice@example.com", "--password", "alice-pw-1", config=config_file) == \
        ok("created alice@example.com")
    assert_refused(run_cli("user", "add", "alice@example.com", "--password", "alice-pw-1", config=config_file),
                   "alice@example.com already exists")
    broken = tmp_path / "broken.toml"
    broken.write_text(BAD_CONFIGS[0][0])
    assert_refused(run_cli("check-config", config=broken), f"{broken}: server.bogus: unknown option", status=2)


# -- a changed password, seen by a running server ------------------------------------------------
async def test_after_passwd_the_new_password_logs_in_and_the_old_does_not(stockade, config_file):
    # main() runs its own event loop, so from this async test it runs in a worker thread.
    added = await asyncio.to_thread(stockade, "user", "add", "alice@example.com", "--password", "old-password-1")
    assert added == ok("created alice@example.com")
    with RunningServer(domains=["example.com", "example.org"], data_dir=config_file.parent / "data") as server:
        async with client(server, "alice@example.com", "old-password-1"):
            pass                                   # the old password works before the change
        # The server keeps running; the command changes the password in the same database.
        changed = await asyncio.to_thread(stockade, "user", "passwd", "alice@example.com", "--password", "new-password-2")
        assert changed == ok("password changed for alice@example.com")
        async with client(server, "alice@example.com", "new-password-2") as alice:
            assert alice.boundjid.bare == "alice@example.com"
        old = Client("alice@example.com", "old-password-1", port=server.c2s_port, cert=server.cert_path)
        try:
            assert await old.login() is False
        finally:
            await old.close()
