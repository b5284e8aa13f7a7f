"""Quarantine review: messages a policy held (Quarantine verdict) wait for a compliance officer.

When a control answers Quarantine, the hub neither delivers nor refuses the message; this
service keeps it in the map store "quarantine" under (host, "", id), sealed when encryption at
rest is on (storage.cipher), and tells the sender that it was held. A compliance officer lists
the held messages (admin API GET /api/v1/hosts/{host}/quarantine) and either

- releases one: it is routed to its recipient as if sent now, with a XEP-0203 delay stamp
  saying when it was really sent, and removed from the quarantine; or
- rejects one: it is removed, and the sender is told that it was not delivered.

Both are recorded in the audit log (`quarantine.release`, `quarantine.reject`) with the
officer as actor. The hold itself is recorded as `policy.quarantine` (policy/reporting.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..core.hooks import ServerStopping, VerdictGiven
from ..core.verdict import Quarantine
from ..protocol import ns
from ..protocol.jid import try_jid
from ..protocol.xml import Element, parse

if TYPE_CHECKING:
    from ..compliance.audit import AuditLog
    from ..core.bus import HookBus
    from ..core.clock import Clock
    from ..core.router import Router
    from ..storage import Storage

log = logging.getLogger(__name__)

STORE = "quarantine"


def delay_stamp(when: float) -> str:
    """XEP-0082 date-time of a unix time, as XEP-0203 delay stamps write it."""
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class QuarantineError(Exception):
    """A refused review action; `status` 404 for an unknown item."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def notice(host: str, to: str, text: str) -> Element:
    """A message from the host itself to a user."""
    msg = Element("message", ns.CLIENT,
                  {"from": host, "to": to, "id": secrets.token_hex(6)})
    msg.add("body", None, None, text)
    return msg


