"""Backpressure from the group-commit writers to the connections that feed them.

The archive writer (archive.py) and the compliance journal (compliance/journal.py) queue what
the message path hands them and commit it in batches in a database thread. Delivery does not wait
for the commit, so a load the database cannot keep up with would let the queues grow without
bound: memory the server cannot give back, and acknowledgements (XEP-0198) that lag ever further
behind. Measured on one core, a 1:1 message storm queued half a million archive rows (a quarter
of a gigabyte) in twenty seconds.

So each writer reports when its queue passes a high mark (about two transactions' worth) and
when it is back under a low mark (one transaction's worth). While any writer is over its mark,
client connections stop reading after the input they are processing (net/connection.py): the
clients' own TCP windows then hold what they send, and the event loop's time goes to the
writers. When every writer is back under its low mark, the connections read again. The marks are
big enough that a writer always has a full batch waiting while it commits one, so the pause costs
no throughput the database could have delivered: it is the speed of the slowest writer, made
visible instead of hidden in memory.

A writer that is failing (the journal while its database is down) releases its mark: its own
refusal rules (fail closed, or deliver and hold a bounded number) apply, and clients must be able
to send to receive the refusal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# A pause longer than this is worth a line in the log: the database is too slow for the load.
SLOW_PAUSE = 5.0


class WriteBacklog:
    """Whether some writer is over its high mark (`congested`), and who waits for it to clear."""

    __slots__ = ("congested", "_over", "_waiters", "_since", "_causes", "pauses", "paused_seconds")

    def __init__(self) -> None:
        self.congested = False           # read on every input a connection receives: a plain attribute
        self._over: set[str] = set()
        self._waiters: list[Callable[[], None]] = []
        self._since = 0.0
        self._causes: set[str] = set()   # every writer that was over during the current pause
        self.pauses = 0                  # times input was paused (metrics)
        self.paused_seconds = 0.0        # total time it was paused

    def over(self, writer: str, is_over: bool) -> None:
        """Writer `writer` is over its high mark (True) or back under its low mark (False).
        The storage's writers are "archive" and "journal"; with several worker processes the
        stream to another worker is one too ("worker N", net/workers.py)."""
        if is_over:
            if writer in self._over:
                return
            self._over.add(writer)
            self._causes.add(writer)
            if not self.congested:
                self.congested = True
                self.pauses += 1
                self._since = time.monotonic()
            return
        if writer not in self._over:
            return
        self._over.discard(writer)
        if self._over:
            return
        self.congested = False
        paused = time.monotonic() - self._since
        self.paused_seconds += paused
        causes, self._causes = sorted(self._causes), set()
        if paused > SLOW_PAUSE:
            log.warning("client input was paused for %.1f s while %s caught up with what was queued "
                        "for it: it is too slow for this load", paused, " and ".join(causes))
        waiters, self._waiters = self._waiters, []
        for resume in waiters:
            try:
                resume()
            except Exception:
                log.exception("resuming a connection after a write backlog failed")

    def when_clear(self, resume: Callable[[], None]) -> None:
        """Call `resume` once no writer is over its mark (at once if none is)."""
        if not self.congested:
            resume()
        else:
            self._waiters.append(resume)
