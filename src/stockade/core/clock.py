"""Time, injected: the server reads the clock only through a `Clock`, so tests can move it."""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (timestamps, delays, retention)."""

    def monotonic(self) -> float:
        """Seconds for measuring intervals (lockouts, rate limits, timeouts)."""


class SystemClock:
    """The real clock: the C functions themselves (the message path reads the clock several
    times per stanza; a method around them would add a Python call each time)."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)
