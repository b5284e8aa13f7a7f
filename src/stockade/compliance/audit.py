"""The audit log: who did what, when, to what, in a tamper-evident hash chain.

    audit = AuditLog(storage.audit, clock)
    await audit.record("example.com", "cli", "user.create", "alice@example.com")
    await audit.record("example.com", "alice@example.com", "auth.failure", "alice@example.com",
                       address="192.0.2.7", reason="not-authorized")
    result = await audit.verify()       # VerifyResult: intact, or the first bad entry and why

Actions are short dotted names: `auth.failure`, `auth.lockout`, `user.create`, `user.password`,
`user.remove` (recorded today), and `session.revoke`, `permission.change` for the admin
features that record them. Actors: a JID, `admin:<name>`, `system`, `cli`. `host` is the tenant
the entry belongs to, "" for server-wide entries.

The chain (storage/audit.py): every entry holds the SHA-256 of its own fields and of the entry
before it. `verify` recomputes the whole chain in id order and names the FIRST entry that does
not fit: edited (its hash no longer matches its fields), deleted (a gap in the ids, which are
never reused) or inserted / re-chained (its prev_hash is not the hash of the entry before).
Anyone who can write the database can also recompute a whole chain: keep the last hash that
`stockade audit verify` prints somewhere else, and a rewritten history no longer contains it.

Recording never fails the caller: a login or an admin action does not stop because the audit
write failed; the failure is logged as an error instead (and counted in `failed_writes`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.hooks import AccountLocked, AuthFailed, ServerStopping
from ..storage.audit import GENESIS_HASH, AuditRow, AuditStore

if TYPE_CHECKING:
    from ..core.bus import HookBus
    from ..core.clock import Clock

log = logging.getLogger("stockade.audit")

VERIFY_BATCH = 1000          # entries read per query while verifying


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of `AuditLog.verify`.

    Intact: `is_intact`, `count` entries, the last one's id and hash. Broken: `bad_id` is the
    first entry that does not fit the chain and `reason` says how; `count` entries before it
    were verified.
    """
    is_intact: bool
    count: int
    last_id: int | None = None
    last_hash: str = GENESIS_HASH
    bad_id: int | None = None
    reason: str = ""


class AuditLog:
    """Records security-relevant actions into the hash-chained audit table and checks the chain."""

    def __init__(self, store: AuditStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()
        self.failed_writes = 0

    async def record(self, host: str, actor: str, action: str, target: str, **detail: Any) -> None:
        """Append an entry; `detail` (before/after values, reason, address...) is stored as
        JSON. Never raises: a failed write is logged as an error."""
        try:
            text = json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)
            await self._store.append(self._clock.time(), host, actor, action, target, text)
        except Exception as exc:
            self.failed_writes += 1
            log.error("could not write the audit entry %s by %s on %r (host %r): %s; the action "
                      "itself went ahead; check the database", action, actor, target, host, exc)

    def record_soon(self, host: str, actor: str, action: str, target: str, **detail: Any) -> None:
        """`record` in the background, for callers that must not wait (sync hooks on the login
        path). `flush()` waits for what was queued."""
        task = asyncio.ensure_future(self.record(host, actor, action, target, **detail))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Wait until every entry queued with `record_soon` so far is written (or has failed)."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    async def entries(self, host: str | None = None, *, action: str | None = None, limit: int = 100,
                      before_id: int | None = None) -> list[dict]:
        """Entries, newest first: of one host and/or action if given, ids below `before_id`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        rows = await self._store.newest(host=host, action=action, limit=limit, before_id=before_id)
        return [_as_dict(row) for row in rows]

    async def verify(self, batch_size: int = VERIFY_BATCH) -> VerifyResult:
        """Walk the whole chain in id order; intact, or the first entry that breaks it and why."""
        count, last_id, expected_prev = 0, 0, GENESIS_HASH
        while True:
            rows = await self._store.in_order(last_id, batch_size)
            for row in rows:
                problem = _check(row, last_id, expected_prev)
                if problem:
                    return VerifyResult(False, count, last_id or None, expected_prev, row.id, problem)
                count, last_id, expected_prev = count + 1, row.id, row.hash
            if len(rows) < batch_size:
                return VerifyResult(True, count, last_id or None, expected_prev)

    # -- hooks ------------------------------------------------------------------------------------
    def subscribe(self, bus: HookBus) -> None:
        """Record failed logins and lockouts; finish queued writes before storage closes."""
        bus.on(AuthFailed, self._auth_failed)
        bus.on(AccountLocked, self._account_locked)
        bus.on(ServerStopping, self._stopping)

    def _auth_failed(self, event: AuthFailed) -> None:
        who = _account(event.host, event.username)
        self.record_soon(event.host, who, "auth.failure", who, address=event.address,
                         reason=event.reason)

    def _account_locked(self, event: AccountLocked) -> None:
        target = event.address if event.scope == "address" else _account(event.host, event.username)
        self.record_soon(event.host, "system", "auth.lockout", target, scope=event.scope,
                         address=event.address, username=event.username, until=event.until)

    async def _stopping(self, _event: ServerStopping) -> None:
        await self.flush()


def _check(row: AuditRow, last_id: int, expected_prev: str) -> str:
    """Why `row` does not fit after entry `last_id` whose hash is `expected_prev`; "" if it does."""
    if row.computed_hash() != row.hash:
        return "its stored hash does not match its contents: the entry was edited after it was written"
    if row.id != last_id + 1:
        missing = (f"entry {last_id + 1}" if row.id == last_id + 2
                   else f"entries {last_id + 1} to {row.id - 1}")
        return f"{missing} missing before it: deleted from the log"
    if row.prev_hash != expected_prev:
        before = f"entry {last_id}" if last_id else "the start of the log"
        return (f"its prev_hash does not match the hash of {before}: the entry was inserted, or "
                f"the entries were re-chained after an edit")
    return ""


def _account(host: str, username: str) -> str:
    return f"{username}@{host}" if username else host


def _as_dict(row: AuditRow) -> dict:
    try:
        detail: Any = json.loads(row.detail)
    except ValueError:
        detail = row.detail              # not JSON any more (edited): show it as it is
    return {"id": row.id, "ts": row.ts, "host": row.host, "actor": row.actor, "action": row.action,
            "target": row.target, "detail": detail, "prev_hash": row.prev_hash, "hash": row.hash}
