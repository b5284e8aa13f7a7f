"""`stockade retention purge` and `stockade hold add | list | release`, beside a running server.

    $ stockade hold add alice --host example.com --reason "matter 2025-17"
    hold 3f9c0a1b2d4e on user alice (example.com)
    $ stockade hold list
    3f9c0a1b2d4e  example.com  user alice   since 2025-01-31 10:15:00 UTC by cli: matter 2025-17
    $ stockade retention purge --dry-run
    example.com: would purge 120 journal, 80 mam, 0 offline, 0 muc, 3 files; 1 held user(s) kept
    $ stockade hold release 3f9c0a1b2d4e --host example.com

They work on the same database as the server: a hold made here protects from the server's next
purge on. A purge here deletes uploaded files and their records too; a running server still
lists them until its next purge or restart (a download of such a file answers 404).
Exit status as in cli.py: 0 done, 1 refused with the reason.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any, Callable

from .config import ServerConfig, resolve_path


def add_parser(sub: Any) -> None:
    retention = sub.add_parser("retention", help="apply the retention policy ([hosts.retention])")
    rsub = retention.add_subparsers(dest="action", required=True)
    p = rsub.add_parser("purge", help="purge records older than the policy keeps (legal holds are honoured)")
    p.add_argument("--dry-run", action="store_true", help="count what would be purged; delete nothing")
    p.add_argument("--host", help="only this domain (default: every domain with a [hosts.retention] table)")
    p = rsub.add_parser("show", help="show each domain's retention policy and holds")
    p.add_argument("--host", help="only this domain")

    hold = sub.add_parser("hold", help="legal holds: keep a user's or a group's records whatever the retention")
    hsub = hold.add_subparsers(dest="action", required=True)
    p = hsub.add_parser("add", help="hold a user (or, with --group, a group)")
    p.add_argument("subject", help="the user name or user@domain (with --group: the group's id)")
    p.add_argument("--group", action="store_true", help="the subject is a group: hold its members")
    p.add_argument("--reason", required=True, help="the case or matter (recorded in the audit log)")
    p.add_argument("--host", help="the domain (needed when the server serves several)")
    p = hsub.add_parser("list", help="list the holds in force")
    p.add_argument("--host", help="only this domain")
    p = hsub.add_parser("release", help="release a hold (the next purge applies retention again)")
    p.add_argument("id", help="the hold's id (see `stockade hold list`)")
    p.add_argument("--host", help="the domain (needed when the server serves several)")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _host(config: ServerConfig, host: str | None) -> str:
    if host:
        if host not in config.domains:
            raise ValueError(f"{host!r} is not a domain this server serves (served: {', '.join(config.domains)})")
        return host
    if len(config.domains) != 1:
        raise ValueError(f"this server serves several domains ({', '.join(config.domains)}): name one with --host")
    return config.domains[0]


async def _open(config: ServerConfig, open_groups: Callable[..., Any]) -> tuple[Any, Any, Any, Any]:
    """Storage, groups, holds and retention, as the server builds them (the upload catalog too)."""
    from .compliance.audit import AuditLog
    from .compliance.holds import STORE as HOLDS_STORE, LegalHolds
    from .compliance.retention import Retention
    from .core.clock import SystemClock
    from .modules.upload.files import FileStore
    storage, accounts, groups = await open_groups(config)
    clock = SystemClock()
    audit = AuditLog(storage.audit, clock)
    domains = set(config.domains)
    holds = LegalHolds(storage.map(HOLDS_STORE), groups, audit, clock, domains)
    catalog = None
    if config.http.enabled:
        data_dir = resolve_path(config, config.server.data_dir)
        catalog = StoredUploads(storage.map("uploads"), FileStore(data_dir / "uploads"), domains)
    retention = Retention(config, storage.retention(), groups, holds, audit, clock, catalog=catalog)
    return storage, groups, holds, retention


class StoredUploads:
    """The upload records as the purge needs them (`load`, `stored`, `remove`), read from the
    store. Unlike the server's Catalog it never touches files being received: a running server
    may be receiving uploads into the same folder right now."""

    def __init__(self, store: Any, files: Any, domains: set[str]) -> None:
        self.store = store
        self.files = files
        self.domains = domains
        self.stored: dict[str, Any] = {}
        self._loaded = False

    async def load(self) -> None:
        from .modules.upload.catalog import StoredFile
        if self._loaded:
            return
        for host in sorted(self.domains):
            for file_id, record in (await self.store.get_all(host, "")).items():
                try:
                    self.stored[file_id] = StoredFile.from_record(host, file_id, record)
                except (KeyError, TypeError, ValueError):
                    continue            # unreadable: the server reports it at its next start
        self._loaded = True

    async def remove(self, item: Any) -> None:
        """The record first, then the bytes (as the server's Catalog does)."""
        self.stored.pop(item.id, None)
        await self.store.set(item.host, "", item.id, None)
        await self.files.delete(item.id)


async def retention_command(config: ServerConfig, args: argparse.Namespace, open_groups: Callable[..., Any],
                            split_jid: Callable[[str], tuple[str, str]], fail: Callable[..., int]) -> int:
    from .compliance.holds import HoldError
    from .compliance.retention import RetentionError
    from .storage import StorageError
    try:
        hosts = [_host(config, args.host)] if args.host or args.command == "hold" and args.action != "list" \
            else list(config.domains)
        subject = ""
        if args.command == "hold" and args.action == "add":
            subject = args.subject
            if "@" in subject and not args.group:
                domain, subject = split_jid(subject)
                if domain != hosts[0]:
                    return fail(f"{args.subject} is not on {hosts[0]}; give --host {domain}")
    except ValueError as exc:
        return fail(str(exc))
    try:
        storage, groups, holds, retention = await _open(config, open_groups)
    except (StorageError, OSError) as exc:
        return fail(f"cannot open the database: {exc}")
    try:
        if args.command == "retention":
            return await _retention(args, hosts, holds, retention, fail)
        if args.action == "add":
            hold = await holds.create(hosts[0], "group" if args.group else "user", subject, reason=args.reason,
                                      actor="cli")
            print(f"hold {hold.id} on {hold.kind} {hold.subject} ({hold.host})")
        elif args.action == "release":
            hold = await holds.release(hosts[0], args.id, actor="cli")
            print(f"released hold {hold.id} on {hold.kind} {hold.subject} ({hold.host}); the next purge applies "
                  f"retention to what it kept")
        else:
            found = [h for host in hosts for h in await holds.list(host)]
            if not found:
                print("no legal hold is in force")
            for h in found:
                print(f"{h.id}  {h.host}  {h.kind} {h.subject}   since {_when(h.created)} by {h.actor}: {h.reason}")
        return 0
    except (HoldError, RetentionError) as exc:
        return fail(str(exc))
    except StorageError as exc:
        return fail(f"the database refused the operation: {exc}")
    finally:
        await storage.close()


async def _retention(args: argparse.Namespace, hosts: list[str], holds: Any, retention: Any,
                     fail: Callable[..., int]) -> int:
    if args.action == "show":
        for host in hosts:
            policy = retention.policy(host).describe()
            days = ", ".join(f"{store} {d or 'forever'}" for store, d in policy["days"].items())
            groups = ", ".join(f"{g} {d or 'forever'}" for g, d in policy["groups"].items()) or "none"
            state = "" if policy["configured"] else " (no [hosts.retention] table: nothing is purged)"
            print(f"{host}{state}: days: {days}; groups: {groups}; holds: {len(await holds.list(host))}")
        return 0
    configured = [h for h in hosts if retention.policy(h).is_configured]
    if not configured:
        return fail(f"no retention policy: add a [hosts.retention] table to "
                    f"{'the domain' if args.host else 'a [[hosts]] entry'}; nothing was purged")
    for host in configured:
        report = await retention.purge(host, dry_run=args.dry_run, actor="cli")
        print(report.summary())
        if not report.journal_available:
            print("  note: this database has no compliance journal yet; only the other stores were purged")
    return 0
