"""bench/message_calls.py counts the server's calls for each message it routes (no timing)."""

from __future__ import annotations

import pytest

from bench.message_calls import count, cyclic_garbage


def test_every_message_is_counted_once_through_the_archive_on_both_sides():
    counter = count(messages=20, journal=False)
    per_function = {name.split(" ", 1)[1]: n for name, n in counter.calls.items() if not name.startswith("C ")}
    # Each message is archived for its sender and for its recipient, once each: the counter
    # saw exactly the measured burst, in the server's thread.
    assert per_function["Archiver.from_local"] == 20
    assert per_function["Archiver.to_local"] == 20
    assert counter.python_calls() >= 20 * 10


@pytest.mark.parametrize("journal", [False, True], ids=["default modules", "journal and policy"])
def test_a_message_leaves_nothing_for_the_cyclic_collector(journal):
    """Everything a routed message makes is freed by reference counting once it is delivered.
    Objects in reference cycles wait for the cyclic collector, whose walks took about a seventh
    of a loaded server's time while every stanza with a child was one (seven objects per
    message). A few may come from the event loops around the burst, never one per message."""
    messages = 100
    found = cyclic_garbage(messages=messages, journal=journal)
    assert sum(found.values()) < messages // 10, found.most_common(5)
