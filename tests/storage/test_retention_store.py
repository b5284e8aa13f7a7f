"""Retention purges on SQLite and PostgreSQL: archive items per owner cutoff, journal records
emptied in place (the chain still verifies)."""

from __future__ import annotations

from stockade.compliance.journal import prepare
from stockade.compliance.journal_verify import verify_journal
from stockade.storage import Storage

NOW = 1_700_000_000.0


async def test_archive_items_go_per_owner_cutoff_and_a_dry_run_only_counts(storage: Storage) -> None:
    mam = storage.archive("mam")
    for user in ("alice", "bob"):
        for n in range(4):
            await mam.append("example.com", user, f"<message>{n}</message>", when=NOW + n)
    await storage.archive("offline").append("example.com", "alice", "<message/>", when=NOW)
    retention = storage.retention()
    owners = {o.username: o for o in await retention.archive_owners("mam")}
    assert set(owners) == {"alice", "bob"}
    cutoffs = {owners["alice"]: NOW + 3, owners["bob"]: NOW + 1}
    assert await retention.purge_archive(cutoffs, dry_run=True) == 4
    assert await mam.count("example.com", "alice") == 4
    assert await retention.purge_archive(cutoffs) == 4
    assert [i.when for i in await mam.query("example.com", "alice")] == [NOW + 3]
    assert [i.when for i in await mam.query("example.com", "bob")] == [NOW + 1, NOW + 2, NOW + 3]
    assert await storage.archive("offline").count("example.com", "alice") == 1     # another store


async def test_journal_records_are_emptied_not_deleted_and_the_chain_verifies(storage: Storage) -> None:
    retention = storage.retention()
    assert await retention.has_journal()
    entries = [(NOW + n, "example.com", "chat", "alice@example.com/phone", f"user{n}@example.com", "chat",
                f"<message><body>secret {n}</body></message>".encode(), None) for n in range(5)]
    await storage.journal.append_batch(entries, prepare, None, 1000, None, NOW)
    candidates = await retention.journal_candidates("example.com", NOW + 3)
    assert [c.id for c in candidates] == [1, 2, 3]
    assert candidates[0].participants == "alice@example.com user0@example.com"
    assert await retention.journal_candidates("other.org", NOW + 3) == []
    assert [c.id for c in await retention.journal_candidates("example.com", NOW + 3, after_id=1, limit=1)] == [2]
    assert await retention.purge_journal([1, 3], NOW + 100) == 2
    assert await retention.purge_journal([1], NOW + 200) == 0          # purged already: left as it is
    rows = await storage.journal.rows(0, 10)
    assert [(r.purged, r.payload is None, r.participants is None) for r in rows[:3]] == [
        (NOW + 100, True, True), (None, False, False), (NOW + 100, True, True)]
    assert all(r.digest for r in rows)
    assert [c.id for c in await retention.journal_candidates("example.com", NOW + 3)] == [2]
    result = await verify_journal(storage.journal, None)
    assert result.is_intact and result.count == 5 and result.purged == 2
