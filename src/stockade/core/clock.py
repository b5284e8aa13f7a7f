"""Time, injected: the server reads the clock only through a `Clock`, so tests can move it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (timestamps, delays, retention)."""

    def monotonic(self) -> float:
        """Seconds for measuring intervals (lockouts, rate limits, timeouts)."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
