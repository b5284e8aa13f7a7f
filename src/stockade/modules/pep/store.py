"""Where PEP nodes and their items live.

- Node documents (configuration, explicit subscriptions, affiliations) are JSON in the map store
  "pep_nodes", one key per node. The nodes of an account with a live session stay in memory.
- Items of persistent nodes are rows of the archive store "pep_items": the partition column
  (`with_jid`) holds the node name, the key is "<node>\\n<item id>" (node names cannot contain a
  line break), the value is the serialised payload and `ts` the publication time. The archive's
  ascending ids give the publication order that max_items and "last published item" need.
- Items of nodes with pubsub#persist_items=false are kept in memory only (gone at restart).

Re-publishing an item id appends the new row before deleting the old one, so a crash in between
leaves a duplicate (resolved on read: the newest wins) rather than a lost item.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ...core.module_api import ModuleAPI
from ...protocol.jid import JID
from ...protocol.xml import Element, XmlError, parse
from .config import NodeConfig


@dataclass
class Item:
    id: str
    payload: Element
    when: float                     # unix time of publication


@dataclass
class Node:
    """One PEP node of an account."""
    name: str
    config: NodeConfig
    subscribers: dict[str, str] = field(default_factory=dict)    # subscribed JID -> "subscribed"
    affiliations: dict[str, str] = field(default_factory=dict)   # bare JID -> member | outcast
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config.to_json(), "subscribers": self.subscribers,
                "affiliations": self.affiliations, "created": self.created}

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any], base: NodeConfig) -> Node:
        return cls(name, NodeConfig.from_json(data.get("config", {}), base),
                   dict(data.get("subscribers", {})), dict(data.get("affiliations", {})),
                   float(data.get("created", 0.0)))


def _key(node: str, item_id: str) -> str:
    return f"{node}\n{item_id}"


class NodeStore:
    """Nodes and items per account. Callers serialise changes to one account with `lock(owner)`."""

    def __init__(self, module: ModuleAPI, base_config: NodeConfig) -> None:
        self.module = module
        self.base_config = base_config
        self.nodes_store = module.open_store("pep_nodes", "map")
        self.items_store = module.open_store("pep_items", "archive")
        self._cache: dict[JID, dict[str, Node]] = {}
        self._volatile: dict[tuple[JID, str], list[Item]] = {}
        self._locks: dict[JID, asyncio.Lock] = {}

    def lock(self, owner: JID) -> asyncio.Lock:
        lock = self._locks.get(owner)
        if lock is None:
            lock = self._locks[owner] = asyncio.Lock()
        return lock

    # -- nodes ----------------------------------------------------------------------------------
    async def nodes(self, owner: JID) -> dict[str, Node]:
        """All nodes of the account (kept in memory while the account has a session)."""
        cached = self._cache.get(owner)
        if cached is not None:
            return cached
        docs = await self.nodes_store.get_all(owner.domain, owner.local)
        nodes = {name: Node.from_json(name, doc, self.base_config) for name, doc in docs.items()}
        if self.module.sessions.is_online(owner) and owner not in self._cache:
            self._cache[owner] = nodes
        return self._cache.get(owner, nodes)

    async def get(self, owner: JID, name: str) -> Node | None:
        return (await self.nodes(owner)).get(name)

    async def save(self, owner: JID, node: Node) -> None:
        await self.nodes_store.set(owner.domain, owner.local, node.name, node.to_json())
        (await self.nodes(owner))[node.name] = node

    async def delete(self, owner: JID, node: Node) -> None:
        """Remove the node and all its items (items first, XEP-0060 8.4)."""
        await self.purge(owner, node)
        await self.nodes_store.set(owner.domain, owner.local, node.name, None)
        (await self.nodes(owner)).pop(node.name, None)

    def forget(self, owner: JID) -> None:
        """The account has no session left: drop what is cached for it (not volatile items)."""
        self._cache.pop(owner, None)
        lock = self._locks.get(owner)
        if lock is not None and not lock.locked():
            del self._locks[owner]

    async def remove_account(self, owner: JID) -> None:
        self._cache.pop(owner, None)
        for key in [k for k in self._volatile if k[0] == owner]:
            del self._volatile[key]
        await self.items_store.delete(owner.domain, owner.local)
        await self.nodes_store.delete_all(owner.domain, owner.local)

    # -- items ----------------------------------------------------------------------------------
    async def items(self, owner: JID, node: Node, *, last: int | None = None) -> list[Item]:
        """The node's items in publication order (only the `last` newest when given)."""
        if not node.config.persist_items:
            items = list(self._volatile.get((owner, node.name), []))
            return items[-last:] if last else items
        rows = await self.items_store.query(owner.domain, owner.local, with_jid=node.name,
                                            limit=last, reverse=last is not None)
        by_id: dict[str, Item] = {}
        for row in rows:
            item = self._item(node.name, row.key, row.value, row.when)
            if item is not None:
                by_id.pop(item.id, None)        # a duplicate left by a crash: the newer wins
                by_id[item.id] = item
        return list(by_id.values())

    async def item(self, owner: JID, node: Node, item_id: str) -> Item | None:
        if not node.config.persist_items:
            for item in self._volatile.get((owner, node.name), []):
                if item.id == item_id:
                    return item
            return None
        row = await self.items_store.get_by_key(owner.domain, owner.local, _key(node.name, item_id))
        return None if row is None else self._item(node.name, row.key, row.value, row.when)

    async def last_item(self, owner: JID, node: Node) -> Item | None:
        items = await self.items(owner, node, last=1)
        return items[-1] if items else None

    async def put(self, owner: JID, node: Node, item: Item) -> list[str]:
        """Store `item` (replacing one with the same id) and drop the oldest items beyond
        max_items. Returns the ids dropped."""
        if not node.config.persist_items:
            items = [i for i in self._volatile.get((owner, node.name), []) if i.id != item.id]
            items.append(item)
            dropped = items[:-node.config.max_items]
            self._volatile[(owner, node.name)] = items[-node.config.max_items:]
            return [i.id for i in dropped]
        host, user = owner.domain, owner.local
        key = _key(node.name, item.id)
        new = await self.items_store.append(host, user, item.payload.serialize("").decode(),
                                            with_jid=node.name, when=item.when, key=key)
        while True:                     # older rows with the same item id (one, or more after a crash)
            old = await self.items_store.get_by_key(host, user, key)
            if old is None or old.id == new.id:
                break
            await self.items_store.delete(host, user, ids=[old.id])
        return await self.trim(owner, node)

    async def trim(self, owner: JID, node: Node) -> list[str]:
        """Drop the oldest items beyond the node's max_items; returns their ids."""
        limit = node.config.max_items
        if not node.config.persist_items:
            items = self._volatile.get((owner, node.name), [])
            dropped, self._volatile[(owner, node.name)] = items[:-limit], items[-limit:]
            return [i.id for i in dropped]
        host, user = owner.domain, owner.local
        count = await self.items_store.count(host, user, with_jid=node.name)
        if count <= limit:
            return []
        oldest = await self.items_store.query(host, user, with_jid=node.name, limit=count - limit)
        await self.items_store.delete(host, user, ids=[row.id for row in oldest])
        return [row.key.split("\n", 1)[1] for row in oldest]

    async def remove(self, owner: JID, node: Node, item_ids: list[str]) -> None:
        if not node.config.persist_items:
            wanted = set(item_ids)
            key = (owner, node.name)
            self._volatile[key] = [i for i in self._volatile.get(key, []) if i.id not in wanted]
            return
        host, user = owner.domain, owner.local
        for item_id in item_ids:
            while (row := await self.items_store.get_by_key(host, user, _key(node.name, item_id))) is not None:
                await self.items_store.delete(host, user, ids=[row.id])

    async def purge(self, owner: JID, node: Node) -> None:
        """Remove every item of the node, stored or in memory."""
        self._volatile.pop((owner, node.name), None)
        host, user = owner.domain, owner.local
        rows = await self.items_store.query(host, user, with_jid=node.name)
        if rows:
            await self.items_store.delete(host, user, ids=[row.id for row in rows])

    async def set_persistence(self, owner: JID, node: Node, persist: bool) -> None:
        """pubsub#persist_items changed: move the items between storage and memory. `node` still
        has its old configuration."""
        if node.config.persist_items == persist:
            return
        items = await self.items(owner, node)
        if persist:
            self._volatile.pop((owner, node.name), None)
            for item in items:
                await self.items_store.append(owner.domain, owner.local, item.payload.serialize("").decode(),
                                              with_jid=node.name, when=item.when, key=_key(node.name, item.id))
        else:
            await self.purge(owner, node)
            self._volatile[(owner, node.name)] = items

    def _item(self, node: str, key: str, value: str, when: float) -> Item | None:
        prefix = node + "\n"
        if not key.startswith(prefix):
            return None
        try:
            payload = parse(value)
        except XmlError:
            self.module.log.error("a stored item of PEP node %r cannot be read; skipped", node)
            return None
        return Item(key[len(prefix):], payload, when)
