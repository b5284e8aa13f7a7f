"""Retention: how long each host keeps records, and the purges that apply it.

Policy ([hosts.retention], config/schema.py). Each store has a number of days: `journal_days`,
`mam_days`, `offline_days`, `files_days`, each defaulting to `default_days`; 0 means forever.
Groups only lengthen it: a member of `trading` (2555 days) keeps the longest of the store's own
value and the values of all their groups. The journal keeps at least what the user's message
archive keeps (unless `journal_may_be_shorter`). Room archives follow `mam_days`.

Legal holds (compliance/holds.py) override everything: nothing of a held user is purged, in
any store, whatever the policy says, until the hold is released.

What a purge does, per host, with `now` from the injected clock:
    journal   records older than the cutoff of EVERY participant, none of whom is held, are
              emptied (storage/retention.py: the chain still verifies). Users of another domain
              of this server count with that domain's policy and holds; remote users and rooms
              with the host's journal value
    mam       each user's items older than their cutoff are deleted, unless they are held
    offline   the same, for messages never delivered
    muc       room archives of the host's MUC service, older than the host's mam value; none while
              any hold is in force on the host (rooms name speakers by nickname)
    files     uploaded files older than the uploader's cutoff, records and bytes, unless held
Each purge is recorded in the audit log as `retention.purge` (counts per store, the host-wide
cutoffs, how many users were held, whether it was a dry run) and, in the server, a purge that
removed something also as a journal record of kind "purge". A dry run counts and deletes
nothing.

The server runs a purge of every host with a policy every `purge_interval` seconds (the
scheduler below, on the injected clock); `stockade retention purge` and the admin API run one
at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..config.schema import RetentionSection
    from ..core.clock import Clock
    from ..directory.groups import GroupService
    from ..modules.upload.catalog import Catalog
    from ..storage.retention import ArchiveOwner, RetentionStore
    from .audit import AuditLog
    from .holds import LegalHolds

log = logging.getLogger("stockade.retention")

DAY = 86400.0
STORES = ("journal", "mam", "offline", "files")
MUC_STORE = "muc_archive"


class RetentionError(Exception):
    """A purge that did not run; the text says why and what to fix."""


def longest(*days: int) -> int:
    """The longest of retention values in days, 0 (forever) being longest of all."""
    return 0 if any(d == 0 for d in days) else max(days)


class HostRetention:
    """One host's policy, as numbers of days per store and per group."""

    def __init__(self, section: RetentionSection | None) -> None:
        self.section = section
        self.is_configured = section is not None
        default = section.default_days if section is not None else 0
        self.base: dict[str, int] = {}
        for store in STORES:
            value = getattr(section, f"{store}_days", None) if section is not None else None
            self.base[store] = default if value is None else value
        self.group_days = {g.group: g.days for g in section.groups} if section is not None else {}
        self.journal_may_be_shorter = section.journal_may_be_shorter if section is not None else False
        self.purge_interval = section.purge_interval if section is not None else 0.0

    def days(self, store: str, group_ids: Iterable[str] = ()) -> int:
        """Days `store` keeps the records of a user in these groups (0: forever)."""
        group_ids = list(group_ids)
        extra = [self.group_days[g] for g in group_ids if g in self.group_days]
        days = longest(self.base[store], *extra)
        if store == "journal" and not self.journal_may_be_shorter:
            days = longest(days, self.days("mam", group_ids))
        return days

    def describe(self) -> dict[str, Any]:
        """The policy as the admin API and the CLI show it."""
        return {"configured": self.is_configured,
                "days": {store: self.days(store) for store in STORES},
                "groups": dict(sorted(self.group_days.items())),
                "journal_may_be_shorter": self.journal_may_be_shorter,
                "purge_interval": self.purge_interval}


@dataclass
class PurgeReport:
    host: str
    now: float
    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in ("journal", "mam", "offline", "muc", "files")})
    cutoffs: dict[str, float | None] = field(default_factory=dict)     # host-wide, per store
    held: list[str] = field(default_factory=list)                      # user names kept by holds
    journal_available: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "now": self.now, "dry_run": self.dry_run, "counts": dict(self.counts),
                "cutoffs": dict(self.cutoffs), "held": list(self.held),
                "journal_available": self.journal_available}

    def summary(self) -> str:
        verb = "would purge" if self.dry_run else "purged"
        parts = ", ".join(f"{n} {store}" for store, n in self.counts.items())
        held = f"; {len(self.held)} held user(s) kept" if self.held else ""
        return f"{self.host}: {verb} {parts}{held}"


