"""Unsolicited contact: who may start a conversation with a user or ask for their presence.

Rules of [hosts.policy.contact] (config/schema.py ContactSection), for the recipient's host:

    accepts = "anyone"                  # the host default: anyone | same_tenant | contacts
    refuse_external_subscriptions = true
    [[hosts.policy.contact.rules]]
    groups = ["executives"]             # members of these groups (ids) ...
    accepts = "contacts"                # ... accept only their contacts

A recipient in several ruled groups gets the strictest rule (contacts > same_tenant > anyone).
What is judged: messages (not groupchat, not error) and subscription requests (presence type
"subscribe") to a local account. Everything else passes: answers to subscriptions, presence,
IQs, and anything from a server, a room or another service (a JID without a local part, or a
component's domain).

- same_tenant: the sender is an account of the recipient's host.
- contacts: the sender is in the recipient's roster with a subscription in either direction (or
  one the recipient asked for), or shares a group with the recipient.
- refuse_external_subscriptions: a subscription request from another domain is answered with
  "unsubscribed" from the recipient at once; the recipient never sees it.

A refusal is the stanza error <forbidden/> with a text naming the recipient's rule. It is decided
where the stanza comes in (StanzaFromClient, local senders: the hub reports the verdict) and
again on the way to the account (StanzaToLocal: every path, other tenants and federation
included; reported here through VerdictGiven). The roster of an account with no session is not
in memory: such a stanza is held, the roster loaded, and the stanza delivered or refused then.

Cost: the hooks are registered only while some host has a rule, so the default (anyone) adds
nothing to the message path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..config.schema import ContactSection
from ..core.hooks import HANDLED, POLICY, StanzaFromClient, StanzaToLocal, VerdictGiven
from ..core.verdict import Deny
from ..protocol.jid import JID, try_jid
from ..protocol.xml import Element

if TYPE_CHECKING:
    from ..config.schema import PolicySection
    from ..core.bus import HookBus
    from ..core.router import Router
    from ..directory.groups import GroupService

log = logging.getLogger("stockade.policy.contact")

CONTACT_PRIORITY = POLICY + 20
RANK = {"anyone": 0, "same_tenant": 1, "contacts": 2}
UNDECIDED = object()         # the roster is not in memory: decide after loading it


class _HostRules:
    __slots__ = ("default", "rules", "refuse_external")

    def __init__(self, section: ContactSection) -> None:
        self.default = section.accepts
        self.rules = [(frozenset(r.groups), r.accepts) for r in section.rules]
        self.refuse_external = section.refuse_external_subscriptions

    @property
    def is_open(self) -> bool:
        return self.default == "anyone" and all(m == "anyone" for _, m in self.rules) and not self.refuse_external


class ContactControl:
    """Enforces each host's contact rules. A policy control (`apply`); `roster` is the roster
    module's RosterService (`cached(owner)`, `get(owner)`)."""

    def __init__(self, router: Router, groups: GroupService | None, roster: Any) -> None:
        self.router = router
        self.groups = groups
        self.roster = roster
        self._hosts: dict[str, _HostRules] = {}
        self._bus: HookBus | None = None
        self._approved: dict[int, Element] = {}       # held stanzas let through after the roster loaded
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused_total = 0

    def apply(self, host: str, policy: PolicySection | None) -> None:
        section = policy.contact if policy is not None else None
        rules = _HostRules(section) if section is not None else None
        if rules is None or rules.is_open:
            self._hosts.pop(host, None)
        else:
            self._hosts[host] = rules
        self._sync_hooks()

    def subscribe(self, bus: HookBus) -> None:
        self._bus = bus
        self._sync_hooks()

    def _sync_hooks(self) -> None:
        bus = self._bus
        if bus is None:
            return
        bus.toggle(StanzaFromClient, self.from_client, CONTACT_PRIORITY, bool(self._hosts))
        bus.toggle(StanzaToLocal, self.to_local, CONTACT_PRIORITY, bool(self._hosts))

    # -- what is judged -------------------------------------------------------------------------
    def mode(self, host: str, username: str) -> str:
        """Who may reach this account: anyone, same_tenant or contacts."""
        rules = self._hosts.get(host)
        if rules is None:
            return "anyone"
        if rules.rules and self.groups is not None:
            mine = {g.id for g in self.groups.groups_of(host, username)}
            # A group rule replaces the host default; of several, the strictest wins.
            matched = [accepts for groups, accepts in rules.rules if mine & groups]
            if matched:
                return max(matched, key=RANK.__getitem__)
        return rules.default

    def _is_judged(self, stanza: Element, to: JID, sender: JID) -> bool:
        if to.domain not in self._hosts or to.local is None or sender.local is None:
            return False
        if sender.bare == to.bare:
            return False
        router = self.router
        if sender.domain in router.components or sender.domain in router.configured_components:
            return False
        name = stanza.name
        if name == "message":
            return stanza.attrs.get("type") not in ("groupchat", "error")
        return name == "presence" and stanza.attrs.get("type") == "subscribe"

    def judge(self, stanza: Element, to: JID, sender: JID, roster: Any = None) -> Deny | object | None:
        """None (let it through), a Deny, HANDLED (answered already) or UNDECIDED (no roster)."""
        rules = self._hosts[to.domain]
        username = to.local or ""
        is_subscribe = stanza.name == "presence"
        if is_subscribe and rules.refuse_external and sender.domain != to.domain:
            self._answer_unsubscribed(to, sender)
            return HANDLED
        mode = self.mode(to.domain, username)
        if mode == "anyone":
            return None
        if mode == "same_tenant":
            if sender.domain == to.domain:
                return None
            return self._deny(to, f"{to.bare} accepts messages and contact requests only from people of {to.domain}")
        if sender.domain == to.domain and self.groups is not None and sender.local is not None \
                and self.groups.shares_group(to.domain, username, sender.local) is not None:
            return None
        if roster is None:
            roster = self.roster.cached(to.bare) if self.roster is not None else None
            if roster is None:
                return UNDECIDED if self.roster is not None else self._deny(to, _only_contacts(to))
        item = roster.items.get(sender.bare)
        if item is not None and (item.subscription != "none" or item.ask):
            return None
        return self._deny(to, _only_contacts(to))

    def _deny(self, to: JID, why: str) -> Deny:
        self.refused_total += 1
        return Deny("forbidden", f"{why}: this was not delivered. Ask them to add you as a contact, or reach them "
                                 "another way.", rule="contact")

    # -- hooks ----------------------------------------------------------------------------------
    def from_client(self, event: StanzaFromClient) -> Deny | None:
        """A local sender: refuse now when the answer is known (the hub reports the verdict)."""
        stanza = event.stanza
        to_attr = stanza.attrs.get("to")
        if to_attr is None:
            return None
        to = try_jid(to_attr)
        if to is None or to.domain not in self._hosts:
            return None
        sender = event.session.jid
        if not self._is_judged(stanza, to, sender):
            return None
        verdict = self.judge(stanza, to, sender)
        return verdict if isinstance(verdict, Deny) else None

    def to_local(self, event: StanzaToLocal) -> object:
        stanza, to, sender = event.stanza, event.to, event.sender
        if self._approved and self._approved.get(id(stanza)) is stanza:
            del self._approved[id(stanza)]
            return None
        if not self._is_judged(stanza, to, sender):
            return None
        verdict = self.judge(stanza, to, sender)
        if verdict is UNDECIDED:
            task = asyncio.ensure_future(self._decide_later(stanza, to, sender))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return HANDLED
        if isinstance(verdict, Deny):
            self._report(to, sender, verdict, stanza)
        return verdict

    async def _decide_later(self, stanza: Element, to: JID, sender: JID) -> None:
        try:
            roster = await self.roster.get(to.bare)
            verdict = self.judge(stanza, to, sender, roster)
            if isinstance(verdict, Deny):
                self._report(to, sender, verdict, stanza)
                self.router.bounce(stanza, verdict.error())
                return
            if verdict is HANDLED:
                return
            self._approved[id(stanza)] = stanza
            if stanza.name == "message":
                pending = self.router.message_to_local(stanza, to, None)
            else:
                pending = self.router.route_presence(stanza, to)
            if pending is not None:
                await pending
        except Exception:
            log.exception("deciding whether %s may reach %s failed; the stanza was dropped", sender, to)
        finally:
            self._approved.pop(id(stanza), None)

    def _report(self, to: JID, sender: JID, verdict: Deny, stanza: Element) -> None:
        if self._bus is not None:
            self._bus.fire(VerdictGiven(to.domain, str(sender), verdict, stanza, None, {"recipient": str(to.bare)}))

    def _answer_unsubscribed(self, to: JID, sender: JID) -> None:
        """The recipient "answers" an external subscription request with unsubscribed."""
        reply = Element("presence", "jabber:client", {"from": str(to.bare), "to": str(sender.bare),
                                                      "type": "unsubscribed"})
        self.refused_total += 1
        if self._bus is not None:
            self._bus.fire(VerdictGiven(to.domain, str(sender.bare), Deny("forbidden", "external subscription refused",
                                        rule="contact.external_subscription"), None, None,
                                        {"recipient": str(to.bare)}))
        pending = self.router.route_presence(reply, sender.bare)
        if pending is not None:
            task = asyncio.ensure_future(pending)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def _only_contacts(to: JID) -> str:
    return f"{to.bare} accepts messages and contact requests only from their contacts"

