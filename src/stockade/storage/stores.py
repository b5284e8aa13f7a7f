"""Key-value and map stores: JSON documents per (host, user), separated by store name.

A key-value store holds one document per user (a vCard, privacy settings); a map store holds many,
each under a string key (roster items by JID, bookmarks by room). `user` may be "" for host-wide
data. Setting None deletes. Values go through `json` both ways, so they come back as plain
dicts, lists, strings, numbers, booleans and None (tuples come back as lists).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from sqlalchemy import CompoundSelect, Connection, Insert, bindparam, delete, literal_column, null, select, union_all

from .engine import Database
from .schema import kv, map_


def _dump(value: Any) -> str:
    # Compact, and UTF-8 in the database rather than \u escapes; NaN is not JSON, refuse it.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


_KV_WHERE = (kv.c.host == bindparam("host"), kv.c.username == bindparam("username"),
             kv.c.store == bindparam("store"))
_KV_GET = select(kv.c.value).where(*_KV_WHERE)
_KV_DELETE = delete(kv).where(*_KV_WHERE)
_KV_HOLDERS = select(kv.c.host, kv.c.username).where(kv.c.store == bindparam("store"))

_MAP_USER = (map_.c.host == bindparam("host"), map_.c.username == bindparam("username"),
             map_.c.store == bindparam("store"))
_MAP_GET = select(map_.c.value).where(*_MAP_USER, map_.c.key == bindparam("key"))
_MAP_GET_ALL = select(map_.c.key, map_.c.value).where(*_MAP_USER)
_MAP_DELETE = delete(map_).where(*_MAP_USER, map_.c.key == bindparam("key"))
_MAP_DELETE_ALL = delete(map_).where(*_MAP_USER)


class KeyValueStore:
    """One JSON value per (host, user) in the store named `store`."""

    def __init__(self, db: Database, store: str) -> None:
        self._db = db
        self.store = store
        self._upsert = db.upsert(kv, ("host", "username", "store"), ("value",))
        self._holders: set[tuple[str, str]] | None = None      # see track_holders
        self._added_while_loading: set[tuple[str, str]] | None = None
        self._writing: dict[tuple[str, str], int] = {}          # values being written now

    async def track_holders(self) -> None:
        """Read once which (host, user) have a value here; from then on `get` answers None for
        anyone else without reading (most accounts have no vCard, no archive preferences: a
        login saves a read per such store). Only for stores that no other process writes: a
        value written behind this object's back would stay unseen."""
        # Writes still on their way may commit after the read below has looked: count them in.
        self._added_while_loading = set(self._writing)
        try:
            rows = await self._db.fetch_all("keyval.holders", _KV_HOLDERS, {"store": self.store})
            self._holders = {(row[0], row[1]) for row in rows} | self._added_while_loading
        finally:
            self._added_while_loading = None

    async def get(self, host: str, user: str) -> Any | None:
        holders = self._holders
        if holders is not None and (host, user) not in holders:
            return None
        rows = await self._db.point_rows("keyval.get", _KV_GET,
                                         {"host": host, "username": user, "store": self.store})
        return json.loads(rows[0][0]) if rows else None

    async def _write_values(self, name: str, keys: list[tuple[str, str]], params: Any) -> None:
        # Holders are known before the write (one known too early costs a read, one known too
        # late would hide a value), and writes in flight are visible to track_holders.
        writing = self._writing
        for key in keys:
            writing[key] = writing.get(key, 0) + 1
            if self._holders is not None:
                self._holders.add(key)
            if self._added_while_loading is not None:
                self._added_while_loading.add(key)
        try:
            await self._db.execute(name, self._upsert, params)
        finally:
            for key in keys:
                left = writing.pop(key) - 1
                if left:
                    writing[key] = left

    async def set(self, host: str, user: str, value: Any | None) -> None:
        """Store `value` (replacing what was there); None deletes."""
        params = {"host": host, "username": user, "store": self.store}
        if value is None:
            await self._db.execute("keyval.delete", _KV_DELETE, params)
            if self._holders is not None and (host, user) not in self._writing:
                self._holders.discard((host, user))
        else:
            params["value"] = _dump(value)
            await self._write_values("keyval.set", [(host, user)], params)

    async def set_bulk(self, rows: list[tuple[str, str, Any]]) -> None:
        """Store many (host, user, value) entries in one transaction (bulk import)."""
        params = [{"host": h, "username": u, "store": self.store, "value": _dump(v)} for h, u, v in rows]
        if params:
            await self._write_values("keyval.set_bulk", [(h, u) for h, u, _ in rows], params)


