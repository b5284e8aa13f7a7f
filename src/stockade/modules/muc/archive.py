"""XEP-0313 for rooms: the archive of a logged room, queried on the room's bare JID.

Storing. A logged room archives every groupchat message with a body and every subject change,
once, as the room broadcast it (from the occupant JID, the client's MUC extensions removed),
keyed by the XEP-0359 stanza id the broadcast carries. The archive item's `with_jid` is the
sender's occupant JID (the "publisher" a 'with' filter matches, XEP-0313 4.1.1); the sender's
real full JID is kept inside the stored stanza and shown in results only to those allowed to see
real JIDs now (XEP-0313 6.1.2). Items live in the archive store "muc_archive" under
(service domain, room name). Appends are queued (group commit) so the broadcast does not wait;
a query first waits for the room's pending appends, so it sees every message broadcast before it.
The stanza id (`key`) should be made with `stockade.storage.new_key()`: time-ordered keys are
appended at the end of the archive's key index (storage/keys.py).

Querying. Who may read is who may enter now (6.1.2): nobody banned, members in a members-only
room, occupants or members in a password-protected one. Results go to the requester one message
each, then the IQ result with `<fin/>` (see mam_query.py for the paging).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ...protocol.errors import StanzaError
from ...protocol.jid import JID
from ...protocol.xml import Element, parse
from .mam_query import NS_MAM, fetch_page, fin, parse_query, query_form, result_message
from .roles import at_least
from .room import NS_USER, Occupant, Room

if TYPE_CHECKING:
    from .service import MucService

log = logging.getLogger(__name__)


class RoomArchive:
    def __init__(self, store: Any, max_page: int) -> None:
        self.store = store                    # an ArchiveStore
        self.max_page = max_page
        self._pending: dict[tuple[str, str], set[asyncio.Future[Any]]] = {}

    def append(self, room: Room, stanza: Element, sender: Occupant, key: str, when: float) -> None:
        """Queue a broadcast message for the archive (returns at once; see `flush`)."""
        stored = stanza.copy()
        stored.attrs.pop("to", None)
        stored.add("x", NS_USER).add("item", attrs={"jid": str(sender.jid)})
        where = (room.service.domain, room.name)
        commit = self.store.append_nowait(*where, stored.serialize("").decode(),
                                          with_jid=str(room.occupant_jid(sender.nick)), when=when, key=key)
        pending = self._pending.setdefault(where, set())
        if commit not in pending:       # the appends of one batch share their future
            pending.add(commit)
            commit.add_done_callback(lambda f: self._done(where, f))

    def _done(self, where: tuple[str, str], future: asyncio.Future[Any]) -> None:
        pending = self._pending.get(where)
        if pending is not None:
            pending.discard(future)
            if not pending:
                del self._pending[where]
        if not future.cancelled() and future.exception() is not None:
            log.error("a message of the room %s@%s could not be archived: %s", where[1], where[0], future.exception())

    async def flush(self, domain: str, name: str) -> None:
        pending = list(self._pending.get((domain, name), ()))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def delete(self, domain: str, name: str) -> None:
        await self.flush(domain, name)
        await self.store.delete(domain, name)

    # -- queries --------------------------------------------------------------------------------
    def check_access(self, room: Room, sender: JID) -> None:
        affiliation = room.affiliation(sender)
        if affiliation == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")
        if room.config.is_members_only and not at_least(affiliation, "member"):
            raise StanzaError("forbidden", "only members may read the archive of this members-only room")
        if room.config.is_password_protected and sender not in room.by_session and not at_least(affiliation, "member"):
            raise StanzaError("forbidden", "join this password-protected room to read its archive")

    async def query(self, service: MucService, room: Room, sender: JID, request: Element, payload: Element) -> Element:
        """Answer an IQ to the room: a get returns the query form; a set sends results, then <fin/>."""
        self.check_access(room, sender)
        if request.get("type") == "get":
            result = Element("query", NS_MAM)
            result.append(query_form())
            return result
        query = parse_query(payload)
        domain = service.domain
        await self.flush(domain, room.name)
        page = await fetch_page(self.store, domain, room.name, query, self.max_page)
        viewer = room.by_session.get(sender)
        show_jids = room.sees_real_jids(viewer) or at_least(room.affiliation(sender), "admin")
        items = list(reversed(page.items)) if query.flip else page.items
        for item in items:
            message = parse(item.value)
            if not show_jids:
                message.remove_all("x", NS_USER)
            await service.deliver(result_message(str(room.jid), str(sender), query.queryid, item, message))
        return fin(page)
