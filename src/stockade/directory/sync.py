"""Directory sync and LDAP logins: the company directory decides who has an account.

Per host with a [hosts.directory] table, a sync (every `sync_interval` seconds, and on demand:
`stockade directory sync`) reads every user and group from LDAP and then:

- creates an account without a password for each new directory user (they log in with their
  directory password, checked by an LDAP bind; see `verify`), and records display name and mail;
- disables users matching `disabled_filter`: their sessions end at once (<not-authorized/>
  stream error) and they cannot log in; enabling them again in the directory restores them;
- removes accounts of users no longer in the directory (all their data, like `user remove`);
- creates, updates and removes directory groups and their memberships (directory/groups.py);
  groups named in `shared_groups` are shared rosters.

Safety: nothing is changed when the directory cannot be read completely (an unreachable server,
refused service account, failed search): the error names the server and reason, is logged, and
the CLI prints it. A search that returns no user at all while accounts are managed is taken as
a misconfiguration (wrong base_dn or user_filter): nothing is removed then either. A local account
(with a password) whose name a directory user also has is left alone and reported as a conflict.

What the sync knows about each user is kept in the map store "directory_users" under the
host-wide user "" (username -> {dn, name, mail, enabled}), in memory too, so that deciding
whether a login goes to LDAP costs nothing. Another process (the CLI) may sync; `refresh()` picks
up what it stored and ends the sessions of users it disabled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..config import ConfigError, ServerConfig
from ..config.schema import DirectorySection, _is_loopback
from ..protocol.errors import StreamError
from ..protocol.jid import JID, InvalidJid, normalise_local
from ..protocol.sasl import Failure, Success
from .groups import DIRECTORY, Group, GroupService
from .ldap import DirectoryUnavailable, LdapDirectory, Snapshot

if TYPE_CHECKING:
    from ..core.accounts import AccountService
    from ..core.sessions import SessionManager
    from ..storage import Storage

log = logging.getLogger("stockade.directory")


@dataclass
class SyncReport:
    host: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    groups_changed: list[str] = field(default_factory=list)
    groups_removed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)       # "why" texts, one per problem entry
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.created)} created", f"{len(self.updated)} updated", f"{len(self.disabled)} disabled",
                 f"{len(self.enabled)} enabled again", f"{len(self.removed)} removed",
                 f"{len(self.groups_changed)} group(s) created or changed", f"{len(self.groups_removed)} group(s) removed"]
        return f"{self.host}: " + ", ".join(parts)


def check_settings(config: ServerConfig) -> None:
    """Refuse settings that would send passwords in clear across the network."""
    for i, host in enumerate(config.hosts):
        d = host.directory
        if d is None or not d.authentication or d.start_tls or d.url.startswith("ldaps://"):
            continue
        address = d.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        if not _is_loopback(address):
            raise ConfigError(config.source, f"hosts[{i}].directory.url",
                              "LDAP logins would send passwords in clear: use ldaps://, or start_tls = true, "
                              "or authentication = false")


class DirectoryService:
    """Every host's directory: sync, login checks (auth.ExternalPasswords), session revocation."""

    def __init__(self, config: ServerConfig, storage: Storage, accounts: AccountService, groups: GroupService,
                 sessions: SessionManager | None = None) -> None:
        check_settings(config)
        self.settings: dict[str, DirectorySection] = {h.domain: h.directory for h in config.hosts
                                                      if h.directory is not None}
        self.ldap = {host: LdapDirectory(s) for host, s in self.settings.items()}
        self.accounts = accounts
        self.groups = groups
        self.sessions = sessions
        self.store = storage.map("directory_users")
        self._users: dict[str, dict[str, dict[str, Any]]] = {h: {} for h in self.settings}
        self._locks = {h: asyncio.Lock() for h in self.settings}
        self._tasks: list[asyncio.Task[None]] = []
        # Called with the host after each sync this process made (app.py: with several worker
        # processes, the others then `refresh` at once instead of at their next interval).
        self.synced: list[Callable[[str], Any]] = []

    # -- state ----------------------------------------------------------------------------------
    async def load(self) -> None:
        for host in self.settings:
            self._users[host] = await self.store.get_all(host, "")

    def record(self, host: str, username: str) -> dict[str, Any] | None:
        """What the directory said about the user at the last sync (None: not a directory user)."""
        return self._users.get(host, {}).get(username)

    def manages(self, host: str, username: str) -> bool:
        return username in self._users.get(host, ())

    # -- logins ---------------------------------------------------------------------------------
    async def verify(self, host: str, username: str, password: str) -> Success | Failure:
        """Check a PLAIN password by binding to LDAP as the user (in a worker thread)."""
        settings, record = self.settings.get(host), self.record(host, username)
        if settings is None or record is None:
            return Failure("not-authorized", "", username)
        if not settings.authentication:
            log.info("login refused for %s@%s: LDAP logins are off for this host (authentication = false)",
                     username, host)
            return Failure("not-authorized", "", username)
        if not record.get("enabled", True):
            log.info("login refused for %s@%s: disabled in the directory", username, host)
            return Failure("not-authorized", "", username)
        if not await self.accounts.exists(host, username):
            return Failure("not-authorized", "", username)       # removed here; the next sync restores it
        directory = self.ldap[host]
        try:
            # Ask again now: a user disabled or removed since the last sync must not get in.
            user = await asyncio.to_thread(directory.find_user, username)
            if user is None or normalise_local(user.username) != username:
                log.info("login refused for %s@%s: no longer in the directory", username, host)
                return Failure("not-authorized", "", username)
            if user.is_disabled:
                log.info("login refused for %s@%s: disabled in the directory", username, host)
                return Failure("not-authorized", "", username)
            ok = await asyncio.to_thread(directory.check_password, user.dn, password)
        except (DirectoryUnavailable, InvalidJid) as exc:
            log.error("login of %s@%s could not be checked: %s", username, host, exc)
            return Failure("temporary-auth-failure", "the company directory cannot be reached; try again later",
                           username)
        return Success(username) if ok else Failure("not-authorized", "", username)

    # -- sync -----------------------------------------------------------------------------------
    async def sync_all(self) -> list[SyncReport | DirectoryUnavailable]:
        out: list[SyncReport | DirectoryUnavailable] = []
        for host in self.settings:
            try:
                out.append(await self.sync(host))
            except DirectoryUnavailable as exc:
                out.append(exc)
        return out

    async def sync(self, host: str) -> SyncReport:
        """One full sync of `host`. Raises DirectoryUnavailable (after logging it) with nothing changed."""
        if host not in self.settings:
            raise KeyError(f"{host!r} has no [hosts.directory] table in the configuration")
        async with self._locks[host]:
            try:
                snapshot = await asyncio.to_thread(self.ldap[host].fetch)
            except DirectoryUnavailable as exc:
                log.error("directory sync of %s failed, nothing changed: %s", host, exc)
                raise
            report = await self._apply(host, snapshot)
        log.info("directory sync: %s", report.summary())
        for text in report.conflicts + report.warnings:
            log.warning("directory sync of %s: %s", host, text)
        for callback in self.synced:
            callback(host)
        return report

    async def _apply(self, host: str, snapshot: Snapshot) -> SyncReport:
        settings, report = self.settings[host], SyncReport(host)
        known = self._users[host]
        seen: dict[str, str] = {}                     # directory name -> normalised user name
        changes: dict[str, Any] = {}
        newly_disabled = []
        for name, user in sorted(snapshot.users.items()):
            try:
                username = normalise_local(name)
            except InvalidJid as exc:
                report.conflicts.append(f"{user.dn}: {name!r} cannot be a user name ({exc}); skipped")
                continue
            if username in seen.values():
                report.conflicts.append(f"{user.dn}: another entry already has the user name {username!r}; skipped")
                continue
            old = known.get(username)
            if not await self.accounts.exists(host, username):
                await self.accounts.create_external(host, username)    # new, or removed here by hand
                report.created.append(username)
            elif old is None:
                report.conflicts.append(f"{username}@{host} is a local account with a password; it is not "
                                        f"managed by the directory (remove it to let the directory take over)")
                continue
            seen[name] = username
            new = {"dn": user.dn, "name": user.display_name, "mail": user.mail, "enabled": not user.is_disabled}
            if old is not None and old != new:
                if old.get("enabled", True) and user.is_disabled:
                    report.disabled.append(username)
                    newly_disabled.append(username)
                elif not old.get("enabled", True) and not user.is_disabled:
                    report.enabled.append(username)
                else:
                    report.updated.append(username)
            elif old is None and user.is_disabled:
                report.disabled.append(username)
            if old != new:
                changes[username] = new
        gone = sorted(set(known) - set(seen.values()))
        if gone and not snapshot.users:
            report.warnings.append(f"the directory returned no users under {settings.base_dn} matching "
                                   f"{settings.user_filter}; {len(gone)} account(s) were kept. Check base_dn and "
                                   f"user_filter")
            gone = []
        await self.store.set_many(host, "", changes)
        known.update(changes)
        for username in newly_disabled:
            self._end_sessions(host, username, "your account was disabled in the company directory")
        for username in gone:
            refusal = await self.accounts.removal_refusal(host, username)
            if refusal:
                # Under legal hold: the account and its data stay, but nobody can use it.
                record = dict(known.get(username) or {}, enabled=False, removed_from_directory=True)
                if known.get(username) != record:
                    await self.store.set(host, "", username, record)
                    known[username] = record
                    self._end_sessions(host, username, "your account was removed from the company directory")
                report.warnings.append(f"{username}@{host} is no longer in the directory but is under legal "
                                       f"hold: the account is disabled and its data kept until the hold is released")
                continue
            # Forget the record first: the account removal below ends sessions and fires the
            # removal callbacks (groups, rosters) like `stockade user remove`.
            await self.store.set(host, "", username, None)
            known.pop(username, None)
            if await self.accounts.exists(host, username):
                await self.accounts.remove(host, username, actor="directory")
            report.removed.append(username)
        await self._apply_groups(host, snapshot, seen, report)
        return report

    async def _apply_groups(self, host: str, snapshot: Snapshot, seen: dict[str, str], report: SyncReport) -> None:
        settings, known = self.settings[host], self._users[host]
        shared = set(settings.shared_groups)
        for name, entry in sorted(snapshot.groups.items()):
            current = self.groups.get(host, name)
            if current is not None and current.source != DIRECTORY:
                report.conflicts.append(f"the group {name!r} exists as a local group; the directory group "
                                        f"{entry.dn} was not applied")
                continue
            # Disabled people stay out of groups: they should not show up in shared rosters.
            members = frozenset(seen[m] for m in entry.members
                                if m in seen and known.get(seen[m], {}).get("enabled", True))
            group = Group(name, name, DIRECTORY, name in shared, members, entry.dn)
            if await self.groups.put(host, group):
                report.groups_changed.append(name)
        for group in self.groups.list(host):
            if group.source == DIRECTORY and group.id not in snapshot.groups:
                await self.groups.delete(host, group.id, source=DIRECTORY)
                report.groups_removed.append(group.id)
        for name in sorted(shared - set(snapshot.groups)):
            report.warnings.append(f"shared_groups names {name!r}, which the directory does not have")

    # -- another process synced -----------------------------------------------------------------
    async def refresh(self) -> None:
        """Pick up user records another process (the CLI) stored; end sessions of users it disabled."""
        for host in self.settings:
            async with self._locks[host]:
                stored = await self.store.get_all(host, "")
                before, self._users[host] = self._users[host], stored
            for username, record in stored.items():
                if not record.get("enabled", True) and before.get(username, {}).get("enabled", True):
                    self._end_sessions(host, username, "your account was disabled in the company directory")

    def _end_sessions(self, host: str, username: str, reason: str) -> None:
        if self.sessions is None:
            return
        sessions = self.sessions.of_user(JID(username, host, None))
        for session in sessions:
            session.close(StreamError("not-authorized", reason))
        if sessions:
            log.info("%s@%s: %d session(s) ended: %s", username, host, len(sessions), reason)

    # -- background -----------------------------------------------------------------------------
    def start(self, refresh_interval: float, *, sync: bool = True) -> None:
        """The periodic syncs (unless `sync` is false: with several worker processes, worker 0
        alone syncs) and the reading of what other processes synced or changed."""
        for host, settings in self.settings.items():
            if sync and settings.sync_interval > 0:
                self._tasks.append(asyncio.ensure_future(self._sync_every(host, settings.sync_interval)))
        self._tasks.append(asyncio.ensure_future(self._refresh_every(refresh_interval)))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _sync_every(self, host: str, interval: float) -> None:
        while True:
            try:
                await self.sync(host)
            except DirectoryUnavailable:
                pass                                    # logged by sync(); try again next time
            except Exception:
                log.exception("directory sync of %s failed", host)
            await asyncio.sleep(interval)

    async def _refresh_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.refresh_all()

    async def refresh_all(self) -> None:
        """Read what another process synced or changed: directory users, then groups."""
        try:
            await self.refresh()
            await self.groups.refresh()
        except Exception:
            log.exception("reading directory and group changes failed")


__all__ = ["DirectoryService", "DirectoryUnavailable", "SyncReport", "check_settings"]
