"""Archive keys: unique, and sorted in the order they were made, even when the clock goes back."""

from __future__ import annotations

import re
import time

from stockade.storage import keys
from stockade.storage.keys import PREFIX_LENGTH, new_key, time_prefix


def test_keys_are_unique_url_safe_and_sort_in_the_order_they_were_made() -> None:
    made = [new_key() for _ in range(10_000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9a-f]{14}[A-Za-z0-9_-]{12}", key) for key in made)


def test_the_prefix_is_the_time_in_microseconds() -> None:
    before = time.time()
    prefix = time_prefix()
    assert len(prefix) == PREFIX_LENGTH
    assert abs(int(prefix, 16) / 1e6 - before) < 1.0


def test_prefixes_keep_growing_when_the_clock_steps_back(monkeypatch) -> None:
    first = time_prefix()
    monkeypatch.setattr(keys.time, "time_ns", lambda: 1_000_000_000_000_000)     # 2001
    later = [time_prefix() for _ in range(3)]
    assert [first, *later] == sorted({first, *later})
    assert int(later[0], 16) == int(first, 16) + 1
