"""The `data_keys` table: data keys of encryption at rest, wrapped by master keys (crypto.py).

Every process that opens the database reads this table once (a handful of rows) and keeps the
unwrapped keys in memory. A new key is one INSERT; a master key rotation rewraps every row in
one transaction (`rewrap`), so that the table is never half rewrapped.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sqlalchemy import Connection, insert, select, update

from .crypto import KEY_BYTES, DataKey, Keyring
from .engine import Database
from .schema import data_keys

_c = data_keys.c
_ALL = select(_c.id, _c.wrapped, _c.master_key_id, _c.created).order_by(_c.id)


class DataKeyStore:
    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

    async def all(self) -> list[tuple[int, bytes, str, float]]:
        """Every data key, oldest first: (id, wrapped key, master key id, created)."""
        rows = await self._db.fetch_all("data_keys.read", _ALL)
        return [(row[0], bytes(row[1]), row[2], row[3]) for row in rows]

    async def create(self, keyring: Keyring) -> DataKey:
        """A new random data key, stored wrapped by the keyring's current master key."""
        key = os.urandom(KEY_BYTES)
        created = self._clock()
        return await self._db.write("data_keys.create", self._insert, keyring, key, created)

    @staticmethod
    def _insert(conn: Connection, keyring: Keyring, key: bytes, created: float) -> DataKey:
        # The id is part of the wrapping's associated data: insert, then wrap with the id.
        key_id = conn.execute(insert(data_keys).values(wrapped=b"", master_key_id="", created=created)
                              .returning(_c.id)).scalar_one()
        wrapped, master_id = keyring.wrap(key_id, key)
        conn.execute(update(data_keys).where(_c.id == key_id).values(wrapped=wrapped, master_key_id=master_id))
        return DataKey(key_id, key, master_id, created)

    async def rewrap(self, keyring: Keyring, *, add_new_key: bool = True) -> list[int]:
        """Wrap every data key with the keyring's current master key, in one transaction (the
        keyring must still hold the keys that wrap them now), and add a new data key for new
        writes. Returns the ids of the rewrapped keys."""
        key = os.urandom(KEY_BYTES) if add_new_key else None
        return await self._db.write("data_keys.rewrap", self._rewrap, keyring, key, self._clock())

    def _rewrap(self, conn: Connection, keyring: Keyring, new_key: bytes | None, created: float) -> list[int]:
        done = []
        for key_id, wrapped, master_id, _created in conn.execute(_ALL).all():
            key = keyring.unwrap(key_id, bytes(wrapped), master_id)
            rewrapped, new_master = keyring.wrap(key_id, key)
            conn.execute(update(data_keys).where(_c.id == key_id)
                         .values(wrapped=rewrapped, master_key_id=new_master))
            done.append(key_id)
        if new_key is not None:
            self._insert(conn, keyring, new_key, created)
        return done
