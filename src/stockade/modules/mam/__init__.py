"""XEP-0313: Message Archive Management for user archives (urn:xmpp:mam:2 and #extended).

Every local user has an archive of the messages they send and receive (archiving.py says which),
kept in the "mam" archive store under (host, username). Received messages carry a XEP-0359
<stanza-id by='user@host'/> with the archive id. The user queries the archive on their own bare
JID (query.py reads the query, paging.py selects the page with XEP-0059 paging, rsm.py is the
shared RSM helper), and sets archiving preferences (prefs.py, XEP-0441).

A query is answered with one <message><result/></message> per item, written to the requesting
session in archive order, then the IQ result with <fin/>: all on the same session, so they
arrive in that order. Queries on another user's archive are <forbidden/>; queries to the server
domain are not archives (<service-unavailable/>).

Expiry of old items is not here: retention ([hosts.retention], compliance/retention.py) purges
user archives together with the journal, and honours legal holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config.options import option
from ...core.hooks import (AccountRemoved, MessageFromLocal, MessageToLocal, MessageUndeliverable,
                           ServerStarted, SessionBound, SessionClosed)
from ...core.iq import ACCOUNT, IqRequest
from ...core.module_api import ModuleAPI
from ...protocol.errors import StanzaError
from ...protocol.jid import JID
from ...protocol.xml import Element
from ..roster import RosterService
from .archiving import Archiver
from .paging import ArchiveSearch, fin, result_message
from .prefs import DEFAULTS, ArchivePrefs, PrefsService
from .query import NS_MAM, NS_MAM_EXTENDED, NS_SID, parse_query, query_form

__all__ = ["Archiver", "MessageArchive", "NS_MAM", "Options", "setup"]


@dataclass(frozen=True)
class Options:
    default_preference: str = option(
        "always", choices=DEFAULTS,
        help="What is archived for users who have not set their own preference (XEP-0441): "
             "'always', 'never', or 'roster' (only messages with contacts in the roster).")
    max_page_size: int = option(
        100, min=1, max=1000,
        help="Most archived messages returned for one query; clients page through the rest (XEP-0059).")


class MessageArchive:
    """The user archive as other modules see it (provided as a service)."""

    def __init__(self, module: ModuleAPI, options: Options) -> None:
        self.module = module
        self.store = module.open_store("mam", "archive")
        self.roster = module.service(RosterService)
        self.prefs = PrefsService(module, options.default_preference)
        self.archiver = Archiver(module, self.store, self.prefs, self.roster)
        self.search = ArchiveSearch(self.store, options.max_page_size)

    async def flush(self) -> None:
        """Wait until the archive writes queued so far are committed: a stream-management
        layer awaits this before acknowledging stanzas (archiving.py, "Durability")."""
        await self.archiver.flush()

    # -- IQ handlers ----------------------------------------------------------------------------
    @staticmethod
    def _own(request: IqRequest) -> JID:
        if not request.is_own_account:
            raise StanzaError("forbidden", "you can only use your own message archive")
        return request.target

    def _may_read(self, owner: JID) -> None:
        permissions = self.module.ctx.permissions         # policy/permissions.py: "history"
        denial = permissions.refuse(owner.domain, owner.local or "", "history") if permissions is not None else None
        if denial is not None:
            raise denial.error()

    async def query(self, request: IqRequest) -> Element:
        owner = self._own(request)
        self._may_read(owner)
        query = parse_query(request.payload)
        # Writes are committed in batches; a query sees every message routed before it.
        await self.archiver.flush()
        page = await self.search.page(owner, query)
        # Results come from the address queried (none when the query had no 'to', as XEP-0313 shows).
        archive_jid = str(owner) if "to" in request.stanza.attrs else None
        items = reversed(page.items) if query.is_flipped else page.items
        for item in items:
            try:
                message = result_message(item, request.sender, archive_jid, query.queryid)
            except Exception:
                self.module.log.exception("archived item %s of %s cannot be read; skipped", item.id, owner)
                continue
            self._send(request, message)
        return request.result(fin(page))

    def _send(self, request: IqRequest, stanza: Element) -> None:
        # Straight to the requesting session, like the IQ result after it: same order on the wire.
        if request.session is not None:
            request.session.send(stanza)
        else:
            self.module.send(stanza)

    async def fields(self, request: IqRequest) -> Element:
        self._own(request)
        return request.result(query_form())

    async def metadata(self, request: IqRequest) -> Element:
        owner = self._own(request)
        self._may_read(owner)
        await self.archiver.flush()
        return request.result(await self.search.metadata(owner))

    async def get_prefs(self, request: IqRequest) -> Element:
        return request.result((await self.prefs.get(self._own(request))).to_element())

    async def set_prefs(self, request: IqRequest) -> Element:
        owner = self._own(request)
        prefs = ArchivePrefs.from_element(request.payload)
        await self.prefs.set(owner, prefs)
        return request.result(prefs.to_element())

    # -- lifecycle ------------------------------------------------------------------------------
    async def session_bound(self, event: SessionBound) -> None:
        await self.prefs.load(event.session.bare)

    async def session_closed(self, event: SessionClosed) -> None:
        owner = event.session.bare
        if not self.module.sessions.is_online(owner):
            self.prefs.forget(owner)

    async def account_removed(self, event: AccountRemoved) -> None:
        await self.store.delete(event.host, event.username)
        await self.prefs.remove(JID(event.username, event.host, None))


def setup(module: ModuleAPI) -> None:
    archive = MessageArchive(module, module.options or Options())
    module.provide(archive)
    for feature in (NS_MAM, NS_MAM_EXTENDED, NS_SID):
        module.add_feature(feature, target=ACCOUNT)
    archiver = archive.archiver
    module.on(MessageFromLocal, archiver.from_local)
    module.on(MessageToLocal, archiver.to_local)
    module.on(MessageUndeliverable, archiver.undeliverable)      # before offline storage (FALLBACK)
    module.on(SessionBound, archive.session_bound)
    module.on(SessionClosed, archive.session_closed)
    module.on(AccountRemoved, archive.account_removed)
    module.on_iq("set", NS_MAM, "query", archive.query, target=ACCOUNT)
    module.on_iq("get", NS_MAM, "query", archive.fields, target=ACCOUNT)
    module.on_iq("get", NS_MAM, "metadata", archive.metadata, target=ACCOUNT)
    module.on_iq("get", NS_MAM, "prefs", archive.get_prefs, target=ACCOUNT)
    module.on_iq("set", NS_MAM, "prefs", archive.set_prefs, target=ACCOUNT)

    async def started(_: ServerStarted) -> None:
        await archive.prefs.store.track_holders()    # most accounts keep the server's default
    module.on(ServerStarted, started)
