"""Data loss prevention: named rules that look for confidential data in message bodies.

    [[hosts.policy.dlp.rules]]
    name = "cards"
    kind = "card"                 # keywords, regex, card, ssn, iban, credentials
    direction = "external"        # internal, external, any
    action = "block"              # block, redact, quarantine, flag
    groups = ["sales"]            # optional: only senders in these groups

A rule scans the bodies and subjects of messages a local user sends (and the text of an
XHTML-IM copy, which would otherwise carry the same words past the rule). When several rules
match, the strongest action wins: block, then quarantine, then redact (every redacting rule's
matches are masked), then flag. Stanza verdicts (core/verdict.py) do the rest: the hub answers
a Deny, delivers a Redact's copy, holds a Quarantine (policy/quarantine.py keeps it for review)
and every one of them is reported (policy/reporting.py).

Regular expressions run on RE2 (google-re2): matching takes linear time whatever the pattern,
so a pattern such as (a+)+$ cannot stall the server; RE2 refuses back-references and
look-around, and a pattern it refuses stops startup (or the API change) with the rule's name.

Cost: the StanzaFromClient handler is registered only while some host has DLP rules, and a
message of a host without rules, or without a body, costs one dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import re2

from ..core.hooks import POLICY, StanzaFromClient
from ..core.verdict import Deny, Flag, Quarantine, Redact
from ..protocol.jid import try_jid
from ..protocol.xml import Element
from .patterns import DETECTORS, Span

if TYPE_CHECKING:
    from ..config.schema import DlpRuleSection, PolicySection
    from ..core.bus import HookBus
    from ..core.router import Router
    from ..directory.groups import GroupService

KINDS = ("keywords", "regex", *DETECTORS)
ACTIONS = ("block", "redact", "quarantine", "flag")
DIRECTIONS = ("internal", "external", "any")
STRENGTH = {"block": 3, "quarantine": 2, "redact": 1, "flag": 0}
PRIORITY = POLICY - 20        # after flood limits and contact rules, before links (h7-shared.md)
NS_XHTML_IM = "http://jabber.org/protocol/xhtml-im"
MAX_PATTERN = 4096            # characters in one regex rule
MAX_KEYWORDS = 10000


def mask(rule: str) -> str:
    """What replaces a match in a redacted copy."""
    return f"[removed by policy: {rule}]"


@dataclass(frozen=True, slots=True)
class DlpRule:
    """A rule ready to run: `find(text)` returns the spans it matches."""
    name: str
    action: str
    direction: str
    groups: frozenset[str] | None
    find: Callable[[str], list[Span]]
    what: str                 # how a person calls what the rule finds
    text: str

    def refusal(self) -> str:
        if self.text:
            return self.text
        return (f"This message was not sent: it contains what looks like {self.what} (rule {self.name!r}). "
                "Remove it and send again.")


def _finder(compiled: Any) -> Callable[[str], list[Span]]:
    def find(text: str) -> list[Span]:
        return [m.span() for m in compiled.finditer(text) if m.end() > m.start()]
    return find


def _keyword_finder(words: list[str]) -> Callable[[str], list[Span]]:
    """Whole words, any case. A plain substring test of the lowercased text first: most messages
    contain none of the words, and `in` is far cheaper than the regex that checks word edges."""
    alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    compiled = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    lowered_words = tuple({w.lower() for w in words})
    # Some characters change length when lowercased (U+0130): then the first look would not be
    # a safe filter, and the regex alone decides.
    is_filter_safe = all(len(w.lower()) == len(w) and w.lower() == w.casefold() for w in words)

    def find(text: str) -> list[Span]:
        if is_filter_safe:
            lowered = text.lower()
            if not any(w in lowered for w in lowered_words):
                return []
        return [m.span() for m in compiled.finditer(text) if m.end() > m.start()]
    return find


def compile_rule(rule: DlpRuleSection) -> DlpRule:
    """The runnable rule; raises ValueError with the reason (without the rule's name)."""
    if not rule.name.strip():
        raise ValueError("give the rule a name")
    if rule.kind not in KINDS:
        raise ValueError(f"unknown kind {rule.kind!r} (kinds: {', '.join(KINDS)})")
    if rule.action not in ACTIONS:
        raise ValueError(f"unknown action {rule.action!r} (actions: {', '.join(ACTIONS)})")
    if rule.direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {rule.direction!r} (directions: {', '.join(DIRECTIONS)})")
    if rule.kind != "keywords" and rule.keywords:
        raise ValueError(f"keywords are only read by kind \"keywords\"; this rule is of kind {rule.kind!r}")
    if rule.kind != "regex" and rule.pattern:
        raise ValueError(f"a pattern is only read by kind \"regex\"; this rule is of kind {rule.kind!r}")
    if rule.kind == "keywords":
        words = [w.strip() for w in rule.keywords if w.strip()]
        if not words:
            raise ValueError("a keywords rule needs a non-empty keywords list")
        if len(words) > MAX_KEYWORDS:
            raise ValueError(f"more than {MAX_KEYWORDS} keywords; split them into several rules")
        # Literal alternatives, whole words, any case: no pattern can backtrack here.
        find = _keyword_finder(words)
        what = "a confidential keyword"
    elif rule.kind == "regex":
        if not rule.pattern:
            raise ValueError("a regex rule needs a pattern")
        if len(rule.pattern) > MAX_PATTERN:
            raise ValueError(f"the pattern is longer than {MAX_PATTERN} characters")
        try:
            compiled = re2.compile(rule.pattern)
        except Exception as exc:      # re2.error, and TypeError/ValueError for odd input
            raise ValueError(f"the pattern {rule.pattern!r} is not a valid RE2 regular expression: {exc} "
                             "(RE2 has no back-references or look-around)") from None
        if compiled.search("") is not None:
            raise ValueError(f"the pattern {rule.pattern!r} matches empty text, so it would match every message")
        find = _finder(compiled)
        what = "confidential data"
    else:
        find, what = DETECTORS[rule.kind]
    groups = None if rule.groups is None else frozenset(g.strip() for g in rule.groups)
    return DlpRule(rule.name, rule.action, rule.direction, groups, find, what, rule.text)


def rule_problem(rule: DlpRuleSection) -> str | None:
    """Why the rule cannot be used, naming it; None when it can (the configuration check)."""
    try:
        compile_rule(rule)
    except ValueError as exc:
        return f"rule {rule.name!r}: {exc}"
    return None


def _scanned(stanza: Element) -> list[Element]:
    """The elements whose text a rule reads: bodies, subjects, and the XHTML-IM copy."""
    return [c for c in stanza.children if isinstance(c, Element)
            and (c.name in ("body", "subject") or c.xmlns == NS_XHTML_IM)]


def _all_text(el: Element) -> str:
    if el.xmlns != NS_XHTML_IM:
        return el.text
    parts: list[str] = []

    def walk(node: Element) -> None:
        for c in node.children:
            if isinstance(c, str):
                parts.append(c)
            else:
                walk(c)
                parts.append(" ")
    walk(el)
    return "".join(parts)


def _masked(text: str, spans: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, name in sorted(spans):
        if start < pos:          # overlaps the previous match: already masked
            start = pos
            if start >= end:
                continue
        out.append(text[pos:start])
        out.append(mask(name))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def served_here(router: Router, domain: str) -> bool:
    """Whether `domain` is this server's: a host, a service of one (rooms, upload) or a component.
    The "internal" direction of a rule; anything else is "external"."""
    if domain in router.domains or domain in router.components or domain in router.configured_components:
        return True
    return any(domain.endswith("." + host) for host in router.domains)


class DlpControl:
    """The DLP rules of every host, enforced on StanzaFromClient (contract: h7-shared.md)."""

    def __init__(self, groups: GroupService, is_internal: Callable[[str], bool]) -> None:
        self.groups = groups
        self.is_internal = is_internal
        self._rules: dict[str, tuple[DlpRule, ...]] = {}
        self._bus: HookBus | None = None
        # The control asked after a Redact or Flag verdict (the link policy): see _and_then.
        self.then: Callable[[StanzaFromClient], Any] | None = None

    def subscribe(self, bus: HookBus) -> None:
        self._bus = bus
        self._sync_hook()

    def apply(self, host: str, policy: PolicySection | None) -> None:
        """Take the host's DLP rules from its policy (at start and on every change)."""
        section = policy.dlp if policy is not None else None
        rules = tuple(compile_rule(r) for r in section.rules) if section is not None else ()
        if rules:
            self._rules[host] = rules
        else:
            self._rules.pop(host, None)
        self._sync_hook()

    def rules(self, host: str) -> tuple[DlpRule, ...]:
        return self._rules.get(host, ())

    def _sync_hook(self) -> None:
        bus = self._bus
        if bus is None:
            return
        bus.toggle(StanzaFromClient, self.check, PRIORITY, bool(self._rules))

    def check(self, event: StanzaFromClient) -> Deny | Redact | Quarantine | Flag | None:
        session = event.session
        rules = self._rules.get(session.host)
        if rules is None:
            return None
        stanza = event.stanza
        if stanza.name != "message" or stanza.attrs.get("type") == "error":
            return None
        scanned = _scanned(stanza)
        if not scanned:
            return None
        verdict = self.judge(session.host, session.username, stanza, scanned, rules)
        if isinstance(verdict, (Redact, Flag)) and self.then is not None:
            verdict = self._and_then(event, verdict)
        return verdict

    def _and_then(self, event: StanzaFromClient, verdict: Redact | Flag) -> Any:
        """The first verdict other than None ends the hook chain, so a message this rule only
        flags or redacts would skip the link policy: ask it here, about the copy to deliver."""
        assert self.then is not None
        stanza = verdict.stanza if isinstance(verdict, Redact) else event.stanza
        later = self.then(StanzaFromClient(event.session, stanza))
        if later is None:
            return verdict
        if isinstance(later, Redact):
            return Redact(later.stanza, rule=f"{verdict.rule}+{later.rule}")
        return later

    def judge(self, host: str, username: str, stanza: Element, scanned: list[Element],
              rules: tuple[DlpRule, ...]) -> Deny | Redact | Quarantine | Flag | None:
        texts = [_all_text(el) for el in scanned]
        member_of: set[str] | None = None
        internal: bool | None = None
        best: DlpRule | None = None
        redactions: dict[int, list[tuple[int, int, str]]] = {}
        for rule in rules:
            if rule.groups is not None:
                if member_of is None:
                    member_of = {g.id for g in self.groups.groups_of(host, username)}
                if not member_of & rule.groups:
                    continue
            if rule.direction != "any":
                if internal is None:
                    internal = self._is_internal(stanza, host)
                if internal != (rule.direction == "internal"):
                    continue
            hit = False
            for i, text in enumerate(texts):
                spans = rule.find(text)
                if spans:
                    hit = True
                    if rule.action != "redact":
                        break
                    redactions.setdefault(i, []).extend((s, e, rule.name) for s, e in spans)
            if not hit:
                continue
            if best is None or STRENGTH[rule.action] > STRENGTH[best.action]:
                best = rule
            if rule.action == "block":
                break
        if best is None:
            return None
        tag = f"dlp.{best.name}"
        if best.action == "block":
            return Deny("policy-violation", best.refusal(), rule=tag)
        if best.action == "quarantine":
            return Quarantine(f"the message contains what looks like {best.what}", rule=tag)
        if best.action == "redact":
            return Redact(self._redacted(stanza, scanned, texts, redactions), rule=tag)
        return Flag(f"the message contains what looks like {best.what}", rule=tag)

    def _is_internal(self, stanza: Element, host: str) -> bool:
        to = stanza.attrs.get("to")
        if not to:
            return True                   # to the sender's own account
        jid = try_jid(to)
        return jid is None or self.is_internal(jid.domain)

    @staticmethod
    def _redacted(stanza: Element, scanned: list[Element], texts: list[str],
                  redactions: dict[int, list[tuple[int, int, str]]]) -> Element:
        copy = stanza.copy()
        children = [c for c in copy.children if isinstance(c, Element)]
        originals = [c for c in stanza.children if isinstance(c, Element)]
        for i, el in enumerate(scanned):
            spans = redactions.get(i)
            if not spans:
                continue
            target = children[originals.index(el)]
            if el.xmlns == NS_XHTML_IM:
                copy.remove(target)       # the plain body carries the masked text
            else:
                target.set_text(_masked(texts[i], spans))
        return copy
