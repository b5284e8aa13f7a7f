"""`stockade keys status | rotate` (cli_keys.py): what they print, and each refusal in one line.

    $ stockade keys rotate            (before the first start)
    stockade: there is no master key file .../keys/master.key yet: `stockade serve` makes it ...
    $ stockade keys status
    master key 1a2b3c4d (current)  in the master key file .../keys/master.key
    data key 1  created 2025-01-31 10:15:00 UTC  wrapped by 1a2b3c4d
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from stockade.storage.keyfile import read_key_file
from stockade.testing.process import to_toml

from .test_cli import assert_refused, run_main

DOMAIN = "example.com"


def config_file(tmp_path: Path, **encryption: object) -> Path:
    path = tmp_path / "stockade.toml"
    doc: dict = {"server": {"data_dir": "data"}, "hosts": [{"domain": DOMAIN}]}
    if encryption:
        doc["encryption"] = encryption
    path.write_text(to_toml(doc))
    return path


def stockade(config: Path, *args: str):
    return run_main("--config", str(config), *args)


def test_rotate_before_any_key_exists_says_when_the_key_is_made(tmp_path):
    result = stockade(config_file(tmp_path), "keys", "rotate")
    assert_refused(result, f"there is no master key file {tmp_path / 'data' / 'keys' / 'master.key'} yet: "
                           "`stockade serve` makes it at its first start")


def test_status_lists_master_and_data_keys_and_rotate_replaces_the_master_key(tmp_path):
    config = config_file(tmp_path)
    assert stockade(config, "user", "add", f"alice@{DOMAIN}", "--password", "alice-pw-1").status == 0
    key_file = tmp_path / "data" / "keys" / "master.key"
    old = read_key_file(key_file).current_id
    status = stockade(config, "keys", "status")
    assert status.status == 0 and status.stderr == ""
    assert status.lines[0] == f"master key {old} (current)  in the master key file {key_file}"
    assert status.lines[1].startswith("data key 1  created ") and status.lines[1].endswith(f"wrapped by {old}")
    rotated = stockade(config, "keys", "rotate")
    assert rotated.status == 0, rotated
    new = read_key_file(key_file).current_id
    assert rotated.stdout.startswith(f"rotated: master key {new} replaces {old} in {key_file}; 1 data key(s) rewrapped")
    status = stockade(config, "keys", "status")
    assert [line.split("wrapped by ")[1] for line in status.lines[1:]] == [new, new]
    audit = stockade(config, "audit", "list", "--action", "keys.rotate")
    assert audit.status == 0 and f"keys.rotate {new}" in audit.stdout
    # Everything still opens with the rotated file.
    assert stockade(config, "user", "list").lines == [f"alice@{DOMAIN}"]


def test_rotate_refuses_a_key_held_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STOCKADE_TEST_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    config = config_file(tmp_path, master_key_env="STOCKADE_TEST_MASTER_KEY")
    assert_refused(stockade(config, "keys", "rotate"),
                   "the master key is in the environment variable STOCKADE_TEST_MASTER_KEY")
    assert stockade(config, "user", "add", f"alice@{DOMAIN}", "--password", "alice-pw-1").status == 0
    status = stockade(config, "keys", "status")
    assert status.status == 0 and "(current)  in the environment variable STOCKADE_TEST_MASTER_KEY" in status.stdout
    monkeypatch.delenv("STOCKADE_TEST_MASTER_KEY")
    assert_refused(stockade(config, "keys", "status"), "STOCKADE_TEST_MASTER_KEY (encryption.master_key_env")


def test_rotate_and_status_refuse_when_encryption_is_off(tmp_path):
    config = config_file(tmp_path, enabled=False)
    for action in ("rotate", "status"):
        assert_refused(stockade(config, "keys", action), "encryption at rest is off (encryption.enabled = false")


@pytest.mark.parametrize("damage", ["garbage\n", ""])
def test_a_damaged_key_file_is_named_by_every_command(tmp_path, damage):
    config = config_file(tmp_path)
    assert stockade(config, "user", "add", f"alice@{DOMAIN}", "--password", "alice-pw-1").status == 0
    key_file = tmp_path / "data" / "keys" / "master.key"
    key_file.write_text(damage)
    for args in (("keys", "rotate"), ("keys", "status"), ("user", "list")):
        assert_refused(stockade(config, *args), f"the master key file {key_file}")


def test_rotate_refuses_a_key_file_that_does_not_open_the_data_keys(tmp_path):
    config = config_file(tmp_path)
    assert stockade(config, "user", "add", f"alice@{DOMAIN}", "--password", "alice-pw-1").status == 0
    key_file = tmp_path / "data" / "keys" / "master.key"
    before = key_file.read_text()
    from stockade.storage.keyfile import write_key_file
    write_key_file(key_file, [os.urandom(32)])
    assert_refused(stockade(config, "keys", "rotate"), "does not hold master key")
    key_file.write_text(before)
    assert stockade(config, "keys", "rotate").status == 0
