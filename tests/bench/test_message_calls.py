"""bench/message_calls.py counts the server's calls for each message it routes (no timing)."""

from __future__ import annotations

from bench.message_calls import count


def test_every_message_is_counted_once_through_the_archive_on_both_sides():
    counter = count(messages=20, journal=False)
    per_function = {name.split(" ", 1)[1]: n for name, n in counter.calls.items() if not name.startswith("C ")}
    # Each message is archived for its sender and for its recipient, once each: the counter
    # saw exactly the measured burst, in the server's thread.
    assert per_function["Archiver.from_local"] == 20
    assert per_function["Archiver.to_local"] == 20
    assert counter.python_calls() >= 20 * 10
