"""XEP-0402: PEP Native Bookmarks, kept in step with the older XEP-0048 forms (XEP-0411 and the
compatibility section of XEP-0402).

The same bookmarks live in three places, and a client writing any one of them sees its change in
the other two:
    A. XEP-0049 private XML: <storage xmlns='storage:bookmarks'/>           (legacy clients)
    B. the PEP node 'storage:bookmarks', item 'current', the same <storage/> (XEP-0048 via XEP-0223)
    C. the PEP node 'urn:xmpp:bookmarks:1', one item per room, id = room JID (XEP-0402)
A write to A or B updates C item by item (publishing changed rooms, retracting removed ones, and
leaving unchanged ones alone, so no needless notifications) and the other of A/B; a write to C
collates all of C into one <storage/> for A and B. <url/> bookmarks, which C cannot hold, and the
<extensions/> of C items, which A and B cannot hold, are carried over from what was stored.

Security (XEP-0411 section 5): bookmarks are only ever copied into a node that nobody but the
owner can read; nodes of these names are created with the whitelist access model, so a client
that forgets its publish-options leaks nothing.
"""

from __future__ import annotations

from ...core.iq import ACCOUNT
from ...core.module_api import ModuleAPI
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from ..private import PrivateStorage
from .access import AccessControl
from .forms import TRUE_VALUES
from .service import Change, PepService

NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_LEGACY = "storage:bookmarks"
LEGACY_NODE = "storage:bookmarks"
LEGACY_ITEM = "current"
FEATURES = (NS_BOOKMARKS + "#compat", NS_BOOKMARKS + "#compat-pep", "urn:xmpp:bookmarks-conversion:0")


def to_modern(conference: Element, previous: Element | None) -> Element:
    """A legacy <conference jid=.../> as a XEP-0402 item payload (the JID becomes the item id)."""
    out = Element("conference", NS_BOOKMARKS)
    if conference.get("name"):
        out.attrs["name"] = conference.attrs["name"]
    autojoin = (conference.get("autojoin") or "").strip().lower() in TRUE_VALUES
    if autojoin:
        out.attrs["autojoin"] = "true"
    for child in ("nick", "password"):
        text = conference.find_text(child, NS_LEGACY)
        if text:
            out.add(child, text=text)
    if previous is not None:
        extensions = previous.find("extensions", NS_BOOKMARKS)
        if extensions is not None:
            out.append(extensions.copy())
    return out


def to_legacy(room: str, conference: Element) -> Element:
    out = Element("conference", NS_LEGACY, {"jid": room})
    if conference.get("name"):
        out.attrs["name"] = conference.attrs["name"]
    out.attrs["autojoin"] = "true" if (conference.get("autojoin") or "").strip().lower() in TRUE_VALUES else "false"
    for child in ("nick", "password"):
        text = conference.find_text(child, NS_BOOKMARKS)
        if text:
            out.add(child, text=text)
    return out


class BookmarkSync:
    def __init__(self, service: PepService, private: PrivateStorage) -> None:
        self.service = service
        self.private = private
        self.log = service.module.log

    # -- what clients changed -------------------------------------------------------------------
    async def modern_changed(self, change: Change) -> None:
        """C changed (publish, retract, purge or delete): rewrite A and B from it."""
        owner = change.owner
        node = await self.service.store.get(owner, NS_BOOKMARKS)
        items = await self.service.store.items(owner, node) if node is not None else []
        storage = Element("storage", NS_LEGACY)
        for item in items:
            room = try_jid(item.id)
            if room is not None and item.payload.name == "conference" and item.payload.xmlns == NS_BOOKMARKS:
                storage.append(to_legacy(str(room), item.payload))
        previous = await self.private.get(owner, NS_LEGACY, "storage")
        if previous is not None:
            for url in previous.elements("url", NS_LEGACY):
                storage.append(url.copy())
        await self.private.put(owner, storage)
        await self._publish_legacy_pep(owner, storage)

    async def legacy_pep_changed(self, change: Change) -> None:
        """B changed: copy it to A and C."""
        if change.kind != "publish" or change.item is None:
            return
        storage = change.item.payload
        if storage.name != "storage" or storage.xmlns != NS_LEGACY:
            return
        await self.private.put(change.owner, storage)
        await self._apply_to_modern(change.owner, storage)

    async def private_changed(self, owner: JID, storage: Element) -> None:
        """A changed: copy it to B and C."""
        await self._apply_to_modern(owner, storage)
        await self._publish_legacy_pep(owner, storage)

    # -- copying --------------------------------------------------------------------------------
    async def _may_write(self, owner: JID, node_name: str) -> bool:
        node = await self.service.store.get(owner, node_name)
        if node is not None and not AccessControl.is_private(node):
            self.log.warning("%s's node %r can be read by others; bookmarks are not copied into it",
                             owner, node_name)
            return False
        return True

    async def _publish_legacy_pep(self, owner: JID, storage: Element) -> None:
        if not await self._may_write(owner, LEGACY_NODE):
            return
        node = await self.service.store.get(owner, LEGACY_NODE)
        if node is not None:
            current = await self.service.store.item(owner, node, LEGACY_ITEM)
            if current is not None and current.payload.serialize("") == storage.serialize(""):
                return
        await self.service.publish(owner, LEGACY_NODE, storage.copy(), LEGACY_ITEM)

    async def _apply_to_modern(self, owner: JID, storage: Element) -> None:
        if not await self._may_write(owner, NS_BOOKMARKS):
            return
        node = await self.service.store.get(owner, NS_BOOKMARKS)
        current = {i.id: i.payload for i in await self.service.store.items(owner, node)} if node is not None else {}
        wanted: dict[str, Element] = {}
        for conference in storage.elements("conference", NS_LEGACY):
            room = try_jid(conference.get("jid"))
            if room is None or room.resource is not None:
                continue                # not a room address; nothing a XEP-0402 client could use
            wanted[str(room)] = to_modern(conference, current.get(str(room)))
        for room, payload in wanted.items():
            old = current.get(room)
            if old is None or old.serialize("") != payload.serialize(""):
                await self.service.publish(owner, NS_BOOKMARKS, payload, room)
        removed = [room for room in current if room not in wanted]
        if removed:
            await self.service.retract(owner, NS_BOOKMARKS, removed, notify=True)


def setup(module: ModuleAPI, service: PepService) -> None:
    private = module.service(PrivateStorage)
    sync = BookmarkSync(service, private)
    limit = service.limits.max_items
    # XEP-0402 section 3.3 and XEP-0223: private, persistent; bookmarks are many items.
    service.set_default(NS_BOOKMARKS, access_model="whitelist", persist_items=True, max_items=limit,
                        send_last_published_item="never")
    service.set_default(LEGACY_NODE, access_model="whitelist", persist_items=True)
    service.watch(NS_BOOKMARKS, sync.modern_changed)
    service.watch(LEGACY_NODE, sync.legacy_pep_changed)
    private.watch(NS_LEGACY, "storage", sync.private_changed)
    for feature in FEATURES:
        module.add_feature(feature, target=ACCOUNT)
