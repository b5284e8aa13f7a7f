"""The PEP service of every account: the XEP-0060 use cases as operations on one account's nodes.

The IQ handlers (handlers.py) call these after parsing a request; other features (bookmarks,
avatars) call them to publish on a user's behalf. Every change to an account's nodes is made
under that account's lock; notifications go out after the change is stored. Watchers registered
with `watch(node, callback)` hear about changes that clients made (handlers.py calls `changed`),
never about changes made through this API, so features that mirror one node into another cannot
loop.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ...core.module_api import ModuleAPI
from ...protocol.errors import StanzaError
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from .access import AccessControl
from .config import MAX_ITEM_ID, ConfigChange, NodeConfig, precondition_not_met, pubsub_error
from .notify import Notifier
from .store import Item, Node, NodeStore


@dataclass
class Limits:
    max_items: int              # per node, what "max" means
    default_max_items: int
    max_nodes: int              # per account
    max_item_size: int          # bytes of one serialised payload
    max_subscribers: int        # explicit subscriptions plus affiliations, per node


@dataclass
class Change:
    """A change a client made to one of its nodes."""
    owner: JID
    node: str
    kind: str                               # publish | retract | purge | delete
    item: Item | None = None
    item_ids: list[str] = field(default_factory=list)


Watcher = Callable[[Change], Awaitable[None]]


class PepService:
    def __init__(self, module: ModuleAPI, limits: Limits, store: NodeStore, access: AccessControl,
                 notifier: Notifier) -> None:
        self.module = module
        self.limits = limits
        self.store = store
        self.access = access
        self.notifier = notifier
        self._watchers: dict[str, list[Watcher]] = {}
        self._defaults: dict[str, dict[str, object]] = {}

    # -- extension points -----------------------------------------------------------------------
    def watch(self, node: str, watcher: Watcher) -> None:
        self._watchers.setdefault(node, []).append(watcher)

    def set_default(self, node: str, **values: object) -> None:
        """Default configuration of a node of this name when it is created (e.g. whitelist for
        private data, so that a client that forgets publish-options leaks nothing)."""
        self._defaults[node] = values

    def default_config(self, node: str) -> NodeConfig:
        config = NodeConfig(max_items=self.limits.default_max_items)
        overrides = self._defaults.get(node)
        return dataclasses.replace(config, **overrides) if overrides else config  # type: ignore[arg-type]

    async def changed(self, change: Change) -> None:
        for watcher in self._watchers.get(change.node, ()):
            try:
                await watcher(change)
            except Exception:
                # The client's own change succeeded; a mirror that failed must not undo it.
                self.module.log.exception("mirroring a change of %s's node %r failed", change.owner, change.node)

    # -- nodes ----------------------------------------------------------------------------------
    async def node(self, owner: JID, name: str) -> Node:
        node = await self.store.get(owner, name)
        if node is None:
            raise StanzaError("item-not-found", f"there is no node {name!r} here")
        return node

    async def _create(self, owner: JID, name: str, change: ConfigChange | None) -> Node:
        nodes = await self.store.nodes(owner)
        if len(nodes) >= self.limits.max_nodes:
            raise StanzaError("not-allowed", f"an account keeps at most {self.limits.max_nodes} PEP nodes; "
                                             f"delete one you no longer use first")
        config = self.default_config(name)
        if change is not None:
            config = change.apply(config)
        node = Node(name, config, created=self.module.clock.time())
        await self.store.save(owner, node)
        return node

    async def create(self, owner: JID, name: str, change: ConfigChange | None) -> Node:
        async with self.store.lock(owner):
            if await self.store.get(owner, name) is not None:
                raise StanzaError("conflict", f"the node {name!r} already exists")
            return await self._create(owner, name, change)

    async def configure(self, owner: JID, name: str, change: ConfigChange) -> Node:
        async with self.store.lock(owner):
            node = await self.node(owner, name)
            config = change.apply(node.config)
            if config == node.config:
                return node
            await self.store.set_persistence(owner, node, config.persist_items)
            node.config = config
            await self.store.save(owner, node)
            await self.store.trim(owner, node)
            lost = await self._drop_unauthorised(owner, node)
        for jid in lost:
            await self.notifier.subscription_changed(owner, node, jid, "none")
        if node.config.notify_config:
            await self.notifier.configured(owner, node)
        return node

    async def delete(self, owner: JID, name: str) -> None:
        async with self.store.lock(owner):
            node = await self.node(owner, name)
            told = await self.notifier.recipients(owner, node) if node.config.notify_delete else []
            await self.store.delete(owner, node)
        await self.notifier.deleted(owner, node, told)

    async def purge(self, owner: JID, name: str) -> None:
        async with self.store.lock(owner):
            node = await self.node(owner, name)
            await self.store.purge(owner, node)
        if node.config.notify_retract:
            await self.notifier.purged(owner, node)

    # -- items ----------------------------------------------------------------------------------
    async def publish(self, owner: JID, name: str, payload: Element, item_id: str | None = None,
                      options: ConfigChange | None = None, *, notify: bool = True) -> tuple[Node, Item]:
        """Publish (or replace) one item, creating the node when needed (auto-create); `options`
        are the publish-options: the new node's configuration, or preconditions on an existing one."""
        size = len(payload.serialize(""))
        if size > self.limits.max_item_size:
            raise pubsub_error("not-acceptable", "payload-too-big",
                               f"the item is {size} bytes; this server keeps items of at most "
                               f"{self.limits.max_item_size} bytes")
        if item_id is not None and (not item_id or len(item_id) > MAX_ITEM_ID):
            raise StanzaError("bad-request", f"an item id has 1 to {MAX_ITEM_ID} characters")
        async with self.store.lock(owner):
            node = await self.store.get(owner, name)
            if node is None:
                node = await self._create(owner, name, options)
            elif options is not None and (why := options.mismatch(node.config)) is not None:
                raise precondition_not_met(why)
            item = Item(item_id or secrets.token_hex(10), payload, self.module.clock.time())
            await self.store.put(owner, node, item)
        if notify:
            await self.notifier.published(owner, node, item)
        return node, item

    async def retract(self, owner: JID, name: str, item_ids: list[str], notify: bool | None = None) -> Node:
        """Delete items; notify when asked to (retract notify='true') or, when the request did not
        say, when the node's pubsub#notify_retract says so."""
        async with self.store.lock(owner):
            node = await self.node(owner, name)
            for item_id in item_ids:
                if await self.store.item(owner, node, item_id) is None:
                    raise StanzaError("item-not-found", f"there is no item {item_id!r} in node {name!r}")
            await self.store.remove(owner, node, item_ids)
        if node.config.notify_retract if notify is None else notify:
            await self.notifier.retracted(owner, node, item_ids)
        return node

    async def items(self, owner: JID, name: str, requester: JID, item_ids: list[str] | None = None,
                    max_items: int | None = None) -> tuple[Node, list[Item]]:
        node = await self.node(owner, name)
        await self.access.check(owner, node, requester)
        if item_ids:
            found = [await self.store.item(owner, node, item_id) for item_id in item_ids]
            return node, [item for item in found if item is not None]
        return node, await self.store.items(owner, node, last=max_items)

    # -- subscriptions and affiliations ---------------------------------------------------------
    async def subscribe(self, owner: JID, name: str, requester: JID, jid: JID) -> Node:
        if jid.bare != requester.bare:
            raise pubsub_error("bad-request", "invalid-jid", "you can only subscribe your own address")
        async with self.store.lock(owner):
            node = await self.node(owner, name)
            await self.access.check(owner, node, requester)
            if str(jid) not in node.subscribers:
                if len(node.subscribers) + len(node.affiliations) >= self.limits.max_subscribers:
                    raise pubsub_error("policy-violation", "too-many-subscriptions",
                                       "this node has as many subscribers as it may have", type_="wait")
                node.subscribers[str(jid)] = "subscribed"
                await self.store.save(owner, node)
        if node.config.send_last_published_item != "never" and node.config.deliver_notifications:
            await self.notifier.send_last(owner, node, jid)
        return node

    async def unsubscribe(self, owner: JID, name: str, requester: JID, jid: JID) -> None:
        if jid.bare != requester.bare and requester.bare != owner:
            raise StanzaError("forbidden", "you can only unsubscribe your own address")
        async with self.store.lock(owner):
            node = await self.node(owner, name)
            if node.subscribers.pop(str(jid), None) is None:
                raise pubsub_error("unexpected-request", "not-subscribed", f"{jid} is not subscribed to {name!r}",
                                   type_="cancel")
            await self.store.save(owner, node)

    async def subscriptions_of(self, owner: JID, requester: JID, name: str | None) -> list[tuple[str, str]]:
        """(node, subscribed JID) of the requester's subscriptions at this service."""
        nodes = await self.store.nodes(owner)
        out = []
        for node in nodes.values():
            if name is not None and node.name != name:
                continue
            for jid in node.subscribers:
                parsed = try_jid(jid)
                if parsed is not None and parsed.bare == requester.bare:
                    out.append((node.name, jid))
        return out

    async def affiliations_of(self, owner: JID, requester: JID, name: str | None) -> list[tuple[str, str]]:
        nodes = await self.store.nodes(owner)
        out = []
        for node in nodes.values():
            if name is not None and node.name != name:
                continue
            if requester.bare == owner:
                out.append((node.name, "owner"))
            elif str(requester.bare) in node.affiliations:
                out.append((node.name, node.affiliations[str(requester.bare)]))
        return out

    async def set_affiliations(self, owner: JID, name: str, changes: list[tuple[JID, str]]) -> None:
        """XEP-0060 8.9.2: the owner grants 'member' (whitelist access) or 'outcast', or 'none'."""
        for jid, affiliation in changes:
            if jid.bare == owner:
                raise StanzaError("not-acceptable", "the owner of a PEP node stays its owner")
            if affiliation in ("owner", "publisher", "publish-only"):
                raise StanzaError("not-acceptable", f"only the account publishes to its PEP nodes; "
                                                    f"{affiliation!r} cannot be given to {jid}")
            if affiliation not in ("member", "outcast", "none"):
                raise StanzaError("bad-request", f"unknown affiliation {affiliation!r}")
        async with self.store.lock(owner):
            node = await self.node(owner, name)
            affiliations = dict(node.affiliations)
            for jid, affiliation in changes:
                if affiliation == "none":
                    affiliations.pop(str(jid.bare), None)
                else:
                    affiliations[str(jid.bare)] = affiliation
            if len(node.subscribers) + len(affiliations) > self.limits.max_subscribers:
                raise StanzaError("not-acceptable", f"a node has at most {self.limits.max_subscribers} "
                                                    f"affiliations and subscriptions")
            node.affiliations = affiliations
            lost = await self._drop_unauthorised(owner, node)
            await self.store.save(owner, node)
        for jid in lost:
            await self.notifier.subscription_changed(owner, node, jid, "none")

    async def _drop_unauthorised(self, owner: JID, node: Node) -> list[JID]:
        """Cancel explicit subscriptions whose subscriber may no longer read the node (XEP-0163 8.1)."""
        lost = []
        for subscribed in list(node.subscribers):
            jid = try_jid(subscribed)
            if jid is None or not await self.access.allows(owner, node, jid):
                del node.subscribers[subscribed]
                if jid is not None:
                    lost.append(jid)
        return lost
