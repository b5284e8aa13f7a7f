"""What an administrator can do, checked and audited in one place for the API and the console.

Every method takes the acting `Principal` first, checks its permission and tenant scope with
the table in roles.py, calls the service that does the work (accounts, sessions, groups, audit),
and records the change in the audit log with actor `admin:NAME`. Account creation, password
changes and removal are recorded by the accounts service itself, with the same actor.

A refusal is an `ActionRefused` with an HTTP status and a text saying what to fix; the API and
the console show it as it is.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.accounts import AccountError, RemovalRefused
from ..core.lockouts import account_key
from ..directory.groups import GroupError
from ..policy.permissions import FEATURES, PermissionsError, Rule
from . import roles
from .identities import AdminError, Principal

if TYPE_CHECKING:
    from ..compliance.audit import AuditLog
    from ..core.accounts import AccountService
    from ..core.clock import Clock
    from ..core.lockouts import LockoutRegistry
    from ..directory.groups import GroupService
    from ..modules.approved_clients import ApprovedClients
    from ..policy.permissions import Permissions
    from .identities import AdminDirectory
    from .live import LiveSessions

log = logging.getLogger(__name__)

SESSION_ENDED_TEXT = "this session was ended by an administrator"
MAX_AUDIT_PAGE = 500
RATE_WINDOW = 60.0              # seconds between two readings of the received-stanza total


class ActionRefused(Exception):
    """An admin action that was not done; `status` is the HTTP status, the text what to fix."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def _forbidden(reason: str) -> ActionRefused:
    return ActionRefused(403, f"forbidden: {reason}")


class StanzaRate:
    """Stanzas received from clients per minute, for the dashboard, from two readings of a total
    the server keeps anyway (net/metrics.StanzasReceived: the sessions' XEP-0198 handled counts)
    taken a minute apart by `run`. Nothing is counted per stanza for it."""

    def __init__(self, total: Callable[[], int | Awaitable[int]], clock: Clock) -> None:
        self.total = total          # with several workers, asks them all (admin/live.py)
        self.clock = clock
        self._readings: list[tuple[float, int]] = []     # the last two (monotonic time, total)

    def sample(self, total: int | None = None) -> None:
        """Take a reading (`run` does, once a minute): `total`, or the total read now."""
        if total is None:
            read = self.total()
            assert isinstance(read, int), "a total that must be awaited is read by run()"
            total = read
        self._readings = [*self._readings[-1:], (self.clock.monotonic(), total)]

    def per_minute(self) -> float | None:
        """The rate between the last two readings, per minute; None before there are two."""
        if len(self._readings) < 2:
            return None
        (t0, n0), (t1, n1) = self._readings
        if t1 <= t0:
            return None
        return max(0, n1 - n0) * 60.0 / (t1 - t0)

    async def run(self) -> None:
        while True:
            try:
                total = self.total()
                self.sample(await total if inspect.isawaitable(total) else total)
            except ActionRefused as exc:           # a worker did not answer: no reading this time
                log.warning("could not read the stanzas received: %s", exc)
            await asyncio.sleep(RATE_WINDOW)