class Retention:
    """Applies each host's policy, honouring legal holds; audited."""

    def __init__(self, config: ServerConfig, store: RetentionStore, groups: GroupService, holds: LegalHolds,
                 audit: AuditLog | None, clock: Clock, catalog: Catalog | None = None, journal: Any = None) -> None:
        self.store = store
        self.groups = groups
        self.holds = holds
        self.audit = audit
        self.clock = clock
        self.catalog = catalog                      # the upload catalog, when uploads are on
        self.journal = journal                      # compliance.journal.Journal in the server: purges are recorded there too
        self.policies = {h.domain: HostRetention(h.retention) for h in config.hosts}
        self._lock = asyncio.Lock()                 # one purge at a time
        # Called with (host, store) after a purge deleted items of that store ("mam", "offline"),
        # for caches that count them (modules/offline.py).
        self.on_purged: list[Callable[[str, str], None]] = []

    def policy(self, host: str) -> HostRetention:
        return self.policies[host]

    def _cutoff(self, now: float, days: int) -> float | None:
        return None if days == 0 else now - days * DAY

    def _user_days(self, policy: HostRetention, host: str, store: str, username: str) -> int:
        return policy.days(store, (g.id for g in self.groups.groups_of(host, username)))

    async def purge(self, host: str, *, dry_run: bool = False, actor: str = "system") -> PurgeReport:
        """Apply `host`'s policy now (see the module docstring); audited as retention.purge."""
        policy = self.policies[host]
        # A group named in the policy that does not exist (a typo, a renamed directory group)
        # would shorten its members' retention to the default: deleting early cannot be undone,
        # so no purge runs until the configuration is fixed.
        missing = sorted(g for g in policy.group_days if self.groups.get(host, g) is None)
        if missing:
            raise RetentionError(f"the retention group(s) {', '.join(missing)} of {host} do not exist (see "
                                 f"`stockade group list`); no purge runs until every group named in [hosts.retention] "
                                 f"exists (create it, or fix the name), so that nobody's records are deleted early")
        async with self._lock:
            now = self.clock.time()
            report = PurgeReport(host, now, dry_run)
            report.cutoffs = {store: self._cutoff(now, policy.days(store)) for store in STORES}
            if policy.is_configured:
                held = await self.holds.held_users(host)
                report.held = sorted(held)
                report.counts["journal"] = await self._purge_journal(policy, host, now, held, report)
                for store in ("mam", "offline"):
                    report.counts[store] = await self._purge_archive(policy, host, now, held, store, dry_run)
                    if report.counts[store] and not dry_run:
                        for callback in self.on_purged:
                            callback(host, store)
                report.counts["muc"] = await self._purge_rooms(policy, host, now, held, dry_run)
                report.counts["files"] = await self._purge_files(policy, host, now, held, dry_run)
        if self.audit is not None and policy.is_configured:
            await self.audit.record(host, actor, "retention.purge", host, counts=report.counts,
                                    cutoffs=report.cutoffs, held=len(report.held), dry_run=dry_run)
        if self.journal is not None and policy.is_configured and not dry_run and any(report.counts.values()):
            # The chain itself says why records were emptied: a "purge" record (a later purge may
            # empty it in turn, like any record).
            commit = self.journal.record(host, "purge", host, None, detail={
                "actor": actor, "counts": report.counts, "cutoffs": report.cutoffs, "held": len(report.held)})
            if commit is not None:
                try:
                    await commit
                except Exception as exc:
                    log.error("the purge of %s could not be recorded in the journal: %s", host, exc)
        if any(report.counts.values()):
            log.info("%s", report.summary())
        return report

    async def _purge_archive(self, policy: HostRetention, host: str, now: float, held: set[str], store: str,
                             dry_run: bool) -> int:
        cutoffs: dict[ArchiveOwner, float] = {}
        for owner in await self.store.archive_owners(store):
            if owner.host != host or owner.username in held:
                continue
            cutoff = self._cutoff(now, self._user_days(policy, host, store, owner.username))
            if cutoff is not None:
                cutoffs[owner] = cutoff
        return await self.store.purge_archive(cutoffs, dry_run=dry_run) if cutoffs else 0

    async def _purge_rooms(self, policy: HostRetention, host: str, now: float, held: set[str],
                           dry_run: bool) -> int:
        cutoff = self._cutoff(now, policy.days("mam"))
        if cutoff is None:
            return 0
        if held:
            # A room archive names speakers by their nickname in the room, not their account, so
            # a held user's part of it cannot be told apart: while any hold is in force on the
            # host, its room archives are kept whole.
            return 0
        # A room archive belongs to the host whose MUC service it is (conference.<host>): the
        # longest served domain its service domain ends with.
        served = sorted(self.policies, key=len, reverse=True)
        cutoffs = {}
        for owner in await self.store.archive_owners(MUC_STORE):
            mine = next((d for d in served if owner.host.endswith("." + d)), None)
            if mine == host:
                cutoffs[owner] = cutoff
        return await self.store.purge_archive(cutoffs, dry_run=dry_run) if cutoffs else 0

    async def _purge_journal(self, policy: HostRetention, host: str, now: float, held: set[str],
                             report: PurgeReport) -> int:
        if not await self.store.has_journal():
            report.journal_available = False
            return 0
        base = policy.days("journal")
        if base == 0:
            return 0                # groups only lengthen: nothing is old enough for anyone
        latest_cutoff = now - base * DAY
        # Users of the other domains this server serves count with their own domain's policy and
        # holds: a hold on bob@other.org keeps alice@example.com's messages to him.
        held_by_host = {host: held}
        for other in self.policies:
            if other != host:
                held_by_host[other] = await self.holds.held_users(other)
        user_cutoffs: dict[str, float | None] = {}

        def cutoff_of(jid: str) -> float | None:
            if jid not in user_cutoffs:
                username, at, domain = jid.rpartition("@")
                if at and domain in held_by_host and "/" not in jid:
                    if username in held_by_host[domain]:
                        user_cutoffs[jid] = None
                    else:
                        days = self._user_days(self.policies[domain], domain, "journal", username)
                        if domain != host:
                            days = longest(base, days)
                        user_cutoffs[jid] = self._cutoff(now, days)
                else:
                    user_cutoffs[jid] = latest_cutoff      # remote users, rooms: the host's value
            return user_cutoffs[jid]

        total, after = 0, 0
        while True:
            candidates = await self.store.journal_candidates(host, latest_cutoff, after_id=after)
            if not candidates:
                return total
            after = candidates[-1].id
            ids = []
            for row in candidates:
                cutoffs = [cutoff_of(jid) for jid in (row.participants or "").split()]
                if all(c is not None and row.ts < c for c in cutoffs):
                    ids.append(row.id)
            if report.dry_run:
                total += len(ids)
            elif ids:
                total += await self.store.purge_journal(ids, now)

    async def _purge_files(self, policy: HostRetention, host: str, now: float, held: set[str],
                           dry_run: bool) -> int:
        catalog = self.catalog
        if catalog is None:
            return 0
        await catalog.load()
        old = []
        for item in list(catalog.stored.values()):
            if item.host != host or item.username in held:
                continue
            cutoff = self._cutoff(now, self._user_days(policy, host, "files", item.username))
            if cutoff is not None and item.time < cutoff:
                old.append(item)
        if dry_run:
            return len(old)
        removed = 0
        for item in old:
            try:
                await catalog.remove(item)
                removed += 1
            except OSError as exc:
                log.error("could not delete the uploaded file %s of %s@%s for retention: %s; the next purge "
                          "tries again", item.id, item.username, host, exc)
        return removed


