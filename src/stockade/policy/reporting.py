"""Verdict reporting: every policy verdict other than Allow goes into the audit log.

The hub fires VerdictGiven for each Flag, Deny, Redact and Quarantine about a stanza, and the
file checks fire it for uploads they refuse or quarantine. Each becomes an audit entry
`policy.<kind>` (policy.flag, policy.deny, policy.redact, policy.quarantine) by the user who
did it, with the rule, the reason and the stanza's addressee (or the file's details). The
message text itself is not copied into the audit log: the compliance journal keeps messages,
and a held message is in the quarantine.

The write is queued (AuditLog.record_soon): VerdictGiven is on the message path.

Refusals are summarised so that a client cannot flood the audit log: the first Deny of a rule
for one user is written at once, the same refusal again within REPEAT_WINDOW seconds is only
counted, and the count is written as one `policy.deny.repeated` entry when the next such refusal
comes after the window (or when the server stops). A client blasting stanzas past its rate limit
thus costs one audit entry per minute, not one per stanza; the compliance journal still records
each refused message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.hooks import ServerStopping, VerdictGiven
from ..core.verdict import Deny, Flag, Quarantine, Redact

if TYPE_CHECKING:
    from ..compliance.audit import AuditLog
    from ..core.bus import HookBus
    from ..core.clock import Clock

REPEAT_WINDOW = 60.0     # seconds during which the same refusal of the same user is only counted

KINDS = {Flag: "flag", Deny: "deny", Redact: "redact", Quarantine: "quarantine"}


def describe(verdict: Any) -> dict[str, Any]:
    """The audit detail of a verdict: its rule and why."""
    detail: dict[str, Any] = {"rule": getattr(verdict, "rule", "")}
    if isinstance(verdict, (Flag, Quarantine)):
        detail["reason"] = verdict.reason
    elif isinstance(verdict, Deny):
        detail["reason"] = verdict.text
        detail["condition"] = verdict.condition
    elif isinstance(verdict, Redact):
        detail["reason"] = "delivered changed"
    return detail


class VerdictReporter:
    """Writes each reported verdict to the audit log (repeated refusals summarised)."""

    def __init__(self, audit: AuditLog, clock: Clock) -> None:
        self.audit = audit
        self.clock = clock
        # (host, actor, rule) -> [window start, refusals counted but not written, last target]
        self._repeats: dict[tuple[str, str, str], list[Any]] = {}

    def subscribe(self, bus: HookBus) -> None:
        bus.on(VerdictGiven, self._verdict)
        bus.on(ServerStopping, self._stopping)

    def _verdict(self, event: VerdictGiven) -> None:
        kind = KINDS.get(type(event.verdict))
        if kind is None:
            return None
        detail = describe(event.verdict)
        target = event.actor
        if event.stanza is not None:
            detail["stanza"] = event.stanza.name
            to = event.stanza.attrs.get("to")
            if to:
                detail["to"] = to
                target = to
        if event.detail:
            detail.update({k: v for k, v in event.detail.items() if k not in detail})
        if kind == "deny" and self._is_repeat(event.host, event.actor, detail["rule"], target):
            return None
        self.audit.record_soon(event.host, event.actor, f"policy.{kind}", target, **detail)
        return None

    def _is_repeat(self, host: str, actor: str, rule: str, target: str) -> bool:
        """Count a refusal already written in this window; start a new window otherwise."""
        now = self.clock.time()
        key = (host, actor, rule)
        entry = self._repeats.get(key)
        if entry is not None and now - entry[0] < REPEAT_WINDOW:
            entry[1] += 1
            entry[2] = target
            return True
        if entry is not None:
            self._write_summary(key, entry)
        if len(self._repeats) > 10_000:        # bounded: forget windows that are long over
            self._sweep(now)
        self._repeats[key] = [now, 0, target]
        return False

    def _write_summary(self, key: tuple[str, str, str], entry: list[Any]) -> None:
        if entry[1]:
            host, actor, rule = key
            self.audit.record_soon(host, actor, "policy.deny.repeated", entry[2], rule=rule, count=entry[1],
                                   since=entry[0])

    def _sweep(self, now: float) -> None:
        for key, entry in list(self._repeats.items()):
            if now - entry[0] >= REPEAT_WINDOW:
                self._write_summary(key, entry)
                del self._repeats[key]

    async def _stopping(self, _event: ServerStopping) -> None:
        for key, entry in self._repeats.items():
            self._write_summary(key, entry)
        self._repeats.clear()
        await self.audit.flush()
