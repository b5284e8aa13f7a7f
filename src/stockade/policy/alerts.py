"""Administrator alerts: something needs a person now (a worm, an infected file).

    alerts = ctx.services[AdminAlerts]
    alerts.alert("example.com", "worm", "mallory@example.com sent the same message to 30 people "
                 "within a minute and may not message anyone new for 15 minutes.",
                 target="mallory@example.com", recipients=30)

Each alert
1. is written to the audit log as `alert.<kind>` (actor "system", target `detail["target"]` or the
   host), so that it is on record even when nobody is online;
2. goes as a headline message (RFC 6121 5.2.2: shown, never stored offline) from the host's own
   domain to every account in the host's `[hosts.policy] alert_jids`, with the subject
   "Stockade alert: <kind>";
3. is counted per kind (`counts`, read by the metrics endpoint when it is wired).

`alert` is synchronous and never raises: controls call it from the message path, and a failure
to tell an administrator must never change what happens to the stanza.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..protocol.jid import try_jid
from ..protocol.xml import Element

if TYPE_CHECKING:
    from ..compliance.audit import AuditLog
    from ..config.schema import PolicySection
    from ..core.router import Router

log = logging.getLogger("stockade.alerts")


class AdminAlerts:
    """Audit entry plus headline messages to the host's alert accounts. A policy control: `apply`
    takes each host's `alert_jids`."""

    def __init__(self, audit: AuditLog, router: Router) -> None:
        self.audit = audit
        self.router = router
        self._recipients: dict[str, tuple[str, ...]] = {}
        self.counts: Counter[str] = Counter()

    def apply(self, host: str, policy: PolicySection | None) -> None:
        """The host's policy changed (or the server starts): who receives its alerts."""
        self._recipients[host] = tuple(policy.alert_jids) if policy is not None else ()

    def recipients(self, host: str) -> tuple[str, ...]:
        return self._recipients.get(host, ())

    def alert(self, host: str, kind: str, text: str, **detail: Any) -> None:
        """Record and send an alert. Never raises."""
        try:
            self.counts[kind] += 1
            log.warning("alert %s on %s: %s", kind, host, text)
            target = str(detail.pop("target", None) or host)
            self.audit.record_soon(host, "system", f"alert.{kind}", target, text=text, **detail)
            for address in self._recipients.get(host, ()):
                self._send(host, address, kind, text)
        except Exception:
            log.exception("could not raise the %s alert of %s: %s", kind, host, text)

    def _send(self, host: str, address: str, kind: str, text: str) -> None:
        to = try_jid(address)
        if to is None:
            return
        message = Element("message", "jabber:client", {"from": host, "to": address, "type": "headline"})
        message.add("subject", text=f"Stockade alert: {kind}")
        message.add("body", text=text)
        pending = self.router.route_message(message, to, None)
        if pending is not None:
            # Only an account created since start-up by another process makes the router look it up.
            asyncio.ensure_future(pending)
