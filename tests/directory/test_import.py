"""Bulk import (`stockade import`): accounts with passwords or migrated SCRAM keys, and rosters."""

from __future__ import annotations

import asyncio
import base64
import json

from stockade.cli import main
from stockade.protocol.sasl.scram import derive
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

DOMAIN = "example.com"


def config_file(tmp_path) -> str:
    path = tmp_path / "stockade.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[[hosts]]\ndomain = "{DOMAIN}"\n')
    return str(path)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_imported_accounts_log_in_and_see_their_rosters(tmp_path, capsys):
    migrated = derive("kept-from-old-server", "sha1")
    data = {
        "users": [
            {"jid": "alice@example.com", "password": "alice-imported"},
            {"jid": "bob@example.com", "scram": {"sha1": {
                "salt": b64(migrated.salt), "iterations": migrated.iterations,
                "stored_key": b64(migrated.stored_key), "server_key": b64(migrated.server_key)}}},
        ],
        "rosters": [{"owner": "alice@example.com", "contact": "bob@example.com", "name": "Bob",
                     "groups": ["Team"], "subscription": "both"}],
    }
    (tmp_path / "users.json").write_text(json.dumps(data))
    rc = await asyncio.to_thread(main, ["--config", config_file(tmp_path), "import", str(tmp_path / "users.json")])
    assert rc == 0
    assert "imported 2 account(s), 2 roster item(s)" in capsys.readouterr().out
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        # bob's keys came from the old server: he logs in with his old password, over SCRAM-SHA-1
        async with client(srv, "alice@example.com", "alice-imported") as alice, \
                   client(srv, "bob@example.com", "kept-from-old-server", mechanism="SCRAM-SHA-1") as bob:
            assert alice.client_roster["bob@example.com"]["subscription"] == "both"
            assert alice.client_roster["bob@example.com"]["name"] == "Bob"
            assert bob.client_roster["alice@example.com"]["subscription"] == "both"
            bob.send_presence(pstatus="imported and online")
            seen = await alice.next_presence("bob@example.com", match=lambda p: p["status"] == "imported and online")
            assert seen is not None


async def test_csv_import_and_a_second_import_leaves_existing_accounts_alone(tmp_path, capsys):
    (tmp_path / "users.csv").write_text("jid,password\ncarol@example.com,carol-password\ndave@example.com,dave-password\n")
    cfg = config_file(tmp_path)
    assert await asyncio.to_thread(main, ["--config", cfg, "import", str(tmp_path / "users.csv")]) == 0
    (tmp_path / "again.csv").write_text("jid,password\ncarol@example.com,other-password\nerin@example.com,erin-password\n")
    assert await asyncio.to_thread(main, ["--config", cfg, "import", str(tmp_path / "again.csv")]) == 0
    out = capsys.readouterr().out
    assert "imported 1 account(s)" in out and "1 account(s) already existed" in out
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        async with client(srv, "carol@example.com", "carol-password"):      # her first password stands
            pass


async def test_a_bad_file_imports_nothing_and_names_the_problem(tmp_path, capsys):
    cfg = config_file(tmp_path)
    cases = [
        ({"users": [{"jid": "ok@example.com", "password": "long-enough"}, {"jid": "a b@example.com", "password": "x" * 10}]},
         "users[1].jid"),
        ({"users": [{"jid": "x@elsewhere.org", "password": "long-enough"}]}, "not a domain this server serves"),
        ({"users": [{"jid": "x@example.com", "password": "long-enough", "admin": True}]}, "unknown field"),
        ({"users": [{"jid": "x@example.com", "password": "short"}]}, "at least 8 characters"),
        ({"users": [{"jid": "x@example.com", "password": "Password123!"}]}, "users[0].password"),   # too common
        ({"rosters": [{"owner": "x@example.com", "contact": "y@example.com", "subscription": "maybe"}]}, "subscription"),
        ({"groups": []}, "expected an object with 'users'"),
    ]
    for data, reason in cases:
        (tmp_path / "bad.json").write_text(json.dumps(data))
        assert await asyncio.to_thread(main, ["--config", cfg, "import", str(tmp_path / "bad.json")]) == 1
        err = capsys.readouterr().err
        assert reason in err and err.count("\n") == 1
    assert await asyncio.to_thread(main, ["--config", cfg, "user", "list"]) == 0
    assert capsys.readouterr().out == ""                                    # nothing was imported
