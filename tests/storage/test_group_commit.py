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
    assert len(set(futures)) == 1                         # one future for the batch

    assert await asyncio.gather(*futures) == [None] * 200

    assert storage.archive_batches_committed == 1
    items = await offline.query(HOST, "alice")
    assert [i.value for i in items] == [f"<message id='{n}'/>" for n in range(200)]
    assert [i.id for i in items] == sorted(i.id for i in items)


async def test_a_batch_holds_at_most_max_batch_items(storage: Storage) -> None:
    archive = storage.archive("mam")
    futures = [archive.append_nowait(HOST, "alice", "<message/>") for _ in range(MAX_BATCH + 10)]

    await asyncio.gather(*futures)

    assert storage.archive_batches_committed == 2
    assert len(set(futures)) == 2
    assert await archive.count(HOST, "alice") == MAX_BATCH + 10


async def test_appends_made_while_a_batch_commits_form_the_next_batch(storage: Storage) -> None:
    archive = storage.archive("mam")
    first = [archive.append_nowait(HOST, "alice", "<first/>") for _ in range(3)]
    await asyncio.sleep(0)          # let the writer take the first batch: it is now committing
    second = [archive.append_nowait(HOST, "alice", "<second/>") for _ in range(3)]

    await asyncio.gather(*first, *second)

    assert storage.archive_batches_committed == 2
    assert first[0] is not second[0]
    stored = await archive.query(HOST, "alice")
    assert [i.value for i in stored] == ["<first/>"] * 3 + ["<second/>"] * 3
    assert [i.id for i in stored] == sorted(i.id for i in stored)


async def test_append_returns_each_caller_its_own_item(storage: Storage) -> None:
    archive = storage.archive("mam")
    items = await asyncio.gather(*(archive.append(HOST, "alice", f"<m{n}/>", key=f"k{n}", when=float(n))
                                   for n in range(5)))

    assert storage.archive_batches_committed == 1
    assert [(i.key, i.when, i.value) for i in items] == [(f"k{n}", float(n), f"<m{n}/>") for n in range(5)]
    assert await archive.query(HOST, "alice") == items


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
    assert abandoned.cancel() is False             # shared with <two/>: cannot be cancelled

    await kept

    # Cancelling only stops waiting: the append was queued and is written with its batch.
    assert [i.value for i in await archive.query(HOST, "alice")] == ["<one/>", "<two/>"]


async def test_a_cancelled_waiter_does_not_cancel_the_others_in_its_batch(storage: Storage) -> None:
    """Stream management waits for a session's writes with gather (core/sessions.py); a session
    that closes cancels that wait, which must not cancel another session's wait."""
    archive = storage.archive("mam")
    mine = archive.append_nowait(HOST, "alice", "<mine/>")
    theirs = archive.append_nowait(HOST, "bob", "<theirs/>")

    async def writes_done(*writes: asyncio.Future) -> None:
        await asyncio.gather(*writes, return_exceptions=True)

    waiting_for_mine = asyncio.ensure_future(writes_done(mine))
    waiting_for_theirs = asyncio.ensure_future(asyncio.wait_for(theirs, timeout=30))
    await asyncio.sleep(0)

    waiting_for_mine.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting_for_mine                      # stops once the batch is done
    assert await waiting_for_theirs is None and not theirs.cancelled()
    assert await archive.count(HOST, "alice") == 1 and await archive.count(HOST, "bob") == 1


async def test_an_owner_first_seen_in_a_failed_batch_is_created_again(
        storage: Storage, poison, run_sql) -> None:
    """Owner ids are remembered only once their transaction committed: a rolled-back owner row
    must not be used by the next append."""
    archive = storage.archive("mam")
    failed = [archive.append_nowait(HOST, "dave", "<good/>"),
              archive.append_nowait(HOST, "erin", "<poison/>")]
    results = await asyncio.gather(*failed, return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results)

    item = await archive.append(HOST, "dave", "<again/>")

    assert await archive.query(HOST, "dave") == [item]
    assert await run_sql("SELECT username FROM archive_owners ORDER BY username") == [[("dave",)]]


async def test_each_archive_gets_one_owner_row_shared_by_every_process(
        storage: Storage, storage_url: str, clock, run_sql) -> None:
    archive = storage.archive("mam")
    first = await archive.append(HOST, "alice", "<one/>")
    await storage.archive("offline").append(HOST, "alice", "<offline/>")
    # A second process (the CLI) appending to the same archive finds the same owner row.
    other = await Storage.open(storage_url, clock=clock)
    try:
        second = await other.archive("mam").append(HOST, "alice", "<two/>")
        third = await other.archive("mam").append(HOST, "alice", "<three/>")
    finally:
        await other.close()
    fourth = await archive.append(HOST, "alice", "<four/>")

    assert await archive.query(HOST, "alice") == [first, second, third, fourth]
    assert await run_sql("SELECT host, username, store FROM archive_owners ORDER BY store") == [
        [(HOST, "alice", "mam"), (HOST, "alice", "offline")]]


async def test_appends_after_close_are_refused(storage_url: str) -> None:
    storage = await Storage.open(storage_url)
    await storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.archive("mam").append_nowait(HOST, "alice", "<message/>")


async def test_a_batch_split_into_several_insert_statements_keeps_every_row_in_order(
        storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite writes a batch as INSERTs of many rows each (engine.BulkInsert): with 16 rows per
    # statement a batch of 100 spans 6 full statements and a rest of 4; a rest of 1-15 rows goes
    # in statements of 8, 4, 2 and 1 rows. Every size of rest, and rests after full statements.
    monkeypatch.setattr("stockade.storage.engine.SQLITE_ROWS_PER_INSERT", 16)
    opened = await Storage.open(storage_url)
    try:
        archive = opened.archive("mam")
        calls = [(USERS[n % len(USERS)], f"<message id='{n}'/>") for n in range(100)]
        futures = [archive.append_nowait(HOST, user, value) for user, value in calls]
        await asyncio.gather(*futures)

        assert opened.archive_batches_committed == 1
        for user in USERS:
            items = await archive.query(HOST, user)
            assert [i.value for i in items] == [v for who, v in calls if who == user]
            assert [i.id for i in items] == sorted(i.id for i in items)
        assert sum([await archive.count(HOST, user) for user in USERS]) == 100

        written = [v for who, v in calls if who == "alice"]
        for size in (*range(1, 18), 31, 47, 48):
            values = [f"<message id='{size}-{n}'/>" for n in range(size)]
            await asyncio.gather(*[archive.append_nowait(HOST, "alice", value) for value in values])
            written += values
        items = await archive.query(HOST, "alice", limit=len(written))
        assert [i.value for i in items] == written
        assert [i.id for i in items] == sorted(i.id for i in items)
    finally:
        await opened.close()