class MapStore:
    """Many JSON values per (host, user), each under a string key, in the store named `store`."""

    def __init__(self, db: Database, store: str) -> None:
        self._db = db
        self.store = store
        self._upsert = db.upsert(map_, ("host", "username", "store", "key"), ("value",))

    async def get(self, host: str, user: str, key: str) -> Any | None:
        raw = await self._db.scalar("map.get", _MAP_GET, {"host": host, "username": user,
                                                          "store": self.store, "key": key})
        return None if raw is None else json.loads(raw)

    async def set(self, host: str, user: str, key: str, value: Any | None) -> None:
        """Store `value` under `key`; None deletes the key."""
        params = {"host": host, "username": user, "store": self.store, "key": key}
        if value is None:
            await self._db.execute("map.delete", _MAP_DELETE, params)
        else:
            params["value"] = _dump(value)
            await self._db.execute("map.set", self._upsert, params)

    async def set_many(self, host: str, user: str, items: dict[str, Any | None]) -> None:
        """Store or (for None) delete several keys in one transaction: all or nothing."""
        if not items:
            return
        base = {"host": host, "username": user, "store": self.store}
        # Serialise before the transaction: a bad value fails the call without touching the data.
        upserts = [{**base, "key": k, "value": _dump(v)} for k, v in items.items() if v is not None]
        deletes = [{**base, "key": k} for k, v in items.items() if v is None]
        await self._db.write("map.set_many", _set_many, self._upsert, upserts, deletes)

    async def set_bulk(self, rows: list[tuple[str, str, str, Any]]) -> None:
        """Store many (host, user, key, value) entries in one transaction (bulk import)."""
        upserts = [{"host": h, "username": u, "store": self.store, "key": k, "value": _dump(v)}
                   for h, u, k, v in rows]
        if upserts:
            await self._db.write("map.set_bulk", _set_many, self._upsert, upserts, [])

    async def get_all(self, host: str, user: str) -> dict[str, Any]:
        rows = await self._db.point_rows("map.get_all", _MAP_GET_ALL,
                                         {"host": host, "username": user, "store": self.store})
        return {key: json.loads(value) for key, value in rows}

    async def delete_all(self, host: str, user: str) -> None:
        await self._db.execute("map.delete_all", _MAP_DELETE_ALL,
                               {"host": host, "username": user, "store": self.store})


def _set_many(conn: Connection, upsert: Insert, upserts: list[dict], deletes: list[dict]) -> None:
    if deletes:
        conn.execute(_MAP_DELETE, deletes)
    if upserts:
        conn.execute(upsert, upserts)


async def get_together(host: str, user: str, *stores: KeyValueStore | MapStore) -> list[Any]:
    """For one user, what each store's `get` (key-value) or `get_all` (map) would return, in one
    read of the database instead of one each: a login loads several stores of its user (the
    roster's items, pending subscriptions and version), and on a busy server every read costs
    more to start than to run. The stores must be on the same database."""
    if not stores:
        return []
    db = stores[0]._db
    params: dict[str, Any] = {"host": host, "username": user}
    for n, store in enumerate(stores):
        params[f"s{n}"] = store.store
    rows = await db.point_rows("stores.get_together", _together(tuple(type(s) is MapStore for s in stores)),
                               params)
    found: list[Any] = [{} if type(s) is MapStore else None for s in stores]
    for n, key, value in rows:
        if key is None:
            found[n] = json.loads(value)
        else:
            found[n][key] = json.loads(value)
    return found


@lru_cache(maxsize=None)
def _together(maps: tuple[bool, ...]) -> CompoundSelect:
    """One SELECT of the rows of several stores of a user (see get_together): each row is
    (the store's position, the map key or NULL for a key-value store, the value). The store
    names are bind parameters s0, s1, ...; `maps` says which positions are map stores."""
    parts = []
    for n, is_map in enumerate(maps):
        where = bindparam(f"s{n}")
        if is_map:
            parts.append(select(literal_column(str(n)), map_.c.key, map_.c.value)
                         .where(map_.c.host == bindparam("host"), map_.c.username == bindparam("username"),
                                map_.c.store == where))
        else:
            parts.append(select(literal_column(str(n)), null(), kv.c.value)
                         .where(kv.c.host == bindparam("host"), kv.c.username == bindparam("username"),
                                kv.c.store == where))
    return union_all(*parts)