class QuarantineService:
    """Keeps held messages and carries out a reviewer's decision."""

    def __init__(self, storage: Storage, router: Router, clock: Clock, *, audit: AuditLog | None = None,
                 journal: Any = None) -> None:
        self.journal = journal          # compliance.journal.Journal, or None when it is off
        self.store = storage.map(STORE)
        self.cipher = getattr(storage, "cipher", None)
        self.router = router
        self.clock = clock
        self.audit = audit
        self._pending: set[asyncio.Task[None]] = set()

    def subscribe(self, bus: HookBus) -> None:
        bus.on(VerdictGiven, self._verdict)
        bus.on(ServerStopping, self._stopping)

    async def _stopping(self, _event: ServerStopping) -> None:
        await self.flush()

    def _verdict(self, event: VerdictGiven) -> None:
        if isinstance(event.verdict, Quarantine) and event.stanza is not None:
            task = asyncio.ensure_future(self.hold(event.host, event.actor, event.stanza, event.verdict))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        while self._pending:
            await asyncio.wait(set(self._pending))

    # -- holding ----------------------------------------------------------------------------------
    def _seal(self, text: str, item_id: str) -> str:
        if self.cipher is not None and hasattr(self.cipher, "seal_text"):
            return self.cipher.seal_text(text, f"quarantine:{item_id}".encode())
        return text

    async def _unseal(self, stored: str, item_id: str) -> str:
        if self.cipher is not None and hasattr(self.cipher, "unseal_text"):
            return await self.cipher.unseal_text(stored, f"quarantine:{item_id}".encode())
        return stored

    async def hold(self, host: str, sender: str, stanza: Element, verdict: Quarantine) -> str:
        """Keep the message and tell the sender; returns the item's id."""
        item_id = secrets.token_hex(8)
        to = stanza.attrs.get("to", "")
        item = {"id": item_id, "ts": self.clock.time(), "sender": sender, "to": to, "rule": verdict.rule,
                "reason": verdict.reason, "stanza": self._seal(stanza.serialize("").decode(), item_id)}
        try:
            await self.store.set(host, "", item_id, item)
        except Exception:
            log.exception("could not store the message %s held for review; the sender is told it was not sent",
                          sender)
            self._tell(host, sender, "Your message was not sent: a policy of this server holds such messages "
                                     "for review, and it could not be stored. Try again later.")
            return ""
        self._tell(host, sender, f"Your message to {to} was held for review by a compliance officer "
                                 f"({verdict.reason}; rule {verdict.rule!r}). You will be told if it is not "
                                 "delivered.")
        return item_id

    def _tell(self, host: str, to: str, text: str) -> None:
        jid = try_jid(to)
        if jid is None:
            return
        pending = self.router.route_message(notice(host, to, text), jid, None)
        if pending is not None:
            task = asyncio.ensure_future(pending)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    # -- review -----------------------------------------------------------------------------------
    async def list(self, host: str) -> list[dict[str, Any]]:
        """The held messages of `host`, oldest first, with their text."""
        items = await self.store.get_all(host, "")
        out = []
        for item_id, item in items.items():
            try:
                stanza = parse(await self._unseal(item["stanza"], item_id))
            except Exception as exc:
                log.error("the held message %s of %s cannot be read: %s", item_id, host, exc)
                body, subject = "(this held message cannot be read: see the server log)", ""
            else:
                body, subject = stanza.find_text("body") or "", stanza.find_text("subject") or ""
            out.append({"id": item_id, "ts": item["ts"], "sender": item["sender"], "to": item["to"],
                        "rule": item["rule"], "reason": item["reason"], "body": body, "subject": subject})
        return sorted(out, key=lambda i: (i["ts"], i["id"]))

    async def _take(self, host: str, item_id: str) -> dict[str, Any]:
        item = await self.store.get(host, "", item_id) if item_id else None
        if item is None:
            raise QuarantineError(404, f"there is no held message {item_id!r} on {host}; list them with "
                                       f"GET /hosts/{host}/quarantine")
        await self.store.set(host, "", item_id, None)
        return item

    async def release(self, host: str, item_id: str, *, actor: str, **detail: Any) -> dict[str, Any]:
        """Deliver a held message now, stamped with when it was sent."""
        item = await self._take(host, item_id)
        stanza = parse(await self._unseal(item["stanza"], item_id))
        stanza.remove_all("delay", ns.DELAY)
        stanza.add("delay", ns.DELAY, {"from": host, "stamp": delay_stamp(item["ts"])},
                   "held for review, then released")
        to = try_jid(item["to"]) if item["to"] else try_jid(item["sender"])
        await self._journal_release(host, item, stanza, actor)
        if to is not None:
            pending = self.router.route_message(stanza, to.bare if to.resource is None else to, None)
            if pending is not None:
                await pending
        await self._record(host, actor, "quarantine.release", item, detail)
        return item

    async def _journal_release(self, host: str, item: dict[str, Any], stanza: Element, actor: str) -> None:
        """Record the released message in the compliance journal, like any message, before it
        is delivered (the held original is there already, as the quarantine verdict)."""
        journal = self.journal
        if journal is None:
            return
        kind = stanza.attrs.get("type") or "normal"
        commit = None if journal.is_failing else journal.record(
            host, kind if kind in ("chat", "normal", "groupchat", "headline") else "normal", item["sender"],
            item["to"], stanza=stanza.serialize(), stanza_type=stanza.attrs.get("type"),
            detail={"released_by": actor, "quarantine_id": item["id"]})
        if commit is None:
            await self.store.set(host, "", item["id"], item)           # still held
            raise QuarantineError(503, "the compliance journal cannot record messages right now, so the "
                                       "message stays held; try again shortly")
        await commit

    async def reject(self, host: str, item_id: str, *, actor: str, **detail: Any) -> dict[str, Any]:
        """Drop a held message; the sender is told it was not delivered."""
        item = await self._take(host, item_id)
        self._tell(host, item["sender"], f"Your message to {item['to']}, held for review (rule {item['rule']!r}), "
                                         "was rejected by a compliance officer and not delivered.")
        await self._record(host, actor, "quarantine.reject", item, detail)
        return item

    async def _record(self, host: str, actor: str, action: str, item: dict[str, Any], detail: dict[str, Any]) -> None:
        if self.audit is not None:
            await self.audit.record(host, actor, action, item["sender"], id=item["id"], to=item["to"],
                                    rule=item["rule"], reason=item["reason"], held_at=item["ts"], **detail)
