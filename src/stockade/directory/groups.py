"""Groups of accounts, per host: from the directory or made by hand (`stockade group ...`).

A group has an id (its name, unique on its host), a display name, members (user names of the
same host), a source ("directory": kept in step with LDAP by the sync and changed only there;
"local": managed with the CLI) and a `shared` flag: the members of a shared group see each other
in their rosters (modules/shared_roster.py).

Groups live in the generic map store "groups" under the host-wide user "" (no migrations): one
JSON document per group. Every group of every host is also kept in memory, so questions on the
message path ("which groups is alice in?") never touch the database. Another process (the CLI)
may change the store; `refresh()` picks that up and reports it like a local change.

Whoever needs to follow changes (shared rosters, permissions) appends a callback to
`on_changed`; it is called with (host, before, after) for each group created (before None),
changed, or deleted (after None), after the change is stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..protocol.jid import InvalidJid, normalise_local

if TYPE_CHECKING:
    from ..storage import Storage

LOCAL = "local"
DIRECTORY = "directory"
MAX_NAME = 256


class GroupError(Exception):
    """A refused group operation; the text says why and what to do."""


@dataclass(frozen=True)
class Group:
    id: str
    name: str                                   # display name (the roster group of shared contacts)
    source: str = LOCAL
    shared: bool = False
    members: frozenset[str] = field(default_factory=frozenset)
    dn: str = ""                                # the directory entry, for directory groups

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "shared": self.shared,
                "members": sorted(self.members), "dn": self.dn}

    @classmethod
    def from_json(cls, group_id: str, data: dict[str, Any]) -> Group:
        return cls(group_id, data.get("name") or group_id, data.get("source", LOCAL), bool(data.get("shared")),
                   frozenset(data.get("members", ())), data.get("dn", ""))


Callback = Callable[[str, "Group | None", "Group | None"], Any]


class GroupService:
    def __init__(self, storage: Storage, domains: set[str]) -> None:
        self.store = storage.map("groups")
        self.domains = domains
        self._groups: dict[str, dict[str, Group]] = {d: {} for d in domains}
        self._by_member: dict[str, dict[str, set[str]]] = {d: {} for d in domains}
        self._lock = asyncio.Lock()
        self.on_changed: list[Callback] = []

    # -- reading (memory only) ------------------------------------------------------------------
    async def load(self) -> None:
        for host in self.domains:
            self._set_host(host, await self._read(host))

    def get(self, host: str, group_id: str) -> Group | None:
        return self._groups.get(host, {}).get(group_id)

    def list(self, host: str) -> list[Group]:
        return sorted(self._groups.get(host, {}).values(), key=lambda g: g.id)

    def groups_of(self, host: str, username: str) -> list[Group]:
        groups = self._groups.get(host, {})
        return [groups[g] for g in sorted(self._by_member.get(host, {}).get(username, ()))]

    def shared_contacts(self, host: str, username: str) -> dict[str, list[str]]:
        """The members of `username`'s shared groups (not the user), each with the display names
        of the shared groups they have in common."""
        contacts: dict[str, list[str]] = {}
        for group in self.groups_of(host, username):
            if group.shared:
                for member in group.members:
                    if member != username:
                        contacts.setdefault(member, []).append(group.name)
        return {m: sorted(set(names)) for m, names in contacts.items()}

    def shares_group(self, host: str, username: str, other: str) -> str | None:
        """The display name of a shared group both are in, or None (cheap: for the message path)."""
        by_member = self._by_member.get(host)
        if not by_member:
            return None
        common = by_member.get(username, set()) & by_member.get(other, set())
        groups = self._groups[host]
        return next((groups[g].name for g in sorted(common) if groups[g].shared), None)

    # -- changes --------------------------------------------------------------------------------
    def check_host(self, host: str) -> None:
        if host not in self.domains:
            raise GroupError(f"{host!r} is not a domain this server serves (served: {', '.join(sorted(self.domains))})")

    @staticmethod
    def check_id(group_id: str) -> str:
        group_id = group_id.strip()
        if not group_id or len(group_id) > MAX_NAME:
            raise GroupError(f"a group name needs 1 to {MAX_NAME} characters")
        return group_id

    @staticmethod
    def normalise_members(usernames: Iterable[str]) -> set[str]:
        out = set()
        for name in usernames:
            try:
                out.add(normalise_local(name))
            except InvalidJid as exc:
                raise GroupError(f"{name!r} is not a valid user name: {exc}") from None
        return out

    async def put(self, host: str, group: Group) -> bool:
        """Store a group as given (create or replace); False when nothing changed."""
        self.check_host(host)
        async with self._lock:
            before = self.get(host, group.id)
            if before == group:
                return False
            await self.store.set(host, "", group.id, group.to_json())
            self._apply(host, before, group)
        await self._notify(host, before, group)
        return True

    async def create(self, host: str, group_id: str, *, name: str = "", shared: bool = False) -> Group:
        self.check_host(host)
        group_id = self.check_id(group_id)
        if self.get(host, group_id) is not None:
            raise GroupError(f"the group {group_id!r} already exists on {host}")
        group = Group(group_id, (name or group_id).strip()[:MAX_NAME], LOCAL, shared)
        await self.put(host, group)
        return group

    async def delete(self, host: str, group_id: str, *, source: str = LOCAL) -> None:
        group = self._editable(host, group_id, source)
        async with self._lock:
            await self.store.set(host, "", group.id, None)
            self._apply(host, group, None)
        await self._notify(host, group, None)

    async def set_members(self, host: str, group_id: str, add: Iterable[str] = (), remove: Iterable[str] = (),
                          *, source: str = LOCAL) -> Group:
        group = self._editable(host, group_id, source)
        members = (group.members | self.normalise_members(list(add))) - self.normalise_members(list(remove))
        after = replace(group, members=frozenset(members))
        await self.put(host, after)
        return after

    async def set_shared(self, host: str, group_id: str, shared: bool) -> Group:
        group = self.get(host, group_id)
        if group is None:
            raise GroupError(f"there is no group {group_id!r} on {host}")
        after = replace(group, shared=shared)
        await self.put(host, after)
        return after

    async def member_removed(self, host: str, username: str) -> None:
        """An account is gone: take it out of every group (directory groups too)."""
        for group in self.groups_of(host, username):
            await self.put(host, replace(group, members=group.members - {username}))

    async def refresh(self) -> int:
        """Pick up changes another process stored (the CLI); returns how many groups changed."""
        changes = []
        async with self._lock:
            for host in self.domains:
                stored = await self._read(host)
                current = self._groups.get(host, {})
                for gid in sorted(set(stored) | set(current)):
                    before, after = current.get(gid), stored.get(gid)
                    if before != after:
                        changes.append((host, before, after))
                self._set_host(host, stored)
        for host, before, after in changes:
            await self._notify(host, before, after)
        return len(changes)

    # -- internals ------------------------------------------------------------------------------
    def _editable(self, host: str, group_id: str, source: str) -> Group:
        self.check_host(host)
        group = self.get(host, group_id)
        if group is None:
            raise GroupError(f"there is no group {group_id!r} on {host}")
        if group.source != source:
            raise GroupError(f"the group {group_id!r} comes from the company directory; change it there "
                             f"(the next directory sync applies it)")
        return group

    async def _read(self, host: str) -> dict[str, Group]:
        return {gid: Group.from_json(gid, data) for gid, data in (await self.store.get_all(host, "")).items()}

    def _set_host(self, host: str, groups: dict[str, Group]) -> None:
        self._groups[host] = dict(groups)
        index: dict[str, set[str]] = {}
        for group in groups.values():
            for member in group.members:
                index.setdefault(member, set()).add(group.id)
        self._by_member[host] = index

    def _apply(self, host: str, before: Group | None, after: Group | None) -> None:
        groups = self._groups.setdefault(host, {})
        index = self._by_member.setdefault(host, {})
        if before is not None:
            for member in before.members:
                ids = index.get(member)
                if ids is not None:
                    ids.discard(before.id)
                    if not ids:
                        del index[member]
            groups.pop(before.id, None)
        if after is not None:
            groups[after.id] = after
            for member in after.members:
                index.setdefault(member, set()).add(after.id)

    async def _notify(self, host: str, before: Group | None, after: Group | None) -> None:
        for callback in self.on_changed:
            result = callback(host, before, after)
            if asyncio.iscoroutine(result):
                await result
