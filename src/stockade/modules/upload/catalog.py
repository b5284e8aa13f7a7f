"""The bookkeeping of HTTP upload: slots handed out, files stored, bytes used per user.

Slots (permissions to PUT one file) live in memory only: they last minutes, and a restart simply
makes the client ask again. Stored files are recorded in the map store "uploads" under
(domain, "", file id), one record per file with who uploaded it, when, its name, type, size and
whether it may be downloaded. Keeping all of a domain's records under one key (not under each
user) lets the server find every file at startup, even those of an account removed while the
server was down, so that expiry and removal never miss one.

The records are loaded once and then kept in memory: a download or a quota check costs a
dictionary lookup. The bytes reserved by slots not yet used count against the quota too, so
asking for many slots at once cannot get around it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Collection

from .files import FileStore

log = logging.getLogger(__name__)

AVAILABLE = "available"        # downloadable
QUARANTINED = "quarantined"    # kept (a policy held it for review), never downloadable


@dataclass(slots=True)
class Slot:
    """Permission to PUT one file of exactly `size` bytes and this type, until `expires`."""
    id: str
    host: str
    username: str
    filename: str
    size: int
    content_type: str
    expires: float                  # on the clock's monotonic scale
    is_uploading: bool = False


@dataclass(slots=True)
class StoredFile:
    id: str
    host: str
    username: str
    filename: str
    content_type: str
    size: int
    time: float                     # wall clock, when it was stored
    status: str = AVAILABLE
    path: str = ""                  # relative to the uploads folder, for operators
    rule: str = ""                  # the policy rule that quarantined it, if one did

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        del record["id"], record["host"]
        return record

    @classmethod
    def from_record(cls, host: str, file_id: str, record: dict[str, Any]) -> StoredFile:
        return cls(id=file_id, host=host, username=record["username"], filename=record["filename"],
                   content_type=record["content_type"], size=int(record["size"]), time=float(record["time"]),
                   status=record.get("status", AVAILABLE), path=record.get("path", ""), rule=record.get("rule", ""))


@dataclass
class Catalog:
    store: Any                      # storage MapStore "uploads"
    files: FileStore
    domains: set[str]
    slots: dict[str, Slot] = field(default_factory=dict)
    stored: dict[str, StoredFile] = field(default_factory=dict)
    # Ids of slots that were used (or refused by a policy) and their original expiry: a second
    # PUT gets 409 rather than "unknown", until the slot would have expired anyway.
    spent: dict[str, float] = field(default_factory=dict)
    _usage: dict[tuple[str, str], int] = field(default_factory=dict)
    _loaded: bool = False
    _load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # -- loading --------------------------------------------------------------------------------
    async def load(self) -> None:
        """Read every domain's records (once), dropping those whose file is gone."""
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return
            removed = await asyncio.to_thread(self.files.remove_partials)
            if removed:
                log.info("removed %d partly received uploads left by an earlier run", removed)
            for host in sorted(self.domains):
                for file_id, record in (await self.store.get_all(host, "")).items():
                    try:
                        item = StoredFile.from_record(host, file_id, record)
                    except (KeyError, TypeError, ValueError):
                        log.error("the upload record %s of %s is unreadable; it is ignored", file_id, host)
                        continue
                    if not await asyncio.to_thread(self.files.exists, file_id):
                        # The server stopped between recording the file and storing it.
                        log.warning("the uploaded file %s of %s@%s is missing; its record is removed",
                                    file_id, item.username, host)
                        await self.store.set(host, "", file_id, None)
                        continue
                    self._add(item)
            self._loaded = True

    # -- quota ----------------------------------------------------------------------------------
    def usage(self, host: str, username: str, now: float) -> int:
        """Bytes stored by the user plus bytes reserved by their slots still open at `now`."""
        reserved = sum(s.size for s in self.slots.values()
                       if s.host == host and s.username == username and (s.expires > now or s.is_uploading))
        return self._usage.get((host, username), 0) + reserved

    # -- slots ----------------------------------------------------------------------------------
    def open_slot(self, slot: Slot) -> None:
        self.slots[slot.id] = slot

    def spend(self, slot: Slot) -> None:
        """The slot was used, or refused for good: it never takes another PUT."""
        self.slots.pop(slot.id, None)
        self.spent[slot.id] = slot.expires

    def drop_slot(self, slot: Slot) -> None:
        self.slots.pop(slot.id, None)

    # -- stored files ---------------------------------------------------------------------------
    def _add(self, item: StoredFile) -> None:
        self.stored[item.id] = item
        key = (item.host, item.username)
        self._usage[key] = self._usage.get(key, 0) + item.size

    async def add(self, item: StoredFile, commit: Callable[[], Awaitable[None]]) -> None:
        """Record a received file, then `commit` its bytes, then make it known. A record without
        bytes (the server stopped in between) is cleaned up at the next start; bytes without a
        record cannot happen."""
        await self.store.set(item.host, "", item.id, item.to_record())
        try:
            await commit()
        except BaseException:
            await self.store.set(item.host, "", item.id, None)
            raise
        self._add(item)

    async def set_status(self, item: StoredFile, status: str, rule: str) -> None:
        """Change whether a stored file may be downloaded (quarantine review, policy/file_quarantine.py):
        the record is written first; the file in memory changes only once that succeeded."""
        record = item.to_record()
        record["status"], record["rule"] = status, rule
        await self.store.set(item.host, "", item.id, record)
        item.status, item.rule = status, rule

    async def remove(self, item: StoredFile) -> None:
        """Delete a stored file: its record first, so a failure never leaves a record of nothing."""
        if self.stored.pop(item.id, None) is None:
            return
        key = (item.host, item.username)
        self._usage[key] = self._usage.get(key, 0) - item.size
        if self._usage[key] <= 0:
            del self._usage[key]
        await self.store.set(item.host, "", item.id, None)
        await self.files.delete(item.id)

    async def remove_user(self, host: str, username: str) -> int:
        """Delete every file and slot of an account (it was removed)."""
        await self.load()
        for slot in [s for s in self.slots.values() if s.host == host and s.username == username]:
            if not slot.is_uploading:
                self.drop_slot(slot)
        mine = [f for f in self.stored.values() if f.host == host and f.username == username]
        for item in mine:
            await self.remove(item)
        return len(mine)

    async def purge(self, now_wall: float, now_mono: float, max_age: float,
                    held: Collection[tuple[str, str]] = ()) -> int:
        """Forget expired slots; delete files stored `max_age` seconds ago or earlier (0: keep),
        except those of the (host, username) in `held` (legal holds, compliance/holds.py)."""
        await self.load()
        for slot in [s for s in self.slots.values() if s.expires <= now_mono and not s.is_uploading]:
            self.drop_slot(slot)
        for slot_id in [i for i, expires in self.spent.items() if expires <= now_mono]:
            del self.spent[slot_id]
        if max_age <= 0:
            return 0
        old = [f for f in self.stored.values() if f.time + max_age <= now_wall and (f.host, f.username) not in held]
        for item in old:
            try:
                await self.remove(item)
            except OSError as exc:
                log.error("could not delete the expired upload %s: %s", item.id, exc)
        return len(old)
