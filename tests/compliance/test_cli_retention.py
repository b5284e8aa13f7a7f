"""`stockade hold` and `stockade retention purge` as an operator runs them, on the database of a
server that routed messages ten days ago (a fake clock set in the past)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from stockade.testing.clock import FakeClock
from stockade.testing.process import run_cli
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from ..integration.test_upload import upload

DOMAIN = "example.com"
DAY = 86400.0


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "stockade.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n'
                    f'[[hosts]]\ndomain = "{DOMAIN}"\n[hosts.retention]\ndefault_days = 1\n')
    return path


def old_conversation(tmp_path: Path) -> None:
    clock = FakeClock(start=time.time() - 10 * DAY)
    with RunningServer(domains=[DOMAIN], clock=clock, data_dir=tmp_path / "data",
                       config={"hosts": [{"domain": DOMAIN, "retention": {"default_days": 1}}]}) as srv:
        srv.add_user(f"alice@{DOMAIN}", "alice-pw-1")
        srv.add_user(f"bob@{DOMAIN}", "bob-pw-22")

        async def talk() -> None:
            async with client(srv, f"alice@{DOMAIN}", "alice-pw-1") as alice, \
                    client(srv, f"bob@{DOMAIN}", "bob-pw-22") as bob:
                alice.send_message(mto=f"bob@{DOMAIN}", mbody="ten days ago", mtype="chat")
                assert (await bob.next_message())["body"] == "ten days ago"
                await upload(srv, alice, "alice.txt", b"alice's file")
                await upload(srv, bob, "bob.txt", b"bob's file")
        asyncio.run(talk())


def purge_line(result) -> dict[str, int]:
    assert result.status == 0, result
    return {store: int(n) for n, store in re.findall(r"(\d+) (journal|mam|offline|muc|files)", result.stdout)}


def test_holds_and_purges_from_the_command_line(tmp_path):
    config = write_config(tmp_path)
    old_conversation(tmp_path)
    uploads = tmp_path / "data" / "uploads"
    assert len(list(uploads.iterdir())) == 2
    in_flight = uploads / "somebody-uploading-now.part"      # a running server's upload in progress
    in_flight.write_bytes(b"half a file")

    added = run_cli("hold", "add", f"bob@{DOMAIN}", "--reason", "matter 2025-17", config=config)
    assert added.status == 0, added
    hold_id = re.search(r"hold (\w+) on user bob", added.stdout).group(1)
    listed = run_cli("hold", "list", config=config)
    assert hold_id in listed.stdout and "matter 2025-17" in listed.stdout and "by cli" in listed.stdout
    again = run_cli("hold", "add", "bob", "--reason", "twice", config=config)
    assert again.status == 1 and "already held" in again.stderr

    dry = purge_line(run_cli("retention", "purge", "--dry-run", config=config))
    assert dry["mam"] == 1 and dry["files"] == 1                  # alice's copy and file; bob is held
    assert len(list(uploads.iterdir())) == 3
    done = purge_line(run_cli("retention", "purge", config=config))
    assert done["mam"] == 1 and done["files"] == 1
    assert len(list(uploads.iterdir())) == 2 and in_flight.exists()        # bob's file and the upload in progress
    after = purge_line(run_cli("retention", "purge", "--dry-run", config=config))
    assert after["mam"] == 0 and after["journal"] == 0          # the journal record names bob: held

    verified = run_cli("archive", "verify", config=config)
    assert verified.status == 0, verified

    released = run_cli("hold", "release", hold_id, config=config)
    assert released.status == 0 and "released" in released.stdout
    freed = purge_line(run_cli("retention", "purge", config=config))
    assert freed["mam"] == 1 and freed["journal"] >= 1 and freed["files"] == 1
    assert [p.name for p in uploads.iterdir()] == [in_flight.name]      # never touched
    verified = run_cli("archive", "verify", config=config)
    assert verified.status == 0, verified

    gone = run_cli("hold", "release", hold_id, config=config)
    assert gone.status == 1 and "there is no hold" in gone.stderr
    no_group = run_cli("hold", "add", "desk", "--group", "--reason", "x", config=config)
    assert no_group.status == 1 and "there is no group 'desk'" in no_group.stderr
    audit = run_cli("audit", "list", "--host", DOMAIN, "--action", "retention.purge", config=config)
    assert audit.stdout.count("retention.purge") >= 4 and " cli " in audit.stdout
