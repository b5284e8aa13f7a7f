"""Shared rosters: the members of a shared group see each other in their rosters.

A group marked shared (from the directory's `shared_groups`, or `stockade group create --shared`)
puts every other member in each member's roster, with subscription "both" and the group's display
name as roster group, without anyone adding anyone. An item is named with the colleague's
display name from the company directory (unless the user named the contact), taken when the
item is written. Membership changes are pushed (RFC 6121 2.1.6) to the members' interested
resources, and presence flows at once.

How: real roster items. The module writes ordinary roster items through the roster service
rather than merging group members into roster results on the fly. Everything that reads a
roster (roster get and versioning, presence broadcast, unavailable broadcast, probes,
`may_query_full_jid`, blocking, clients' caches) then works unchanged, with no special case in
presence.py or roster.py. The price is bookkeeping, kept here:

- per user, the map store "shared_roster" remembers which items this module manages, the
  group names it added, and the item as it was before (when the user already had the contact),
  so that leaving the group restores the user's own item instead of deleting it;
- per host, the map store "shared_roster_applied" holds the shared groups as last applied to
  rosters. Any group change (a directory sync, the CLI, a removed account, a restart after
  changes made while the server was down) is handled by comparing that with the groups now and
  bringing the rosters of the affected members in line (`catch_up`). It is idempotent. With
  several worker processes (core/partition.py) each worker brings in line the rosters of the
  accounts that live in it, and keeps what it applied under its own name ("worker N"): a roster
  is only ever written by its account's worker, which caches it.
- a member cannot remove a shared contact, nor cancel the subscription either way: that would
  break the symmetry the group promises. Those requests get <not-allowed/> naming the group;
  renaming the item or adding own roster groups works as usual.

Presence: when a contact is added, each available resource of the member sends its current
presence to the contact (both directions, since both members are reconciled); when removed,
unavailable presence is sent, as after a subscription is cancelled (RFC 6121 3.2.2).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..config.options import option
from ..core.hooks import ServerStarted, SessionBound, StanzaFromClient
from ..core.module_api import ModuleAPI
from ..core.verdict import Deny
from ..protocol import ns
from ..protocol.jid import JID, try_jid
from ..protocol.xml import Element
from .roster import RosterItem, RosterService


@dataclass(frozen=True)
class Options:
    max_contacts: int = option(5000, help="Most contacts a user gets from shared groups (the first by user name); a larger group is cut and logged.", min=1, max=1_000_000)


def _presence(frm: str, to: JID, type_: str | None = None) -> Element:
    attrs = {"from": frm, "to": str(to)}
    if type_:
        attrs["type"] = type_
    return Element("presence", ns.CLIENT, attrs)


class SharedRoster:
    def __init__(self, module: ModuleAPI, roster: RosterService, groups: Any, options: Options) -> None:
        self.module = module
        self.roster = roster
        self.groups = groups
        self.options = options
        self.managed = module.open_store("shared_roster", "map")
        self.applied = module.open_store("shared_roster_applied", "map")
        self._host_locks: dict[str, asyncio.Lock] = {}
        partition = module.router.partition
        self._applied_by = "" if partition is None else f"worker {partition.index}"

    def display_name(self, host: str, username: str) -> str:
        """The name the company directory gives a colleague ("" for accounts it does not manage)."""
        directory = self.module.ctx.directory
        record = directory.record(host, username) if directory is not None else None
        return (record or {}).get("name") or ""

    # -- following group changes ----------------------------------------------------------------
    async def group_changed(self, host: str, before: Any, after: Any) -> None:
        if (before is None or not before.shared) and (after is None or not after.shared):
            return                                    # not a shared group, before or after
        try:
            await self.catch_up(host)
        except Exception:       # rosters must not stop a sync; the next change or login retries
            self.module.log.exception("updating shared rosters on %s failed", host)

    async def catch_up(self, host: str) -> None:
        """Bring the rosters of every member affected by shared-group changes in line."""
        lock = self._host_locks.setdefault(host, asyncio.Lock())
        async with lock:
            now = {g.id: {"name": g.name, "members": sorted(g.members)} for g in self.groups.list(host) if g.shared}
            applied = await self.applied.get_all(host, self._applied_by)
            affected: set[str] = set()
            for gid in set(now) | set(applied):
                if now.get(gid) != applied.get(gid):
                    for state in (now.get(gid), applied.get(gid)):
                        if state is not None:
                            affected.update(state["members"])
            is_here = self.module.router.is_here
            for username in sorted(affected):
                if not is_here(JID(username, host, None)):
                    continue              # another worker's account: that worker does it
                try:
                    await self.reconcile(host, username)
                except Exception:
                    self.module.log.exception("updating the shared roster of %s@%s failed", username, host)
            changed = {gid: now.get(gid) for gid in set(now) | set(applied) if now.get(gid) != applied.get(gid)}
            await self.applied.set_many(host, self._applied_by, changed)

    async def reconcile(self, host: str, username: str) -> None:
        """Make `username`'s roster hold exactly the shared contacts its groups give it."""
        owner = JID(username, host, None)
        accounts = self.module.accounts
        if not await accounts.exists(host, username):
            return
        wanted = self.groups.shared_contacts(host, username)
        if len(wanted) > self.options.max_contacts:
            self.module.log.warning("%s@%s has %d shared contacts; only the first %d are shown (max_contacts)",
                                    username, host, len(wanted), self.options.max_contacts)
            wanted = dict(sorted(wanted.items())[:self.options.max_contacts])
        managed: dict[str, Any] = await self.managed.get_all(host, username)
        added: list[JID] = []
        removed: list[JID] = []
        items: dict[JID, RosterItem | None] = {}
        writes: dict[str, Any] = {}
        async with self.roster.lock(owner):
            roster = await self.roster.get(owner)
            for contact_name, names in sorted(wanted.items()):
                contact = JID(contact_name, host, None)
                if not await accounts.exists(host, contact_name):
                    continue
                key = str(contact)
                item = roster.items.get(contact)
                entry = managed.get(key) or {"groups": [], "previous": item.to_json() if item else None}
                own_groups = [g for g in (item.groups if item else []) if g not in entry["groups"]]
                groups = own_groups + [n for n in names if n not in own_groups]
                was_both = item is not None and item.subscription == "both"
                # The user's own name for the contact wins; otherwise the directory's display name.
                name = item.name if item is not None and item.name else self.display_name(host, contact_name)
                if (item is None or not was_both or item.ask or item.approved or item.groups != groups
                        or item.name != name):
                    items[contact] = RosterItem(contact, name, groups, "both")
                    if not was_both:
                        added.append(contact)
                if managed.get(key) != {"groups": names, "previous": entry["previous"]}:
                    writes[key] = {"groups": names, "previous": entry["previous"]}
            for key, entry in managed.items():
                contact = try_jid(key)
                if contact is None or contact.local in wanted:
                    continue
                writes[key] = None
                item = roster.items.get(contact)
                if item is None:
                    continue
                previous = entry.get("previous")
                old = RosterItem.from_json(contact, previous) if previous is not None else None
                if old is None:
                    items[contact] = None
                else:                    # the user's own item, as it was, with the user's later edits
                    groups = [g for g in item.groups if g not in entry.get("groups", [])]
                    items[contact] = RosterItem(contact, item.name, groups, old.subscription, old.ask, old.approved)
                if old is None or old.subscription not in ("from", "both"):
                    removed.append(contact)
            for contact in added:
                if contact in roster.pending_in:       # a request from a colleague: now moot
                    roster.pending_in.discard(contact)
                    await self.roster.pending.set(host, username, str(contact), None)
            await self.roster.store_items(owner, roster, items)          # stores, pushes
            await self.managed.set_many(host, username, writes)
        await self._send_presence(owner, added, available=True)
        await self._send_presence(owner, removed, available=False)

    async def _send_presence(self, owner: JID, contacts: list[JID], available: bool) -> None:
        if not contacts:
            return
        router = self.module.router
        for session in self.module.sessions.available(owner):
            for contact in contacts:
                if not available:
                    stanza = _presence(session.full, contact, "unavailable")
                elif session.presence is not None:
                    stanza = session.presence.copy()
                    stanza.attrs["from"], stanza.attrs["to"] = session.full, str(contact)
                else:
                    continue
                pending = router.route_presence(stanza, contact)
                if pending is not None:
                    await pending

    # -- keeping the promise --------------------------------------------------------------------
    def guard(self, event: StanzaFromClient) -> Deny | None:
        """Refuse removing a shared contact or cancelling a subscription with one (sync: cheap checks first)."""
        stanza = event.stanza
        name = stanza.name
        if name == "message":
            return None
        attrs = stanza.attrs
        if name == "presence":
            if attrs.get("type") not in ("unsubscribe", "unsubscribed"):
                return None
            contact = try_jid(attrs.get("to"))
        elif name == "iq" and attrs.get("type") == "set":
            query = stanza.find("query", ns.ROSTER)
            item = query.find("item", ns.ROSTER) if query is not None else None
            if item is None or item.get("subscription") != "remove":
                return None
            contact = try_jid(item.get("jid"))
        else:
            return None
        session = event.session
        if contact is None or contact.domain != session.host or contact.local is None:
            return None
        group = self.groups.shares_group(session.host, session.username, contact.local)
        if group is None:
            return None
        return Deny("not-allowed", f"{contact.bare} is in your shared group {group!r}; the contact stays while you "
                                   f"are both in it (ask an administrator to change the group)", rule="shared-roster")

    async def session_bound(self, event: SessionBound) -> None:
        # Cheap insurance: a login also brings its own roster in line (e.g. after a failed update).
        session = event.session
        if self.groups.groups_of(session.host, session.username):
            await self.reconcile(session.host, session.username)


def setup(module: ModuleAPI) -> None:
    groups = module.ctx.groups
    if groups is None:                 # a context without groups (unit harnesses): nothing to share
        return
    shared = SharedRoster(module, module.service(RosterService), groups, module.options or Options())
    module.provide(shared)
    groups.on_changed.append(shared.group_changed)
    module.on(StanzaFromClient, shared.guard)
    module.on(SessionBound, shared.session_bound)

    async def started(_: ServerStarted) -> None:
        for host in sorted(module.ctx.domains):        # changes made while the server was down
            await shared.catch_up(host)
    module.on(ServerStarted, started)
