"""Legal holds: while a user (or a group) is held, retention deletes nothing of theirs.

    holds = LegalHolds(storage.map(STORE), groups, audit, clock)
    hold = await holds.create("example.com", "user", "alice", reason="case 2025-17", actor="cli")
    await holds.held_users("example.com")      # {"alice"}: the purge skips alice's records
    await holds.release("example.com", hold.id, actor="admin:carol")

A hold names a user or a group of its host. A group hold covers the group's members at the time
of each purge (a member who leaves the group is no longer covered by it; hold the user as well
when that matters). What a hold keeps: the journal records the user is a participant of, their
message archive, their offline messages and their uploaded files (compliance/retention.py).

Holds live in the map store "legal_holds" under the host-wide user "", one record per hold, and
are read from the store at every purge: a hold made with `stockade hold add` beside a running
server protects from that server's next purge on. Creating and releasing are recorded in the
audit log (`hold.create`, `hold.release`) with the reason and the actor; a release deletes the
record (the audit log keeps the history), and the next purge applies retention again.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..protocol.jid import InvalidJid, normalise_local

if TYPE_CHECKING:
    from ..core.clock import Clock
    from ..directory.groups import GroupService
    from ..storage.stores import MapStore
    from .audit import AuditLog

STORE = "legal_holds"
KINDS = ("user", "group")
MAX_REASON = 1000


class HoldError(Exception):
    """A refused hold operation; the text says why and what to do. `problem` is "invalid"
    (fix the input), "missing" (no such host or hold) or "conflict" (already held)."""

    def __init__(self, message: str, problem: str = "invalid") -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class Hold:
    id: str
    host: str
    kind: str                   # "user" | "group"
    subject: str                # the user name or the group id
    reason: str
    actor: str                  # who created it: "cli", "admin:NAME"
    created: float              # unix time

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, host: str, hold_id: str, record: dict[str, Any]) -> Hold:
        return cls(hold_id, host, record["kind"], record["subject"], record.get("reason", ""),
                   record.get("actor", ""), float(record.get("created", 0.0)))


class LegalHolds:
    def __init__(self, store: MapStore, groups: GroupService, audit: AuditLog | None, clock: Clock,
                 domains: set[str]) -> None:
        self.store = store
        self.groups = groups
        self.audit = audit
        self.clock = clock
        self.domains = domains

    def _check_host(self, host: str) -> None:
        if host not in self.domains:
            raise HoldError(f"{host!r} is not a domain this server serves "
                            f"(served: {', '.join(sorted(self.domains))})", "missing")

    async def list(self, host: str) -> list[Hold]:
        """The holds in force on `host`, oldest first."""
        self._check_host(host)
        holds = []
        for hold_id, record in (await self.store.get_all(host, "")).items():
            try:
                holds.append(Hold.from_record(host, hold_id, record))
            except (KeyError, TypeError, ValueError):
                # A damaged record still holds nothing back: say so loudly rather than purge.
                raise HoldError(f"the legal hold record {hold_id!r} of {host} is unreadable; no purge "
                                f"runs until it is repaired or released") from None
        return sorted(holds, key=lambda h: (h.created, h.id))

    async def create(self, host: str, kind: str, subject: str, *, reason: str, actor: str) -> Hold:
        """Hold a user (`kind` "user", `subject` the user name) or a group (its id)."""
        self._check_host(host)
        if kind not in KINDS:
            raise HoldError(f"a hold is on a 'user' or a 'group', not {kind!r}")
        reason = reason.strip()
        if not reason:
            raise HoldError("give the reason for the hold (a case or matter reference): it is recorded "
                            "in the audit log")
        if len(reason) > MAX_REASON:
            raise HoldError(f"the reason is {len(reason)} characters long; keep it under {MAX_REASON}")
        subject = subject.strip()
        if not _is_text(reason) or not _is_text(subject):
            raise HoldError("the reason and the subject must be readable text (UTF-8, no control characters)")
        if kind == "user":
            try:
                subject = normalise_local(subject)
            except InvalidJid as exc:
                raise HoldError(f"{subject!r} is not a valid user name: {exc}") from None
        elif self.groups.get(host, subject) is None:
            raise HoldError(f"there is no group {subject!r} on {host}; see `stockade group list`")
        for hold in await self.list(host):
            if (hold.kind, hold.subject) == (kind, subject):
                raise HoldError(f"the {kind} {subject} is already held on {host} (hold {hold.id}: "
                                f"{hold.reason}); release that hold first to change it", "conflict")
        hold = Hold(secrets.token_hex(6), host, kind, subject, reason, actor, self.clock.time())
        record = hold.to_json()
        del record["id"], record["host"]
        await self.store.set(host, "", hold.id, record)
        if self.audit is not None:
            await self.audit.record(host, actor, "hold.create", f"{kind}:{subject}", hold=hold.id,
                                    reason=reason)
        return hold

    async def release(self, host: str, hold_id: str, *, actor: str) -> Hold:
        """End a hold; the next purge applies retention to what it kept."""
        self._check_host(host)
        hold = next((h for h in await self.list(host) if h.id == hold_id), None)
        if hold is None:
            raise HoldError(f"there is no hold {hold_id!r} on {host}; see `stockade hold list`", "missing")
        await self.store.set(host, "", hold_id, None)
        if self.audit is not None:
            await self.audit.record(host, actor, "hold.release", f"{hold.kind}:{hold.subject}", hold=hold.id,
                                    reason=hold.reason, created=hold.created)
        return hold

    async def removal_refusal(self, host: str, username: str) -> str | None:
        """Why the account may not be removed now (a hold covers it), or None. Removing an
        account deletes its message archive, offline messages and files: a hold forbids that."""
        if host not in self.domains or username not in await self.held_users(host):
            return None
        return (f"{username}@{host} is under legal hold: removing the account would delete messages and "
                f"files the hold keeps. Release the hold first (stockade hold list / release), or end the "
                f"user's access without removing the account (stockade user revoke, or disable the user "
                f"in the directory)")

    async def held_users(self, host: str) -> set[str]:
        """The user names of `host` that are held now (user holds, and group holds' members)."""
        held: set[str] = set()
        for hold in await self.list(host):
            if hold.kind == "user":
                held.add(hold.subject)
            else:
                group = self.groups.get(host, hold.subject)
                if group is not None:
                    held.update(group.members)
        return held


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\n" for c in value)
