"""Archive item keys (the XEP-0359 stanza ids) that sort in the order they were made.

The archive table has an index on (key, owner) for look-ups by stanza id. Random keys would land
anywhere in that index, and each insert would dirty a page of its own; keys that grow with time
are all inserted at its right-hand end, into the same few pages (storage/archive.py).

A key starts with `time_prefix()`: 14 lowercase hexadecimal digits of a clock in microseconds
that, within a process, never repeats and never goes back (two keys made in the same
microsecond, or after the system clock stepped back, take the last value plus one). Digits and
lowercase letters sort the same way as bytes, in SQLite's BINARY collation and in the usual
PostgreSQL collations alike. What follows the prefix is up to the key's maker: `new_key()` adds
72 random bits, `modules/mam/archiving.py` a signature. The prefix is unique within a process,
so keys from one process never collide; across processes (a restart after the clock stepped
back) the random or signed part keeps them apart.

A key reveals when it was made, to the microsecond; the archive stores that time anyway, and
gives it to the client with every result (<delay/>).
"""

from __future__ import annotations

import time

from ..protocol.entropy import urlsafe_72

PREFIX_LENGTH = 14          # hex digits: microseconds since 1970 fit until the year 4253


class _KeyClock:
    """Microseconds since 1970, strictly increasing from one call to the next."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now = time.time_ns() // 1000
        if now <= self._last:
            now = self._last + 1
        self._last = now
        return now


_clock = _KeyClock()


def time_prefix() -> str:
    """The next 14-character time prefix (see the module docstring)."""
    return f"{_clock.next():014x}"


def new_key() -> str:
    """A new archive key: the time prefix and 72 random bits, 26 URL-safe characters."""
    return f"{_clock.next():014x}{urlsafe_72()}"
