"""Micro-benchmark: the CPU cost of one archive append (ArchiveStore.append_nowait, group commit).

    .venv/bin/python bench/storage_append.py                  # SQLite file in a temporary directory
    .venv/bin/python bench/storage_append.py --url postgresql://user:pw@host/db

100,000 appends over 1,000 owners, issued the way the message path issues them: a few hundred
per event-loop turn (`--per-turn`), each a serialised chat message of about 250 bytes with a
conversation partner and a time-ordered, signed archive id (modules/mam/archiving.py), with at
most `--window` appends waiting for their commit (the load's backlog: a server's clients wait
for their acks). The writer commits whatever is queued while the previous batch commits
(storage/archive.py), so under this load its batches are full.

CPU time is the whole process's (resource.getrusage(RUSAGE_SELF): the event loop AND the
aiosqlite thread, user + system), from the first append to the commit of the last one, divided
by the number of appends; on PostgreSQL the database server's own work is not in it. Every
owner already has a row before the clock starts (the owner id is created on first use; a
running server pays that once per user).

It also times one page of a MAM query filtered by conversation partner ('with') on a
100,000-item archive (`--query`): the partner wrote 1 in `--with-every` of the owner's items,
which are spread over the table among `--others` times as many items of other owners.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from stockade.modules.mam.archiving import SignedIds
from stockade.protocol.jid import JID
from stockade.storage import Storage

HOST = "example.com"
BODY = ("Hello, this is a perfectly ordinary chat message of a realistic length, "
        "the kind people send all day long.")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stanza(n: int, owner: str, partner: str) -> str:
    return (f"<message xmlns='jabber:client' from='{partner}/phone' to='{owner}' type='chat' "
            f"id='m{n}'><body>{BODY}</body><active xmlns='http://jabber.org/protocol/chatstates'/>"
            f"</message>")


async def appends(url: str, count: int, owners: int, per_turn: int, window: int) -> None:
    storage = await Storage.open(url)
    try:
        archive = storage.archive("mam")
        ids = SignedIds()
        jids = [JID(f"user{n}", HOST, None) for n in range(owners)]
        partners = [f"user{(n + 1) % owners}@{HOST}" for n in range(owners)]
        # Warm-up: every owner gets its id, the statement caches fill.
        for n, jid in enumerate(jids):
            archive.append_nowait(HOST, jid.local, _stanza(n, str(jid), partners[n]),
                                  with_jid=partners[n], key=ids.new(jid))
        await storage.flush()
        # Made before the clock starts, as the message path makes them before it appends: the
        # stanza is serialised by the router, the archive id by modules/mam/archiving.py (timed
        # separately below). Their order is the order they are appended in.
        work = [(jids[n % owners].local, partners[n % owners], _stanza(n, "x", "y"),
                 time.time(), ids.new(jids[n % owners])) for n in range(count)]
        gc.freeze()        # the prepared work is the benchmark's, not the server's: keep it out of the GC
        batches_before = storage.archive_batches_committed
        wall, cpu, loop_cpu = time.perf_counter(), _cpu(), time.thread_time()
        append = archive.append_nowait
        in_flight: deque[asyncio.Future] = deque()
        for start in range(0, count, per_turn):
            for user, partner, value, when, key in work[start:start + per_turn]:
                future = append(HOST, user, value, with_jid=partner, when=when, key=key)
            # A server does not queue without bound: its clients wait for their acks (XEP-0198).
            in_flight.append(future)
            if len(in_flight) * per_turn > window:
                await in_flight.popleft()
            await asyncio.sleep(0)
        await storage.flush()
        cpu, wall, loop_cpu = _cpu() - cpu, time.perf_counter() - wall, time.thread_time() - loop_cpu
        batches = storage.archive_batches_committed - batches_before
    finally:
        await storage.close()
    print(f"appends: {count:,} over {owners:,} owners, {per_turn} per loop turn, at most {window:,} "
          f"waiting, {batches:,} transactions")
    print(f"  CPU  {cpu * 1e6 / count:6.2f} us/append  (whole process, user+system; "
          f"{loop_cpu * 1e6 / count:.2f} in the event loop's thread, the rest in the database driver's)")
    print(f"  wall {wall * 1e6 / count:6.2f} us/append  = {count / wall:,.0f} appends/s")
    cpu = _cpu()
    for jid in jids * (count // owners):
        ids.new(jid)
    print(f"  and {(_cpu() - cpu) * 1e6 / count:.2f} us of CPU to make one signed archive id (SignedIds.new)")


async def with_query(url: str, count: int, every: int, others: int) -> None:
    """One owner with `count` items, among `others` times as many items of 100 other owners
    (so that the owner's rows are spread over the table as in a server with many users); the
    partner 'rare' wrote 1 in `every` of the owner's items."""
    storage = await Storage.open(url)
    try:
        archive = storage.archive("mam")
        owner = JID("big", HOST, None)
        ids = SignedIds()
        t0 = 1_700_000_000.0
        for n in range(count):
            partner = f"rare@{HOST}" if n % every == 0 else f"friend{n % 50}@{HOST}"
            when = t0 + n * 0.01
            archive.append_nowait(HOST, "big", _stanza(n, str(owner), partner), with_jid=partner,
                                  when=when, key=ids.new(owner))
            for m in range(others):
                other = JID(f"other{(n * others + m) % 100}", HOST, None)
                archive.append_nowait(HOST, other.local, _stanza(n, str(other), partner),
                                      with_jid=partner, when=when, key=ids.new(other))
            if n % 1000 == 999:
                await storage.flush()
        await storage.flush()
        print(f"query: one archive of {count:,} items among {count * (others + 1):,}")
        for label, with_jid in ((f"with a partner of 1 in {every} items", f"rare@{HOST}"),
                                ("with a partner that has no items", f"nobody@{HOST}"),
                                ("no filter", None)):
            page, total = [], []
            for _ in range(5):
                t = time.perf_counter()
                items = await archive.query(HOST, "big", with_jid=with_jid, limit=101, reverse=True)
                page.append(time.perf_counter() - t)
                t = time.perf_counter()
                await archive.count(HOST, "big", with_jid=with_jid)
                total.append(time.perf_counter() - t)
            print(f"  {label}: last page of 100 ({len(items)} read) "
                  f"{statistics.median(page) * 1e3:.2f} ms, count {statistics.median(total) * 1e3:.2f} ms")
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: a SQLite file in a temporary directory)")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--owners", type=int, default=1_000)
    parser.add_argument("--per-turn", type=int, default=200, help="appends issued per event-loop turn")
    parser.add_argument("--window", type=int, default=10_000,
                        help="appends queued but not yet committed, at most (the load's backlog)")
    parser.add_argument("--query", action="store_true", help="also time a 'with' query on a big archive")
    parser.add_argument("--with-every", type=int, default=100)
    parser.add_argument("--others", type=int, default=4,
                        help="items of other owners per item of the queried archive")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(appends(url, args.count, args.owners, args.per_turn, args.window))
        if args.query:
            url = args.url or f"sqlite:///{Path(tmp) / 'query.db'}"
            asyncio.run(with_query(url, args.count, args.with_every, args.others))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