class RetentionScheduler:
    """Runs `Retention.purge` for every host with a policy, every host's `purge_interval`
    seconds on the injected clock: first at start, then whenever a host is due. It looks at
    the clock at least every CHECK seconds, and at once after `wake()` (a test that moved a
    fake clock, or an operator's change)."""

    CHECK = 60.0

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self._wake = asyncio.Event()
        self._due: dict[str, float] = {}
        self.runs = 0                           # completed rounds (tests wait on this)
        self._ran = asyncio.Condition()

    def wake(self) -> None:
        self._wake.set()

    async def wait_for_runs(self, count: int) -> None:
        """Wait until `count` rounds have completed."""
        async with self._ran:
            await self._ran.wait_for(lambda: self.runs >= count)

    async def run(self) -> None:
        retention = self.retention
        hosts = [h for h, p in retention.policies.items() if p.is_configured]
        if not hosts:
            return
        while True:
            self._wake.clear()          # a wake() during this round makes the next one start at once
            now = retention.clock.time()
            for host in hosts:
                if now >= self._due.get(host, now):
                    try:
                        await retention.purge(host)
                    except RetentionError as exc:
                        log.error("the retention purge of %s did not run: %s", host, exc)
                    except Exception:
                        log.exception("the retention purge of %s failed; it runs again in %g s", host,
                                      retention.policy(host).purge_interval)
                    self._due[host] = now + retention.policy(host).purge_interval
            async with self._ran:
                self.runs += 1
                self._ran.notify_all()
            wait = min(self.CHECK, *(max(0.0, self._due[h] - retention.clock.time()) for h in hosts))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.01))
            except asyncio.TimeoutError:
                pass
