"""The policy engine: each host's threat-protection policy, and the controls that enforce it.

A host's policy is its [hosts.policy] table (config/schema.py PolicySection). An administrator
may replace it at runtime with a JSON document of the same shape (admin API: PUT
/api/v1/hosts/{host}/policy); the document is checked exactly like the configuration file (same
dataclasses, same bounds, the same rule checks: a bad regex is refused with the rule's name),
kept in the key-value store "policy" under (host, "") so that it survives a restart, and
recorded in the audit log as `policy.change` with the policy before and after. DELETE forgets
it: the configured policy applies again.

Controls (DLP, links, floods, contacts, impostors, files) register with `register(control)`; a
control has `apply(host, policy)` and is called once per host when it registers (and again
after `load`), then after every change of that host's policy, with the effective PolicySection
(None: the host has no policy). The new policy takes effect for the next stanza.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..config.options import ConfigError, load_section
from ..config.schema import PolicySection

if TYPE_CHECKING:
    from ..compliance.audit import AuditLog
    from ..config import ServerConfig
    from ..storage.stores import KeyValueStore

log = logging.getLogger(__name__)

STORE = "policy"


class PolicyControl(Protocol):
    def apply(self, host: str, policy: PolicySection | None) -> None: ...


class PolicyError(Exception):
    """A refused policy document: `field` is the path of the bad key, `reason` what to fix."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def policy_to_json(policy: PolicySection | None) -> dict[str, Any]:
    """The policy as a JSON object of the configuration's shape (unset keys left out)."""
    if policy is None:
        return {}

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value
    return clean(dataclasses.asdict(policy))


def policy_from_json(document: Any, where: str = "policy") -> PolicySection:
    """Check a JSON policy document as the configuration loader would; raises PolicyError."""
    if not isinstance(document, dict):
        raise PolicyError("", "send the policy as a JSON object, e.g. {\"dlp\": {\"rules\": []}}")
    try:
        return load_section(PolicySection, document, where, "policy")
    except ConfigError as exc:
        return _raise(exc.key, exc.reason)
    except (TypeError, ValueError, RecursionError) as exc:     # odd input the loader did not expect
        return _raise("policy", f"the document could not be read as a policy: {exc}")


def _raise(field: str, reason: str) -> PolicySection:
    raise PolicyError(field, reason)


class PolicyEngine:
    """Holds each host's effective policy and tells every registered control about changes."""

    def __init__(self, config: ServerConfig, store: KeyValueStore, *, audit: AuditLog | None = None) -> None:
        self.store = store
        self.audit = audit
        self.domains = tuple(config.domains)
        self._configured: dict[str, PolicySection | None] = {h.domain: h.policy for h in config.hosts}
        self._overrides: dict[str, PolicySection] = {}
        self.controls: list[PolicyControl] = []

    # -- reading ----------------------------------------------------------------------------------
    def get(self, host: str) -> PolicySection | None:
        """The policy in force on `host` (None: no policy, every control at its defaults)."""
        if host in self._overrides:
            return self._overrides[host]
        return self._configured.get(host)

    def configured(self, host: str) -> PolicySection | None:
        return self._configured.get(host)

    def source(self, host: str) -> str:
        """Where the policy in force comes from: "override", "configuration" or "default"."""
        if host in self._overrides:
            return "override"
        return "configuration" if self._configured.get(host) is not None else "default"

    # -- controls ---------------------------------------------------------------------------------
    def register(self, control: PolicyControl) -> None:
        """Add a control and apply every host's policy to it now."""
        self.controls.append(control)
        for host in self.domains:
            control.apply(host, self.get(host))

    def _apply(self, host: str) -> None:
        policy = self.get(host)
        for control in self.controls:
            try:
                control.apply(host, policy)
            except Exception:
                log.exception("the %s control could not apply the new policy of %s", type(control).__name__, host)

    # -- changes ----------------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the policies stored by earlier runs; a stored policy that no longer passes the
        checks (after an upgrade) is ignored with a warning, and the configured one applies."""
        for host in self.domains:
            stored = await self.store.get(host, "")
            if stored is None:
                self._overrides.pop(host, None)
                continue
            try:
                self._overrides[host] = policy_from_json(stored, f"stored policy of {host}")
            except PolicyError as exc:
                log.warning("the policy of %s stored at runtime is no longer valid (%s); the configured policy "
                            "applies until an administrator sets a new one", host, exc)
                self._overrides.pop(host, None)
        for host in self.domains:
            self._apply(host)

    async def set(self, host: str, document: Any, *, actor: str = "system", **audit_detail: Any) -> PolicySection:
        """Replace the host's policy with a JSON document; raises PolicyError (nothing changes)."""
        self._check_host(host)
        policy = policy_from_json(document)
        before = self.get(host)
        await self.store.set(host, "", policy_to_json(policy))
        self._overrides[host] = policy
        self._apply(host)
        await self._audit(host, actor, before, "override", audit_detail)
        return policy

    async def reset(self, host: str, *, actor: str = "system", **audit_detail: Any) -> PolicySection | None:
        """Forget the runtime policy: the configured one (returned) applies again."""
        self._check_host(host)
        before = self.get(host)
        await self.store.set(host, "", None)
        self._overrides.pop(host, None)
        self._apply(host)
        await self._audit(host, actor, before, "configuration", audit_detail)
        return self.get(host)

    async def _audit(self, host: str, actor: str, before: PolicySection | None, source: str,
                     detail: dict[str, Any]) -> None:
        if self.audit is not None:
            await self.audit.record(host, actor, "policy.change", host, before=policy_to_json(before),
                                    after=policy_to_json(self.get(host)), source=source, **detail)

    def _check_host(self, host: str) -> None:
        if host not in self.domains:
            raise PolicyError("host", f"{host!r} is not a domain this server serves "
                                      f"(served: {', '.join(sorted(self.domains))})")
