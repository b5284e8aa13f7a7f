"""XEP-0441: Message Archive Management preferences (`<prefs xmlns='urn:xmpp:mam:2'/>`).

A user chooses what the archive keeps: a default ('always', 'never', or 'roster': only contacts
in the roster) and two lists of JIDs that are always or never archived. Matching (XEP-0441 2.3):
a listed full JID matches only that resource, a listed bare JID any resource of it; the exact
full JID is looked at first, then the bare JID, and 'never' wins over 'always' at each step.

Preferences are stored per user and kept in memory while the user has a session, because the
archive decides on the message path, which cannot wait for storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable

from ...core.module_api import ModuleAPI
from ...protocol.errors import StanzaError
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from .query import NS_MAM

ALWAYS = "always"
NEVER = "never"
ROSTER = "roster"
DEFAULTS = (ALWAYS, NEVER, ROSTER)
MAX_LISTED = 1000          # JIDs per list: bounds the stored document and the memory kept per user


@dataclass(frozen=True, slots=True)
class ArchivePrefs:
    default: str = ALWAYS
    always: frozenset[JID] = frozenset()
    never: frozenset[JID] = frozenset()

    def decide(self, peer: JID, roster_contacts: Collection[JID] | None) -> bool | None:
        """Whether a message with `peer` is archived. `roster_contacts` are the bare JIDs in the
        user's roster, or None when not known: the answer is then None if it depends on them."""
        if self.always or self.never:
            if peer.resource is not None:
                if peer in self.never:
                    return False
                if peer in self.always:
                    return True
            bare = peer.bare
            if bare in self.never:
                return False
            if bare in self.always:
                return True
        if self.default == ALWAYS:
            return True
        if self.default == NEVER:
            return False
        if roster_contacts is None:
            return None
        return peer.bare in roster_contacts

    # -- storage --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"default": self.default, "always": sorted(map(str, self.always)),
                "never": sorted(map(str, self.never))}

    @classmethod
    def from_json(cls, data: dict[str, Any], fallback_default: str) -> ArchivePrefs:
        default = data.get("default")
        return cls(default if default in DEFAULTS else fallback_default,
                   _jids(data.get("always", ())), _jids(data.get("never", ())))

    # -- protocol -------------------------------------------------------------------------------
    def to_element(self) -> Element:
        """`<prefs default=...><always/><never/></prefs>`, both lists present even when empty."""
        prefs = Element("prefs", NS_MAM, {"default": self.default})
        for name, jids in (("always", self.always), ("never", self.never)):
            listing = prefs.add(name)
            for jid in sorted(map(str, jids)):
                listing.add("jid", text=jid)
        return prefs

    @classmethod
    def from_element(cls, prefs: Element) -> ArchivePrefs:
        """Read a client's `<prefs/>` (an IQ set). Raises StanzaError."""
        default = prefs.get("default")
        if default not in DEFAULTS:
            raise StanzaError("bad-request", f"'default' must be one of {', '.join(DEFAULTS)}, not {default!r}")
        lists: dict[str, frozenset[JID]] = {}
        for name in ("always", "never"):
            found = list(prefs.elements(name, NS_MAM))
            if len(found) > 1:
                raise StanzaError("bad-request", f"<{name}/> appears more than once")
            jids: set[JID] = set()
            for el in found[0].elements("jid", NS_MAM) if found else ():
                jid = try_jid(el.text.strip())
                if jid is None:
                    raise StanzaError("jid-malformed", f"not a valid JID in <{name}/>: {el.text!r}")
                jids.add(jid)
            if len(jids) > MAX_LISTED:
                raise StanzaError("not-acceptable", f"<{name}/> can list at most {MAX_LISTED} JIDs")
            lists[name] = frozenset(jids)
        both = lists["always"] & lists["never"]
        if both:
            raise StanzaError("bad-request", f"{sorted(map(str, both))[0]} is listed in both <always/> and <never/>")
        return cls(default, lists["always"], lists["never"])


def _jids(values: Iterable[str]) -> frozenset[JID]:
    return frozenset(j for j in (try_jid(v) for v in values) if j is not None)


class PrefsService:
    """Preferences per user: stored, and cached while the user has a session."""

    def __init__(self, module: ModuleAPI, server_default: str) -> None:
        self.module = module
        self.store = module.open_store("mam_prefs", "keyval")
        self.server_default = ArchivePrefs(server_default)
        self._cache: dict[JID, ArchivePrefs] = {}
        # `cached(owner)`: the preferences in memory, or None. Asked twice per message (both
        # archive copies): the dict's own C method, not a Python call around it.
        self.cached: Callable[[JID], ArchivePrefs | None] = self._cache.get

    async def get(self, owner: JID) -> ArchivePrefs:
        prefs = self._cache.get(owner)
        if prefs is not None:
            return prefs
        data = await self.store.get(owner.domain, owner.local)
        prefs = self.server_default if data is None else ArchivePrefs.from_json(data, self.server_default.default)
        if self.module.sessions.is_online(owner):
            self._cache[owner] = prefs
        return prefs

    async def set(self, owner: JID, prefs: ArchivePrefs) -> None:
        await self.store.set(owner.domain, owner.local, prefs.to_json())
        if self.module.sessions.is_online(owner):
            self._cache[owner] = prefs

    async def load(self, owner: JID) -> None:
        """Bring the user's preferences into memory (a session was bound)."""
        if owner not in self._cache:
            await self.get(owner)

    def forget(self, owner: JID) -> None:
        """The user has no session left (or was removed): drop the cached preferences."""
        self._cache.pop(owner, None)

    async def remove(self, owner: JID) -> None:
        self.forget(owner)
        await self.store.set(owner.domain, owner.local, None)
