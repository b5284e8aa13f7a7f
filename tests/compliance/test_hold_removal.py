"""A legal hold keeps an account's messages and files: removing the account (which deletes its
message archive, offline messages and uploads) is refused until the hold is released, from the
command line and from the admin API alike.

    operator: stockade hold add bob@example.com --reason "matter 2026-04"
    operator: stockade user remove bob@example.com   -> refused: under legal hold
    operator: stockade hold release <id>; stockade user remove bob@example.com -> removed
"""

from __future__ import annotations

import re
from pathlib import Path

from stockade.testing.process import run_cli
from stockade.testing.server import RunningServer

from ..admin.conftest import AdminApi, make_admins, token_for

DOMAIN = "example.com"


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "stockade.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n[[hosts]]\ndomain = "{DOMAIN}"\n')
    return path


def test_the_command_line_refuses_to_remove_a_held_account_until_the_hold_is_released(tmp_path):
    config = write_config(tmp_path)
    for user in ("bob", "carol"):
        assert run_cli("user", "add", f"{user}@{DOMAIN}", "--password", f"{user}-Passw0rd-long", config=config).status == 0
    added = run_cli("hold", "add", f"bob@{DOMAIN}", "--reason", "matter 2026-04", config=config)
    assert added.status == 0, added
    refused = run_cli("user", "remove", f"bob@{DOMAIN}", config=config)
    assert refused.status != 0 and "legal hold" in refused.stderr and "release the hold" in refused.stderr.lower()
    assert f"bob@{DOMAIN}" in run_cli("user", "list", config=config).stdout
    assert run_cli("user", "remove", f"carol@{DOMAIN}", config=config).status == 0       # not held
    listed = run_cli("hold", "list", "--host", DOMAIN, config=config)
    hold_id = re.search(r"^(\S+)", listed.stdout.strip().splitlines()[-1]).group(1)
    assert run_cli("hold", "release", hold_id, "--host", DOMAIN, config=config).status == 0, listed
    removed = run_cli("user", "remove", f"bob@{DOMAIN}", config=config)
    assert removed.status == 0, removed


def test_the_admin_api_answers_409_for_a_held_account():
    with RunningServer([DOMAIN]) as srv:
        srv.add_user(f"bob@{DOMAIN}", "bob-Passw0rd-long")
        make_admins(srv)
        ops = AdminApi(srv, token_for(srv, "ops"))
        srv.call(srv.server.holds.create(DOMAIN, "user", "bob", reason="matter 2026-04", actor="admin:comp"))
        refused = ops("DELETE", f"/hosts/{DOMAIN}/users/bob")
        assert refused.status == 409 and "legal hold" in refused.error
        assert srv.call(srv.server.accounts.exists(DOMAIN, "bob"))
        [hold] = srv.call(srv.server.holds.list(DOMAIN))
        srv.call(srv.server.holds.release(DOMAIN, hold.id, actor="admin:comp"))
        assert ops("DELETE", f"/hosts/{DOMAIN}/users/bob").status == 200
        assert not srv.call(srv.server.accounts.exists(DOMAIN, "bob"))