@dataclass
class AdminActions:
    directory: AdminDirectory
    accounts: AccountService
    live: LiveSessions                                  # the sessions of every worker process
    groups: GroupService
    audit: AuditLog
    lockouts: LockoutRegistry
    clock: Clock
    domains: set[str]
    approved_clients: ApprovedClients | None = None     # when the module is loaded
    permissions: Permissions | None = None              # policy/permissions.py
    stanza_rate: StanzaRate | None = None               # the dashboard's stanzas per minute
    ediscovery: Any = None                              # compliance/ediscovery.py EDiscovery (admin/compliance.py)
    retention: Any = None                               # admin/retention.py RetentionAdmin: holds, purges
    policy: Any = None                                  # admin/policy.py PolicyAdmin: policy, quarantine

    # -- checks ---------------------------------------------------------------------------------
    def check(self, who: Principal, permission: str, host: str | None = None) -> None:
        """Refuse (403/404) unless `who` may use `permission` on `host`."""
        reason = who.refusal(permission, None)
        if reason:
            raise _forbidden(reason)
        if host is not None:
            if host not in self.domains:
                raise ActionRefused(404, f"{host!r} is not a host this server serves")
            reason = who.refusal(permission, host)
            if reason:
                raise _forbidden(reason)

    def may(self, who: Principal, permission: str, host: str | None = None) -> bool:
        return who.may(permission, host)

    def _username(self, name: str, field: str = "username") -> str:
        try:
            return self.accounts.normalise_username(name)
        except AccountError as exc:
            raise ActionRefused(422, str(exc), field) from None

    async def _existing(self, host: str, user: str) -> str:
        username = self._username(user, "user")
        if not await self.accounts.exists(host, username):
            raise ActionRefused(404, f"there is no account {username}@{host}")
        return username

    async def _record(self, who: Principal, host: str, action: str, target: str, **detail: Any) -> None:
        if who.token_id:
            detail["token"] = who.token_id
        await self.audit.record(host, who.actor, action, target, **detail)

    # -- hosts and users ------------------------------------------------------------------------
    def hosts(self, who: Principal) -> list[str]:
        return who.visible_hosts(self.domains)

    async def list_users(self, who: Principal, host: str) -> list[dict[str, Any]]:
        self.check(who, roles.USERS_READ, host)
        online = await self.live.online(host)
        return [{"username": u, "online": u in online} for _, u in sorted(await self.accounts.list(host))]

    async def create_user(self, who: Principal, host: str, username: str, password: str) -> str:
        self.check(who, roles.USERS_CREATE, host)
        username = self._username(username)
        if await self.accounts.exists(host, username):
            raise ActionRefused(409, f"{username}@{host} already exists; choose another user name", "username")
        try:
            self.accounts.check_password(password, host, username)
            created = await self.accounts.create(host, username, password, actor=who.actor)
        except AccountError as exc:
            status = 409 if "already exists" in str(exc) else 422
            raise ActionRefused(status, str(exc), "username" if status == 409 else "password") from None
        await self.live.changed("accounts")
        return created

    async def delete_user(self, who: Principal, host: str, user: str) -> None:
        self.check(who, roles.USERS_DELETE, host)
        username = await self._existing(host, user)
        try:
            await self.accounts.remove(host, username, actor=who.actor)
        except RemovalRefused as exc:
            raise ActionRefused(409, str(exc)) from None
        except AccountError as exc:
            raise ActionRefused(404, str(exc)) from None
        await self.live.changed("accounts")          # its sessions end in its home worker

    async def set_password(self, who: Principal, host: str, user: str, password: str) -> None:
        self.check(who, roles.USERS_PASSWORD, host)
        username = await self._existing(host, user)
        try:
            await self.accounts.set_password(host, username, password, actor=who.actor)
        except AccountError as exc:
            raise ActionRefused(422, str(exc), "password") from None

    async def unlock(self, who: Principal, host: str, user: str) -> bool:
        """End the account's login lockout; True when it was locked."""
        self.check(who, roles.USERS_UNLOCK, host)
        username = await self._existing(host, user)
        was_locked = await self.lockouts.unlock(account_key(host, username))
        await self._record(who, host, "user.unlock", f"{username}@{host}",
                           before={"locked": was_locked}, after={"locked": False})
        return was_locked

    async def revoke(self, who: Principal, host: str, user: str) -> int:
        """End every session of the account (resumable ones too), in whichever worker holds them;
        how many were live."""
        self.check(who, roles.USERS_REVOKE, host)
        username = await self._existing(host, user)
        before = await self.live.count_of(host, username)
        ended = await self.live.revoke(host, username)
        await self._record(who, host, "session.revoke", f"{username}@{host}",
                           before={"sessions": before}, after={"sessions": 0}, ended=ended)
        return ended

    # -- sessions -------------------------------------------------------------------------------
    async def list_sessions(self, who: Principal, host: str) -> list[dict[str, Any]]:
        self.check(who, roles.SESSIONS_READ, host)
        return await self.live.described(host)

    async def end_session(self, who: Principal, host: str, user: str, resource: str) -> dict[str, str]:
        """End one session; its client gets a <policy-violation/> stream error saying why."""
        self.check(who, roles.SESSIONS_END, host)
        before = await self.live.end(host, self._username(user, "user"), resource)
        if before is None:
            raise ActionRefused(404, f"there is no session {user}@{host}/{resource}; list them with "
                                     f"GET /hosts/{host}/sessions")
        await self._record(who, host, "session.end", before["jid"], before=before, after=None)
        return before

    # -- groups ---------------------------------------------------------------------------------
    def list_groups(self, who: Principal, host: str) -> list[dict[str, Any]]:
        self.check(who, roles.GROUPS_READ, host)
        return [{"id": g.id, "name": g.name, "source": g.source, "shared": g.shared, "members": sorted(g.members)}
                for g in self.groups.list(host)]

    @staticmethod
    def _group_refused(exc: GroupError) -> ActionRefused:
        text = str(exc)
        if text.startswith("there is no group"):
            return ActionRefused(404, text)
        if "already exists" in text or "directory" in text:
            return ActionRefused(409, text)
        return ActionRefused(422, text)

    async def create_group(self, who: Principal, host: str, group_id: str, name: str = "",
                           shared: bool = False) -> dict[str, Any]:
        self.check(who, roles.GROUPS_WRITE, host)
        try:
            group = await self.groups.create(host, group_id, name=name, shared=shared)
        except GroupError as exc:
            raise self._group_refused(exc) from None
        await self._record(who, host, "group.create", group.id, before=None, after=group.to_json())
        await self.live.changed("groups")
        return {"id": group.id, "name": group.name, "source": group.source, "shared": group.shared, "members": []}

    async def set_members(self, who: Principal, host: str, group_id: str, members: list[str]) -> list[str]:
        """Make `members` the group's exact membership; returns it normalised."""
        self.check(who, roles.GROUPS_WRITE, host)
        group = self.groups.get(host, group_id)
        if group is None:
            raise ActionRefused(404, f"there is no group {group_id!r} on {host}")
        try:
            wanted = self.groups.normalise_members(members)
        except GroupError as exc:
            raise ActionRefused(422, str(exc), "members") from None
        unknown = sorted([m for m in wanted if not await self.accounts.exists(host, m)])
        if unknown:
            raise ActionRefused(422, f"no such account on {host}: {', '.join(unknown[:10])}", "members")
        try:
            after = await self.groups.set_members(host, group.id, add=wanted - group.members,
                                                  remove=group.members - wanted)
        except GroupError as exc:
            raise self._group_refused(exc) from None
        await self._record(who, host, "group.members", group.id, before=sorted(group.members),
                           after=sorted(after.members))
        await self.live.changed("groups")            # shared rosters: each worker pushes to its users
        return sorted(after.members)

    async def delete_group(self, who: Principal, host: str, group_id: str) -> None:
        self.check(who, roles.GROUPS_WRITE, host)
        group = self.groups.get(host, group_id)
        if group is None:
            raise ActionRefused(404, f"there is no group {group_id!r} on {host}")
        try:
            await self.groups.delete(host, group.id)
        except GroupError as exc:
            raise self._group_refused(exc) from None
        await self._record(who, host, "group.delete", group.id, before=group.to_json(), after=None)
        await self.live.changed("groups")

    # -- feature permissions and approved clients ------------------------------------------------
    def _permissions(self) -> Permissions:
        if self.permissions is None:
            raise ActionRefused(503, "feature permissions are not available on this server (no policy service)")
        return self.permissions

    @staticmethod
    def _feature(feature: str) -> None:
        if feature not in FEATURES:
            raise ActionRefused(404, f"{feature!r} is not a feature with permissions; the features are "
                                     f"{', '.join(FEATURES)}", "feature")

    def list_permissions(self, who: Principal, host: str) -> list[dict[str, Any]]:
        """Per feature: the configured rule, the runtime override (None: none) and the rule in force."""
        self.check(who, roles.PERMISSIONS_READ, host)
        service = self._permissions()
        configured, overrides, effective = service.configured(host), service.overrides(host), service.get(host)
        out = []
        for feature, info in FEATURES.items():
            override = overrides.get(feature)
            out.append({"feature": feature, "label": info.label,
                        "configured": configured.get(feature, Rule()).to_json(),
                        "override": None if override is None else override.to_json(),
                        "effective": effective[feature].to_json(),
                        "source": "override" if override is not None else
                                  "configuration" if feature in configured else "open"})
        return out

    async def set_permission(self, who: Principal, host: str, feature: str, deny: list[str],
                             allow_only: list[str] | None) -> dict[str, Any]:
        """Replace the rule of one feature on one host; audited by the service as admin:NAME."""
        self.check(who, roles.PERMISSIONS_WRITE, host)
        self._feature(feature)
        service = self._permissions()
        for field_name, names in (("deny", deny), ("allow_only", allow_only or [])):
            unknown = sorted({n.strip() for n in names if self.groups.get(host, n.strip()) is None})
            if unknown:
                known = ", ".join(g.id for g in self.groups.list(host)) or "none yet"
                raise ActionRefused(422, f"no such group on {host}: {', '.join(unknown[:10])} (groups: {known}); "
                                         "create it first", field_name)
        try:
            rule = await service.set(host, feature, deny, allow_only=allow_only, actor=who.actor)
        except PermissionsError as exc:
            raise ActionRefused(422, str(exc)) from None
        await self.live.changed("permissions")
        return {"feature": feature, **rule.to_json()}

    async def reset_permission(self, who: Principal, host: str, feature: str) -> dict[str, Any]:
        """Forget the runtime rule of a feature: the configured rule (returned) applies again."""
        self.check(who, roles.PERMISSIONS_WRITE, host)
        self._feature(feature)
        try:
            rule = await self._permissions().reset(host, feature, actor=who.actor)
        except PermissionsError as exc:
            raise ActionRefused(422, str(exc)) from None
        await self.live.changed("permissions")
        return {"feature": feature, **rule.to_json()}

    def client_policy(self, who: Principal, host: str) -> dict[str, Any]:
        """The approved-client policy in force (server-wide, from the configuration: read-only)."""
        self.check(who, roles.PERMISSIONS_READ, host)
        clients = self.approved_clients
        if clients is None:
            return {"loaded": False, "enforcing": False, "allow": [], "caps_nodes": [],
                    "refuse_unanswered": False, "record_software": False}
        return {"loaded": True, "enforcing": clients.is_enforcing, "allow": [e.text for e in clients.allowed],
                "caps_nodes": sorted(clients.nodes), "refuse_unanswered": bool(clients.options.refuse_unanswered),
                "record_software": bool(clients.options.record_software)}

    # -- audit ----------------------------------------------------------------------------------
    async def audit_entries(self, who: Principal, host: str, *, limit: int = 50, before_id: int | None = None,
                            action: str | None = None) -> list[dict[str, Any]]:
        self.check(who, roles.AUDIT_READ, host)
        limit = max(1, min(limit, MAX_AUDIT_PAGE))
        return await self.audit.entries(host, action=action, limit=limit, before_id=before_id)

    async def verify_audit(self, who: Principal) -> dict[str, Any]:
        self.check(who, roles.AUDIT_VERIFY)
        result = await self.audit.verify()
        return {"intact": result.is_intact, "count": result.count, "last_id": result.last_id,
                "last_hash": result.last_hash, "bad_id": result.bad_id, "reason": result.reason}

    async def dashboard(self, who: Principal) -> dict[str, Any]:
        hosts = self.hosts(who)
        per_host = []
        failures: list[dict[str, Any]] = []
        counts = await self.live.counts(hosts)
        for host in hosts:
            online, sessions = counts[host]
            per_host.append({"host": host, "online": online, "sessions": sessions,
                             "accounts": self.accounts.count(host)})
            if who.may(roles.AUDIT_READ, host):
                failures += await self.audit.entries(host, action="auth.failure", limit=10)
        failures.sort(key=lambda e: e["id"], reverse=True)
        # Server-wide traffic: shown only to an admin of every host (a tenant admin would see
        # the other tenants' activity in it).
        rate = None
        if self.stanza_rate is not None and set(hosts) >= self.domains:
            rate = self.stanza_rate.per_minute()
        return {"hosts": per_host, "failures": failures[:10],
                "stanzas_per_minute": None if rate is None else round(rate)}

    # -- tokens ---------------------------------------------------------------------------------
    async def create_token(self, who: Principal, scopes: list[str], days: float, note: str = "") -> tuple[str, Any]:
        self.check(who, roles.TOKENS)
        try:
            token, info = await self.directory.create_token(who, scopes, days, note)
        except AdminError as exc:
            raise ActionRefused(403 if "do not hold" in str(exc) else 422, str(exc), "scopes") from None
        await self._record(who, "", "admin.token.create", who.admin.name,
                           after={"id": info.id, "scopes": list(info.scopes), "expires": info.expires})
        return token, info

    async def list_tokens(self, who: Principal) -> list[Any]:
        self.check(who, roles.TOKENS)
        return await self.directory.tokens_of(who.admin.name)

    async def revoke_token(self, who: Principal, token_id: str) -> None:
        self.check(who, roles.TOKENS)
        if not await self.directory.revoke_token(who.admin.name, token_id):
            raise ActionRefused(404, f"you have no token {token_id!r}; list yours with GET /tokens")
        await self._record(who, "", "admin.token.revoke", who.admin.name, before={"id": token_id}, after=None)
