"""Encryption at rest: what a client says and uploads is nowhere on disk in plain text, and still
reads back through the server, across a master key rotation and a restart.

    alice -> bob (online, archived by MAM), alice -> carol (offline), alice uploads notes.txt
    the database file, its -wal file and the upload folder hold none of those words
    `stockade keys rotate` while the server runs; restart; bob's archive, carol's offline
    message and the file are all still there, and the old master key is gone from the key file
    a damaged or missing key file stops `stockade serve` with one line naming the file
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from stockade.storage.keyfile import read_key_file
from stockade.testing.process import ServerProcess, StartError, run_cli, to_toml
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_mam import body, mam_client, query_archive
from .test_upload import fetch, put, request_slot

LIVE = "SECRET-LIVE-7f3a1c: the merger closes friday"
OFFLINE = "SECRET-OFFLINE-9b2d4e: call me about the audit"
AFTER = "SECRET-AFTER-ROTATION-51ce0a"
FILE_SECRET = b"SECRET-FILE-c0ffee"
# Larger than a few sealed chunks (64 KiB), the secret at the start, across and at the end.
FILE_TEXT = FILE_SECRET + b"\n" + b"".join(b"line %06d of the quarterly numbers\n" % n for n in range(6000)) \
    + FILE_SECRET + b"\n"


def raw_files(data_dir: Path) -> dict[Path, bytes]:
    """Every file of the database (with its -wal and -shm) and of the upload folder."""
    files = {p: p.read_bytes() for p in data_dir.glob("stockade.db*")}
    uploads = data_dir / "uploads"
    if uploads.is_dir():
        files.update({p: p.read_bytes() for p in uploads.rglob("*") if p.is_file()})
    return files


def assert_nowhere_in_plain_text(data_dir: Path, *secrets: bytes) -> None:
    files = raw_files(data_dir)
    assert any(p.name == "stockade.db" for p in files) and any(p.parent.name == "uploads" for p in files)
    for path, content in files.items():
        for secret in secrets:
            assert secret not in content, f"{secret!r} is readable in {path}"


def cli_config(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "cli.toml"
    path.write_text(to_toml({"server": {"data_dir": str(data_dir)}, "hosts": [{"domain": DOMAIN}]}))
    return path


def on_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


async def archived_bodies(server: Any, user: str) -> list[str]:
    async with mam_client(server, user) as c:
        reply, results = await query_archive(c)
        assert reply["type"] == "result"
        return [body(r) for r in results]


async def test_messages_and_files_are_sealed_on_disk_and_survive_rotation_and_restart(tmp_path):
    data_dir = tmp_path / "data"
    secrets = (LIVE.encode(), OFFLINE.encode(), FILE_SECRET, b"quarterly numbers")
    with RunningServer([DOMAIN], data_dir=data_dir) as srv:
        for user in ("alice", "bob", "carol"):
            srv.add_user(jid(user), USERS[user])
        async with mam_client(srv, "alice") as alice, mam_client(srv, "bob") as bob:
            alice.send_message(mto=jid("bob"), mbody=LIVE, mtype="chat")
            assert (await bob.next_message())["body"] == LIVE
            alice.send_message(mto=jid("carol"), mbody=OFFLINE, mtype="chat")      # carol is offline
            await alice.roundtrip()
            put_url, get_url = await request_slot(alice, "notes.txt", len(FILE_TEXT), "text/plain")
            assert (await put(srv, put_url, FILE_TEXT, "text/plain")).status == 201
            got = await fetch(srv, "GET", get_url)
            assert got.status == 200 and got.body == FILE_TEXT
            assert got.headers["content-length"] == str(len(FILE_TEXT))
        srv.call(srv.server.storage.flush())
        assert_nowhere_in_plain_text(data_dir, *secrets)
        assert await archived_bodies(srv, "bob") == [LIVE]

        key_file = data_dir / "keys" / "master.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        old_id = read_key_file(key_file).current_id
        config = cli_config(tmp_path, data_dir)
        # Rotation while the server runs.
        rotated = run_cli("keys", "rotate", config=config)
        assert rotated.status == 0, rotated
        new_id = read_key_file(key_file).current_id
        assert new_id != old_id and read_key_file(key_file).ids == [new_id]
        assert old_id not in key_file.read_text() and f"rotated: master key {new_id} replaces {old_id}" in rotated.stdout
        status = run_cli("keys", "status", config=config)
        assert status.status == 0 and f"master key {new_id} (current)" in status.stdout
        assert old_id not in status.stdout and f"wrapped by {new_id}" in status.stdout
        # The running server goes on sealing and reading.
        async with mam_client(srv, "alice") as alice, mam_client(srv, "bob") as bob:
            alice.send_message(mto=jid("bob"), mbody=AFTER, mtype="chat")
            assert (await bob.next_message())["body"] == AFTER
        srv.call(srv.server.storage.flush())
        assert await archived_bodies(srv, "bob") == [LIVE, AFTER]

    with RunningServer([DOMAIN], data_dir=data_dir) as srv:
        assert await archived_bodies(srv, "bob") == [LIVE, AFTER]
        async with client(srv, jid("carol"), USERS["carol"]) as carol:
            assert (await carol.next_message())["body"] == OFFLINE
        got = await fetch(srv, "GET", on_port(get_url, srv.https_port))
        assert got.status == 200 and got.body == FILE_TEXT
        srv.call(srv.server.storage.flush())
        assert_nowhere_in_plain_text(data_dir, *secrets, AFTER.encode())
    assert read_key_file(key_file).ids == [new_id]


def started_once(tmp_path: Path) -> ServerProcess:
    """A server process that ran once (its key file and encrypted data exist), now stopped."""
    proc = ServerProcess(tmp_path, domains=[DOMAIN], config={"http": {"enabled": False}})
    proc.start()
    assert proc.cli("user", "add", jid("alice"), "--password", USERS["alice"]).status == 0
    assert proc.stop() == 0
    return proc


def refused_start(proc: ServerProcess) -> str:
    with pytest.raises(StartError) as error:
        proc.start()
    assert error.value.status == 1
    return error.value.stderr


def test_a_damaged_key_file_stops_startup_naming_the_file(tmp_path):
    proc = started_once(tmp_path)
    key_file = proc.data_dir / "keys" / "master.key"
    line = key_file.read_text().splitlines()[-1]
    key_file.write_text(line[:-6] + "AAAAA=\n")                  # a changed character
    stderr = refused_start(proc)
    assert f"stockade: cannot start: the master key file {key_file} is damaged" in stderr
    assert "restore it from your backup" in stderr
    # A key file holding another (well-formed) key: cannot unwrap the data keys.
    other = tmp_path / "other"
    ServerProcess(other, domains=[DOMAIN], config={"http": {"enabled": False}}).start().stop()
    key_file.write_bytes((other / "data" / "keys" / "master.key").read_bytes())
    stderr = refused_start(proc)
    assert f"the master key file {key_file} does not hold master key" in stderr


def test_a_missing_key_file_beside_encrypted_data_stops_startup(tmp_path):
    proc = started_once(tmp_path)
    key_file = proc.data_dir / "keys" / "master.key"
    key_file.unlink()
    stderr = refused_start(proc)
    assert f"stockade: cannot start: the master key file {key_file} is missing, but the database holds " \
           "data encrypted" in stderr
    assert not key_file.exists()                   # no new key was made beside the old data
    # The CLI refuses alike instead of writing with a new key.
    result = run_cli("user", "add", jid("bob"), "--password", USERS["bob"], config=proc.config_path)
    assert result.status == 1 and "is missing, but the database holds data encrypted" in result.stderr
    assert not key_file.exists()
