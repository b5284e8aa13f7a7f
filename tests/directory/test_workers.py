"""The company directory with two worker processes ([server] workers = 2) and a real slapd.

Worker 0 syncs; the other worker reads what a sync changed as soon as worker 0 tells it, and
brings the rosters of its own accounts in line (modules/shared_roster.py): a roster is only
written by its account's worker, which caches it. alice and carol live in worker 1, bob in
worker 0 (core/partition.py).
"""

from __future__ import annotations

from stockade.core.partition import Partition
from stockade.testing.process import ServerProcess

from .conftest import DOMAIN, directory_settings, jid
from .test_shared_roster import login, pushed, roster_items


def home(user: str) -> int:
    return Partition(0, 2, lambda worker, stanza: None, set()).home(DOMAIN, user)


async def test_a_sync_in_worker_0_reaches_the_accounts_of_every_worker(ldap, tmp_path):
    assert home("alice") == home("carol") == 1 and home("bob") == 0
    # Worker 0 syncs every 2 s; the workers' own check for changes comes only every hour, so
    # what reaches worker 1 here is worker 0's word after its sync.
    proc = ServerProcess(tmp_path, [DOMAIN], config={
        "server": {"workers": 2, "account_check_interval": 3600.0}, "http": {"enabled": False},
        "hosts": [{"domain": DOMAIN, "directory": directory_settings(ldap, sync_interval=2.0)}]})
    assert proc.cli("directory", "sync").status == 0          # the accounts, before the start
    await proc.astart()
    try:
        async with login(proc, "alice") as alice, login(proc, "bob") as bob:      # LDAP binds in both
            assert list(await roster_items(alice)) == [jid("bob")]                  # the shared group
            assert list(await roster_items(bob)) == [jid("alice")]
            ldap.add_member("staff", "carol")
            for member in (alice, bob):       # pushed by each member's own worker
                push = await member.next_of(member.roster_pushes, lambda p: pushed(p, jid("carol")))
                assert push["roster"]["items"][jid("carol")]["subscription"] == "both"
            ldap.set_attribute(ldap.user_dn("alice"), "employeeType", ["disabled"])
            error = await alice.next_of(alice.stream_errors)       # her session is in worker 1
            assert error["condition"] == "not-authorized"
            assert "disabled in the company directory" in error["text"]
            await bob.roundtrip()
    finally:
        proc.stop()
