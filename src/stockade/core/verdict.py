"""The one answer a policy gives about a stanza: Allow, Flag, Deny, Redact or Quarantine."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.errors import StanzaError
from ..protocol.xml import Element


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the stanza through unchanged."""


@dataclass(frozen=True, slots=True)
class Flag:
    """Let the stanza through unchanged, but report it (audit log, compliance journal): a rule
    matched whose action is only to tell the compliance officer."""
    reason: str
    rule: str = ""


@dataclass(frozen=True, slots=True)
class Deny:
    """Stop the stanza; the sender gets this stanza error. `rule` names the control for the audit log."""
    condition: str
    text: str
    rule: str = ""
    app_condition: Element | None = None      # e.g. XEP-0191 <blocked/>
    error_type: str | None = None             # None: the condition's usual type

    def error(self) -> StanzaError:
        return StanzaError(self.condition, self.text, self.error_type, app_condition=self.app_condition)


@dataclass(frozen=True, slots=True)
class Redact:
    """Deliver `stanza` (a changed copy) instead of the original."""
    stanza: Element
    rule: str = ""


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Hold the stanza for review; the sender is told it was held."""
    reason: str
    rule: str = ""


ALLOW = Allow()
Verdict = Allow | Flag | Deny | Redact | Quarantine
