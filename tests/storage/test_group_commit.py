"""Group commit: concurrent archive appends share transactions, and an ack means committed."""

from __future__ import annotations

import asyncio

import pytest

from stockade.storage import Storage, StorageError
from stockade.storage.archive import MAX_BATCH

HOST = "example.com"
USERS = ["alice", "bob", "carol", "dave", "erin"]


async def test_500_concurrent_appends_all_commit_with_ids_in_append_order(
        storage: Storage) -> None:
    archive = storage.archive("mam")
    calls = [(USERS[n % len(USERS)], f"<message id='{n}'/>") for n in range(500)]

    items = await asyncio.gather(*(archive.append(HOST, user, value) for user, value in calls))

    assert len({item.id for item in items}) == 500
    for user in USERS:
        mine = [item for (who, _), item in zip(calls, items) if who == user]
        assert [i.id for i in mine] == sorted(i.id for i in mine), f"{user}: ids out of append order"
        assert await archive.query(HOST, user) == mine
    # Everything was queued before the writer first ran: one transaction, not 500.
    assert storage.archive_batches_committed == 1


async def test_appends_queued_in_one_loop_turn_share_one_transaction(storage: Storage) -> None:
    offline = storage.archive("offline")
    futures = [offline.append_nowait(HOST, "alice", f"<message id='{n}'/>") for n in range(200)]
    assert not any(f.done() for f in futures)             # nothing is acknowledged before commit

    items = await asyncio.gather(*futures)

    assert storage.archive_batches_committed == 1
    assert [i.value for i in items] == [f"<message id='{n}'/>" for n in range(200)]
    assert [i.id for i in items] == sorted(i.id for i in items)


async def test_a_batch_holds_at_most_max_batch_items(storage: Storage) -> None:
    archive = storage.archive("mam")
    futures = [archive.append_nowait(HOST, "alice", "<message/>") for _ in range(MAX_BATCH + 10)]

    await asyncio.gather(*futures)

    assert storage.archive_batches_committed == 2
    assert await archive.count(HOST, "alice") == MAX_BATCH + 10


async def test_appends_made_while_a_batch_commits_form_the_next_batch(storage: Storage) -> None:
    archive = storage.archive("mam")
    first = [archive.append_nowait(HOST, "alice", "<message/>") for _ in range(3)]
    await asyncio.sleep(0)          # let the writer take the first batch: it is now committing
    second = [archive.append_nowait(HOST, "alice", "<message/>") for _ in range(3)]

    await asyncio.gather(*first, *second)

    assert storage.archive_batches_committed == 2
    assert max(f.result().id for f in first) < min(f.result().id for f in second)


async def test_flush_waits_for_everything_queued(storage: Storage) -> None:
    archive = storage.archive("mam")
    futures = [archive.append_nowait(HOST, user, "<message/>") for user in USERS * 20]

    await storage.flush()

    assert all(f.done() and f.exception() is None for f in futures)
    assert sum([await archive.count(HOST, user) for user in USERS]) == 100
    await storage.flush()                 # nothing queued: returns at once


@pytest.fixture
async def poison(storage_url: str, run_sql) -> None:
    """Make the database reject any archive row whose value is '<poison/>'."""
    if storage_url.startswith("sqlite"):
        await run_sql("CREATE TRIGGER poison BEFORE INSERT ON archive WHEN NEW.value = '<poison/>' "
                      "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
    else:
        await run_sql("ALTER TABLE archive ADD CONSTRAINT poison CHECK (value <> '<poison/>')")


async def test_a_failed_batch_fails_every_append_in_it_and_writes_none(
        storage: Storage, poison) -> None:
    archive = storage.archive("mam")
    committed = await archive.append(HOST, "alice", "<before/>")
    batch = [archive.append_nowait(HOST, "alice", "<good/>"),
             archive.append_nowait(HOST, "bob", "<poison/>"),
             archive.append_nowait(HOST, "carol", "<good/>")]

    results = await asyncio.gather(*batch, return_exceptions=True)

    assert all(isinstance(r, StorageError) for r in results), results
    assert "archive.append" in str(results[0])
    assert await archive.query(HOST, "alice") == [committed]
    assert await archive.count(HOST, "carol") == 0
    # The writer carries on with the next batch.
    after = await archive.append(HOST, "carol", "<after/>")
    assert await archive.query(HOST, "carol") == [after]


async def test_a_caller_that_gives_up_does_not_stop_the_batch(storage: Storage) -> None:
    archive = storage.archive("mam")
    abandoned = archive.append_nowait(HOST, "alice", "<one/>")
    kept = archive.append_nowait(HOST, "alice", "<two/>")
    abandoned.cancel()

    await kept

    # Cancelling only stops waiting: the append was queued and is written with its batch.
    assert [i.value for i in await archive.query(HOST, "alice")] == ["<one/>", "<two/>"]


async def test_appends_after_close_are_refused(storage_url: str) -> None:
    storage = await Storage.open(storage_url)
    await storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.archive("mam").append_nowait(HOST, "alice", "<message/>")
