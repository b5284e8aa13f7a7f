"""The journal's backpressure: more than two batches queued pauses client input
(storage/backlog.py) until one is left, but never while the journal is failing: clients must get
through to be refused (fail closed) or delivered (on_failure = "deliver")."""

from __future__ import annotations

import asyncio
import tempfile
import time

from stockade.compliance.journal import MAX_BATCH, Journal
from stockade.storage import Storage


class Clock:
    def time(self) -> float:
        return time.time()


def queue(journal: Journal, count: int) -> None:
    for n in range(count):
        journal.record("example.com", "chat", "alice@example.com/phone", "bob@example.com",
                       stanza=b"<message><body>%d</body></message>" % n, stanza_type="chat")


async def test_a_journal_behind_by_two_batches_pauses_input_until_it_caught_up() -> None:
    storage = await Storage.open(f"sqlite:///{tempfile.mkdtemp()}/j.db")
    journal = Journal(storage, Clock(), None)
    await journal.start()
    try:
        queue(journal, 2 * MAX_BATCH)
        assert not storage.backlog.congested
        queue(journal, 1)
        assert storage.backlog.congested
        cleared = asyncio.Event()
        storage.backlog.when_clear(cleared.set)
        await asyncio.wait_for(cleared.wait(), 60)
        await journal.flush()
        assert journal.records_committed == 2 * MAX_BATCH + 1
    finally:
        await journal.close()
        await storage.close()


async def test_a_journal_with_more_than_a_batch_waiting_is_behind_until_it_caught_up() -> None:
    """What the eDiscovery indexer asks before it takes time from the messages."""
    storage = await Storage.open(f"sqlite:///{tempfile.mkdtemp()}/j.db")
    journal = Journal(storage, Clock(), None)
    await journal.start()
    try:
        assert not journal.is_busy() and not journal.is_behind()
        queue(journal, MAX_BATCH)
        assert journal.is_busy() and not journal.is_behind()
        queue(journal, 1)
        assert journal.is_behind()
        await asyncio.wait_for(journal.flush(), 60)
        assert not journal.is_busy() and not journal.is_behind()
    finally:
        await journal.close()
        await storage.close()


async def test_a_failing_journal_does_not_keep_input_paused() -> None:
    storage = await Storage.open(f"sqlite:///{tempfile.mkdtemp()}/j.db")
    journal = Journal(storage, Clock(), None, retry_delays=(0.05,))
    await journal.start()
    broken = True
    append_batch = journal._store.append_batch

    async def failing_append(*args, **kwargs):
        if broken:
            raise OSError("disk I/O error")
        return await append_batch(*args, **kwargs)

    journal._store.append_batch = failing_append
    try:
        queue(journal, 2 * MAX_BATCH + 1)
        assert storage.backlog.congested                      # before the first attempt failed
        cleared = asyncio.Event()
        storage.backlog.when_clear(cleared.set)
        await asyncio.wait_for(cleared.wait(), 30)             # the failure released it
        assert journal.is_failing and not storage.backlog.congested
        queue(journal, 2 * MAX_BATCH)                          # held while failing: no pause
        assert not storage.backlog.congested
        broken = False
        await asyncio.wait_for(journal.flush(), 60)
        assert journal.records_committed == 4 * MAX_BATCH + 1   # nothing was dropped
    finally:
        await journal.close()
        await storage.close()
