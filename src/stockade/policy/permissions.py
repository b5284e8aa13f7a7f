"""Per-group feature permissions: who may upload files, create rooms, reach other servers, ...

Features declare a permission and ask this service; the service decides (the model is prosody's
`module:may`). The rules of each host come from its configuration:

    [[hosts]]
    domain = "example.com"
    [hosts.permissions.deny]            # members of these groups may not
    upload = ["contractors"]
    federation = ["contractors"]
    [hosts.permissions.allow_only]      # only members of these groups may
    muc_create = ["staff"]

and may be replaced at runtime, feature by feature (`set`, `reset`: the admin API), overrides
stored in the key-value store "permissions" under (host, ""). The rule of one feature:

1. a member of a group in `deny` may not use it;
2. when `allow_only` is set, a user in none of its groups may not use it (`[]`: nobody may);
3. otherwise the user may. Deny wins over allow_only.

Groups are named by their id (as `stockade group list` shows it), on the user's own host.

Where each feature is enforced, and how a refusal looks (docs/permissions.md has the details):

    upload                  modules/upload/service.py, the slot request       <forbidden/>
    muc_create              modules/muc/service.py, creating a new room       <forbidden/>
    history                 XEP-0313 queries: modules/mam, room archives;     <forbidden/>
                            room history on entering (modules/muc/room.py)    (none sent)
    federation              here (StanzaFromClient): a stanza to a domain     <policy-violation/>
                            this server does not serve
    web_client              here (SessionBound): a WebSocket login            stream error <policy-violation/>
    presence_outside_group  here (StanzaToLocal): available presence to an    withheld, no error
                            account that shares no group with the user

Cost: a host without rules costs one dict lookup per question, and the three hooks above are
registered only while some host has a rule for their feature, so a server without permissions
pays nothing on the message path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..config.schema import FeatureGroupsSection, PermissionsSection
from ..core.hooks import HANDLED, POLICY, SessionBound, StanzaFromClient, StanzaToLocal
from ..core.verdict import Deny
from ..protocol.errors import StreamError
from ..protocol.jid import try_jid

if TYPE_CHECKING:
    from ..compliance.audit import AuditLog
    from ..config import ServerConfig
    from ..core.bus import HookBus
    from ..core.router import Router
    from ..directory.groups import GroupService
    from ..storage.stores import KeyValueStore

log = logging.getLogger(__name__)

STORE = "permissions"


@dataclass(frozen=True, slots=True)
class Feature:
    label: str          # how a person calls it, the start of a refusal text
    condition: str      # the stanza (or stream) error of a refusal


FEATURES: dict[str, Feature] = {
    "upload": Feature("file upload", "forbidden"),
    "muc_create": Feature("creating chat rooms", "forbidden"),
    "federation": Feature("messaging people on other servers", "policy-violation"),
    "web_client": Feature("signing in with the web client", "policy-violation"),
    "history": Feature("reading the message archive", "forbidden"),
    "presence_outside_group": Feature("showing your presence outside your groups", "policy-violation"),
}


class PermissionsError(Exception):
    """A refused change of permissions; the text says why and what to do."""


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may use one feature on one host."""
    deny: frozenset[str] = frozenset()
    allow_only: frozenset[str] | None = None       # None: not restricted to some groups

    @property
    def is_open(self) -> bool:
        return not self.deny and self.allow_only is None

    def to_json(self) -> dict[str, Any]:
        return {"deny": sorted(self.deny),
                "allow_only": None if self.allow_only is None else sorted(self.allow_only)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        allow_only = data.get("allow_only")
        return cls(frozenset(data.get("deny") or ()), None if allow_only is None else frozenset(allow_only))


def rules_from_config(section: PermissionsSection | None) -> dict[str, Rule]:
    """The configured rules of one host, by feature (open features left out)."""
    if section is None:
        return {}
    rules = {}
    for f in fields(FeatureGroupsSection):
        deny = getattr(section.deny, f.name) if section.deny is not None else None
        allow_only = getattr(section.allow_only, f.name) if section.allow_only is not None else None
        rule = Rule(frozenset(g.strip() for g in deny or ()),
                    None if allow_only is None else frozenset(g.strip() for g in allow_only))
        if not rule.is_open:
            rules[f.name] = rule
    return rules


# The features enforced by a hook of this service, and that hook.
HOOKED = {"federation": StanzaFromClient, "web_client": SessionBound, "presence_outside_group": StanzaToLocal}


class Permissions:
    """The permission rules of every host, and the answer to "may this user use that feature?"."""

    def __init__(self, config: ServerConfig, groups: GroupService, store: KeyValueStore, *,
                 router: Router | None = None, audit: AuditLog | None = None) -> None:
        self.groups = groups
        self.store = store
        self.router = router
        self.audit = audit
        self.domains = set(config.domains)
        self._configured = {h.domain: rules_from_config(h.permissions) for h in config.hosts}
        self._overrides: dict[str, dict[str, Rule]] = {d: {} for d in self.domains}
        # Effective rules: host -> feature -> rule, only hosts with at least one rule (the dict
        # every question looks at first), and the same by feature for the hooks.
        self._rules: dict[str, dict[str, Rule]] = {}
        self._by_feature: dict[str, dict[str, Rule]] = {f: {} for f in FEATURES}
        self._bus: HookBus | None = None
        # Bound once: HookBus.off finds a handler by identity.
        self._handlers: dict[str, Callable[[Any], Any]] = {
            "federation": self._federation, "web_client": self._web_client,
            "presence_outside_group": self._presence}
        self._hooked: set[str] = set()
        self._recompute()
        for host, rules in sorted(self._configured.items()):
            self._warn_unknown_groups(host, rules)

    # -- questions (memory only) ----------------------------------------------------------------
    def may(self, host: str, username: str, feature: str) -> bool:
        """May the account username@host use the feature?"""
        return self.check(host, username, feature) is None

    def check(self, host: str, username: str, feature: str) -> Deny | None:
        """None when the account may use the feature; otherwise the refusal to send, with a text
        that names the feature and the group."""
        rules = self._rules.get(host)
        if rules is None:
            return None
        rule = rules.get(feature)
        if rule is None:
            return None
        return self._judge(host, username, feature, rule)

    def refuse(self, host: str, username: str, feature: str) -> Deny | None:
        """`check`, and a refusal is written to the audit log (for refused actions, not for
        presence that is withheld)."""
        denial = self.check(host, username, feature)
        if denial is not None and self.audit is not None:
            who = f"{username}@{host}"
            self.audit.record_soon(host, who, "permission.deny", who, feature=feature, reason=denial.text)
        return denial

    def get(self, host: str) -> dict[str, Rule]:
        """The rule in force for every feature of the host (an open Rule() when there is none)."""
        self._check_host(host)
        rules = self._rules.get(host, {})
        return {feature: rules.get(feature, Rule()) for feature in FEATURES}

    def configured(self, host: str) -> dict[str, Rule]:
        """The rules the configuration gives the host (features it leaves open are left out)."""
        self._check_host(host)
        return dict(self._configured.get(host, {}))

    def overrides(self, host: str) -> dict[str, Rule]:
        """The rules set at runtime (they replace the configured rule of their feature)."""
        self._check_host(host)
        return dict(self._overrides.get(host, {}))

    def _judge(self, host: str, username: str, feature: str, rule: Rule) -> Deny | None:
        member_of = {g.id for g in self.groups.groups_of(host, username)}
        info = FEATURES[feature]
        denied = sorted(member_of & rule.deny)
        if denied:
            text = f"{info.label} is not allowed for members of group {denied[0]}; ask your administrator"
        elif rule.allow_only is not None and not member_of & rule.allow_only:
            if rule.allow_only:
                text = (f"{info.label} is allowed only for members of group "
                        f"{' or '.join(sorted(rule.allow_only))}; ask your administrator")
            else:
                text = f"{info.label} is not allowed on {host}; ask your administrator"
        else:
            return None
        return Deny(info.condition, text, rule=f"permissions.{feature}")

    # -- changes at runtime ---------------------------------------------------------------------
    async def load(self) -> None:
        """Read the overrides stored by earlier runs (or by another process: `refresh`)."""
        for host in sorted(self.domains):
            stored = await self.store.get(host, "") or {}
            unknown = sorted(set(stored) - set(FEATURES))
            if unknown:
                log.warning("stored permissions of %s name unknown features %s; ignored", host, ", ".join(unknown))
            self._overrides[host] = {f: Rule.from_json(v) for f, v in stored.items() if f in FEATURES}
        self._recompute()

    refresh = load

    async def set(self, host: str, feature: str, deny: Iterable[str] = (), *,
                  allow_only: Iterable[str] | None = None, actor: str = "system") -> Rule:
        """Replace the rule of one feature on one host (until `reset`): the groups in `deny` may
        not use it; with `allow_only`, only those groups may. Raises PermissionsError."""
        self._check_host(host)
        self._check_feature(feature)
        rule = Rule(self._check_groups(host, deny),
                    None if allow_only is None else self._check_groups(host, allow_only))
        overrides = {**self._overrides.get(host, {}), feature: rule}
        await self._store_overrides(host, overrides, actor, feature, rule)
        return rule

    async def reset(self, host: str, feature: str, *, actor: str = "system") -> Rule:
        """Forget the runtime rule of a feature: the configured rule applies again (returned)."""
        self._check_host(host)
        self._check_feature(feature)
        overrides = {f: r for f, r in self._overrides.get(host, {}).items() if f != feature}
        await self._store_overrides(host, overrides, actor, feature, None)
        return self.get(host)[feature]

    async def _store_overrides(self, host: str, overrides: dict[str, Rule], actor: str, feature: str,
                               rule: Rule | None) -> None:
        before = self.get(host)[feature]
        await self.store.set(host, "", {f: r.to_json() for f, r in sorted(overrides.items())} or None)
        self._overrides[host] = overrides
        self._recompute()
        if self.audit is not None:
            await self.audit.record(host, actor, "permission.change", host, feature=feature,
                                    before=before.to_json(), after=self.get(host)[feature].to_json(),
                                    source="override" if rule is not None else "configuration")

    def _check_host(self, host: str) -> None:
        if host not in self.domains:
            raise PermissionsError(f"{host!r} is not a domain this server serves "
                                   f"(served: {', '.join(sorted(self.domains))})")

    @staticmethod
    def _check_feature(feature: str) -> None:
        if feature not in FEATURES:
            raise PermissionsError(f"{feature!r} is not a feature with permissions "
                                   f"(features: {', '.join(FEATURES)})")

    def _check_groups(self, host: str, names: Iterable[str]) -> frozenset[str]:
        if isinstance(names, str):
            raise PermissionsError(f"give a list of group names, not the single string {names!r}")
        out = set()
        for name in names:
            name = name.strip()
            if self.groups.get(host, name) is None:
                known = ", ".join(g.id for g in self.groups.list(host)) or "none yet"
                raise PermissionsError(f"there is no group {name!r} on {host} (groups: {known}); "
                                       "create it first (stockade group add)")
            out.add(name)
        return frozenset(out)

    def _warn_unknown_groups(self, host: str, rules: dict[str, Rule]) -> None:
        for feature, rule in sorted(rules.items()):
            for name in sorted(rule.deny | (rule.allow_only or frozenset())):
                if self.groups.get(host, name) is None:
                    log.warning("the permissions of %s name the group %r for %s, but %s has no such group "
                                "(yet): check hosts.permissions in the configuration", host, name, feature, host)

    def _recompute(self) -> None:
        rules: dict[str, dict[str, Rule]] = {}
        for host in self.domains:
            merged = {**self._configured.get(host, {}), **self._overrides.get(host, {})}
            merged = {f: r for f, r in merged.items() if not r.is_open}
            if merged:
                rules[host] = merged
        self._rules = rules
        self._by_feature = {f: {h: r[f] for h, r in rules.items() if f in r} for f in FEATURES}
        self._sync_hooks()

    # -- the features enforced here -------------------------------------------------------------
    def subscribe(self, bus: HookBus) -> None:
        """Enforce federation, web_client and presence_outside_group through the hooks, which are
        registered only while some host has a rule for them."""
        self._bus = bus
        self._sync_hooks()

    @property
    def hooked(self) -> frozenset[str]:
        """The features whose hook is registered now (those some host has a rule for)."""
        return frozenset(self._hooked)

    def _sync_hooks(self) -> None:
        bus = self._bus
        if bus is None:
            return
        for feature, hook in HOOKED.items():
            wanted = bool(self._by_feature[feature])
            if wanted and feature not in self._hooked:
                bus.on(hook, self._handlers[feature], POLICY)
                self._hooked.add(feature)
            elif not wanted and feature in self._hooked:
                bus.off(hook, self._handlers[feature])
                self._hooked.discard(feature)

    def _is_served_here(self, domain: str) -> bool:
        router = self.router
        if router is None:
            return domain in self.domains
        return domain in router.domains or domain in router.components or domain in router.configured_components

    def _federation(self, event: StanzaFromClient) -> Deny | None:
        """A stanza to a domain this server does not serve (hosts, their services, components)."""
        session = event.session
        if session.host not in self._by_feature["federation"]:
            return None
        to = event.stanza.attrs.get("to")
        to_jid = try_jid(to) if to else None
        if to_jid is None or self._is_served_here(to_jid.domain):
            return None          # no 'to' is the sender's own account; a bad 'to' is refused later
        return self.refuse(session.host, session.username, "federation")

    async def _web_client(self, event: SessionBound) -> object:
        """A session bound over WebSocket by a user who may not use the web client: the stream
        ends with <policy-violation/> instead of the bind result; nothing else sees the session."""
        session = event.session
        if session.host not in self._by_feature["web_client"]:
            return None
        if getattr(session.channel.connection, "kind", None) != "websocket":
            return None
        denial = self.refuse(session.host, session.username, "web_client")
        if denial is None:
            return None
        log.info("refused %s: %s", session.full, denial.text)
        session.close(StreamError("policy-violation", denial.text))
        return HANDLED

    def _presence(self, event: StanzaToLocal) -> object:
        """Available presence of a restricted user to an account that shares no group with them
        is dropped silently. Unavailable presence, subscriptions and probes pass."""
        stanza = event.stanza
        if stanza.name != "presence" or "type" in stanza.attrs:
            return None
        sender = event.sender
        if sender.domain not in self._by_feature["presence_outside_group"] or sender.local is None:
            return None
        if self.check(sender.domain, sender.local, "presence_outside_group") is None:
            return None
        to = event.to               # groups are per host: an account of another host shares none
        if to.domain == sender.domain and self._share_a_group(sender.domain, sender.local, to.local or ""):
            return None
        return HANDLED

    def _share_a_group(self, host: str, username: str, other: str) -> bool:
        mine = {g.id for g in self.groups.groups_of(host, username)}
        return any(g.id in mine for g in self.groups.groups_of(host, other))
