"""Verdict reporting: each verdict is in the audit log, and repeated refusals are summarised so
that a client blasting stanzas past its limits cannot flood the log.

    mallory is refused 500 times in a minute   -> 1 policy.deny entry
    a minute later, refused again              -> 1 policy.deny.repeated (count 499) + 1 policy.deny
"""

from __future__ import annotations

import pytest

from stockade.compliance import AuditLog
from stockade.core.bus import HookBus
from stockade.core.hooks import ServerStopping, VerdictGiven
from stockade.core.verdict import Deny, Flag
from stockade.policy.reporting import REPEAT_WINDOW, VerdictReporter
from stockade.protocol.xml import Element
from stockade.storage import Storage
from stockade.testing.clock import FakeClock

HOST = "example.com"
MALLORY = "mallory@example.com/laptop"


def message(to: str) -> Element:
    return Element("message", "jabber:client", {"to": to, "from": MALLORY, "type": "chat"})


@pytest.fixture
async def reporting():
    storage = await Storage.open("sqlite:///:memory:")
    clock = FakeClock()
    audit = AuditLog(storage.audit, clock)
    bus = HookBus()
    VerdictReporter(audit, clock).subscribe(bus)
    try:
        yield bus, audit, clock
    finally:
        await storage.close()


def refuse(bus: HookBus, rule: str = "flood.rate", to: str = "bob@example.com") -> None:
    verdict = Deny("resource-constraint", "You are sending too fast; slow down.", rule=rule)
    bus.fire(VerdictGiven(HOST, MALLORY, verdict, message(to)))


async def actions(audit: AuditLog) -> list[tuple[str, str, dict]]:
    await audit.flush()
    return [(e["action"], e["target"], e["detail"]) for e in reversed(await audit.entries(limit=1000))]


async def test_a_burst_of_the_same_refusal_is_one_entry_then_one_summary(reporting):
    bus, audit, clock = reporting
    for _ in range(500):
        refuse(bus)
    assert [a for a, _, _ in await actions(audit)] == ["policy.deny"]
    clock.advance(REPEAT_WINDOW)
    refuse(bus, to="carol@example.com")
    entries = await actions(audit)
    assert [a for a, _, _ in entries] == ["policy.deny", "policy.deny.repeated", "policy.deny"]
    summary = entries[1][2]
    assert summary["count"] == 499 and summary["rule"] == "flood.rate"


async def test_different_rules_and_flags_are_each_written(reporting):
    bus, audit, clock = reporting
    refuse(bus, rule="flood.rate")
    refuse(bus, rule="dlp.cards")
    for _ in range(3):       # flags are never summarised: each delivered-and-reported message counts
        bus.fire(VerdictGiven(HOST, MALLORY, Flag("matched keyword list 'projects'", rule="dlp.projects"),
                              message("bob@example.com")))
    got = [(a, d["rule"]) for a, _, d in await actions(audit)]
    assert got == [("policy.deny", "flood.rate"), ("policy.deny", "dlp.cards")] + [("policy.flag", "dlp.projects")] * 3


async def test_counted_refusals_are_written_when_the_server_stops(reporting):
    bus, audit, _clock = reporting
    for _ in range(10):
        refuse(bus)
    await bus.fire_async(ServerStopping())
    entries = await actions(audit)
    assert [a for a, _, _ in entries] == ["policy.deny", "policy.deny.repeated"]
    assert entries[1][2]["count"] == 9
