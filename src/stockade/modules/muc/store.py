"""Persistent rooms in a map store: one JSON document per room, keyed (service domain, "", room name).

What survives a restart: the configuration, affiliations, reserved nicknames and the subject.
Occupants, discussion history and pending invitations do not: after a restart every room is
empty and its occupants join again. Temporary rooms are never written.
"""

from __future__ import annotations

from typing import Any

from ...protocol.jid import try_jid
from .config import RoomConfig
from .room import Room, Subject

FORMAT = 1


def room_document(room: Room) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "config": room.config.to_dict(),
        "affiliations": {str(jid): affiliation for jid, affiliation in room.affiliations.items()},
        "nicks": {str(jid): nick for jid, nick in room.reserved_nicks.items()},
        "subject": {"text": room.subject.text, "nick": room.subject.nick, "when": room.subject.when},
    }


def restore(room: Room, doc: dict[str, Any]) -> Room:
    """Fill a new room from its stored document (entries that are not valid JIDs are skipped)."""
    room.config = RoomConfig.from_dict(doc.get("config", {}))
    for raw, affiliation in doc.get("affiliations", {}).items():
        jid = try_jid(raw)
        if jid is not None and affiliation in ("owner", "admin", "member", "outcast"):
            room.affiliations[jid.bare] = affiliation
    for raw, nick in doc.get("nicks", {}).items():
        jid = try_jid(raw)
        if jid is not None and isinstance(nick, str):
            room.reserved_nicks[jid.bare] = nick
    subject = doc.get("subject") or {}
    room.subject = Subject(str(subject.get("text", "")), str(subject.get("nick", "")),
                           float(subject.get("when", 0.0)))
    return room


class RoomStore:
    def __init__(self, store: Any) -> None:
        self.store = store          # a MapStore

    async def load_all(self, domain: str) -> dict[str, dict[str, Any]]:
        return await self.store.get_all(domain, "")

    async def save(self, room: Room) -> None:
        await self.store.set(room.service.domain, "", room.name, room_document(room))

    async def delete(self, domain: str, name: str) -> None:
        await self.store.set(domain, "", name, None)
