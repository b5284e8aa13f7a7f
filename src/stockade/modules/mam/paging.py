"""XEP-0313 4.2-4.3 and 5: selecting one page of a user archive, and the stanzas that carry it.

The ids clients see are the archive items' keys (the XEP-0359 stanza ids). A key is turned into
an item with `get_by_key` (an indexed look-up); paging then runs on the items' positions in
archive order (time, then append order: storage/archive.py). An id that is not in the archive is
item-not-found (4.1.3, 4.3.2).

The whole result set of a query is bounded by its form (with, start, end, after-id, before-id,
ids); RSM <after/>/<before/> only move the page within it. One item more than the page is read
to know whether the page reached the end of the set in the direction of paging ('complete').

Counting (<count/> and <first index/>). The store counts the items between two positions with
the same filters, so the index of a page is one count. Where it follows from the page itself
(the first page, the last page, a page that reached an end) no count is made. A 'with' filter
has no index of its own (storage/archive.py): its count reads the owner's items in the time
range. Queries whose 'with' is a full JID are filtered after reading (the store keeps the bare
JID), and give neither count nor index, as XEP-0059 allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element, parse
from ...storage import ArchiveItem, ArchiveStore
from ..rsm import RsmPage, page_limit, page_result_set, paginate
from .query import NS_FORWARD, NS_MAM, MamQuery, format_stamp

SCAN_CHUNK = 200      # items read at a time when a full-JID 'with' is filtered after reading


def _uid(item: ArchiveItem) -> str:
    return item.key


@dataclass(frozen=True, slots=True)
class _Filters:
    with_jid: str | None
    start: float | None
    end: float | None

    def store_args(self) -> dict:
        return {"with_jid": self.with_jid, "start": self.start, "end": self.end}

    def matches(self, item: ArchiveItem) -> bool:
        return ((self.with_jid is None or item.with_jid == self.with_jid)
                and (self.start is None or item.when >= self.start)
                and (self.end is None or item.when <= self.end))


def _later(a: ArchiveItem | None, b: ArchiveItem | None) -> ArchiveItem | None:
    return b if a is None or (b is not None and b.position > a.position) else a


def _earlier(a: ArchiveItem | None, b: ArchiveItem | None) -> ArchiveItem | None:
    return b if a is None or (b is not None and b.position < a.position) else a


def _between(item: ArchiveItem, lo: ArchiveItem | None, hi: ArchiveItem | None) -> bool:
    return (lo is None or item.position > lo.position) and (hi is None or item.position < hi.position)


class ArchiveSearch:
    """Runs parsed queries against the user archive store."""

    def __init__(self, store: ArchiveStore, max_page: int) -> None:
        self.store = store
        self.max_page = max_page

    async def page(self, owner: JID, query: MamQuery) -> RsmPage[ArchiveItem]:
        host, user = owner.domain, owner.local or ""
        with_jid = query.with_jid
        filters = _Filters(str(with_jid.bare) if with_jid is not None else None, query.start, query.end)
        lo = await self._item(host, user, query.after_id, "after-id")
        hi = await self._item(host, user, query.before_id, "before-id")
        if query.ids is not None:
            return await self._by_ids(host, user, query, filters, lo, hi)
        rsm = query.rsm
        limit = page_limit(rsm, self.max_page)
        backward = rsm is not None and rsm.is_backward
        cursor_after = await self._item(host, user, rsm.after if rsm else None, "RSM <after/>")
        cursor_before = await self._item(host, user, rsm.before if rsm else None, "RSM <before/>")
        page_lo, page_hi = _later(lo, cursor_after), _earlier(hi, cursor_before)
        if page_lo is not None and page_hi is not None and page_lo.position >= page_hi.position:
            fetched: list[ArchiveItem] = []
        elif with_jid is not None and with_jid.resource is not None:
            items, has_more = await self._scan(host, user, filters, page_lo, page_hi, limit, backward,
                                               with_jid)
            return RsmPage(items, None, None, not has_more)
        else:
            fetched = await self.store.query(host, user, **filters.store_args(), after_item=page_lo,
                                             before_item=page_hi, limit=limit + 1, reverse=backward)
        has_more = len(fetched) > limit
        if backward:
            items = fetched[len(fetched) - limit:] if limit else []
        else:
            items = fetched[:limit]
        count = await self._count_between(host, user, filters, lo, hi)
        if not items:
            index = None
        elif (cursor_after is None and not backward) or (backward and not has_more):
            index = 0
        elif (backward and cursor_before is None) or (not backward and not has_more):
            index = count - len(items)
        else:
            index = await self._count_between(host, user, filters, lo, items[0])
        return RsmPage(items, count, index, not has_more)

    async def _item(self, host: str, user: str, key: str | None, what: str) -> ArchiveItem | None:
        if not key:
            return None
        item = await self.store.get_by_key(host, user, key)
        if item is None:
            raise StanzaError("item-not-found", f"{what}: there is no message with the id {key!r} in your archive")
        return item

    async def _by_ids(self, host: str, user: str, query: MamQuery, filters: _Filters,
                      lo: ArchiveItem | None, hi: ArchiveItem | None) -> RsmPage[ArchiveItem]:
        """Single-item retrieval (the 'ids' field), the other fields still applying."""
        found: dict[int, ArchiveItem] = {}
        for key in query.ids or ():
            item = await self._item(host, user, key, "ids")
            assert item is not None
            found[item.id] = item
        with_jid = query.with_jid
        items = [item for item in sorted(found.values(), key=lambda item: item.position)
                 if filters.matches(item) and _between(item, lo, hi)
                 and (with_jid is None or with_jid.resource is None or _involves(item, with_jid))]
        return paginate(items, query.rsm, _uid, self.max_page)

    async def _scan(self, host: str, user: str, filters: _Filters, lo: ArchiveItem | None,
                    hi: ArchiveItem | None, limit: int, backward: bool,
                    with_jid: JID) -> tuple[list[ArchiveItem], bool]:
        """A page of items involving exactly `with_jid` (a full JID), read in chunks."""
        after, before = lo, hi
        found: list[ArchiveItem] = []
        while len(found) <= limit:
            chunk = await self.store.query(host, user, **filters.store_args(), after_item=after,
                                           before_item=before, limit=SCAN_CHUNK, reverse=backward)
            for item in (reversed(chunk) if backward else chunk):
                if _involves(item, with_jid):
                    found.append(item)
                    if len(found) > limit:
                        break
            if len(chunk) < SCAN_CHUNK:
                break
            if backward:
                before = chunk[0]
            else:
                after = chunk[-1]
        has_more = len(found) > limit
        found = found[:limit]
        if backward:
            found.reverse()
        return found, has_more

    async def _count_between(self, host: str, user: str, filters: _Filters,
                             lo: ArchiveItem | None, hi: ArchiveItem | None) -> int:
        """How many items match `filters` strictly after `lo` and strictly before `hi`."""
        if lo is not None and hi is not None and lo.position >= hi.position:
            return 0
        return await self.store.count(host, user, **filters.store_args(), after_item=lo,
                                      before_item=hi)

    async def metadata(self, owner: JID) -> Element:
        """The first and last items of the archive (XEP-0313 6, #extended)."""
        host, user = owner.domain, owner.local or ""
        out = Element("metadata", NS_MAM)
        first = await self.store.query(host, user, limit=1)
        if first:
            last = await self.store.query(host, user, limit=1, reverse=True)
            for name, item in (("start", first[0]), ("end", last[0])):
                out.add(name, attrs={"id": item.key, "timestamp": format_stamp(item.when)})
        return out


def _involves(item: ArchiveItem, jid: JID) -> bool:
    """The stored message is to or from exactly `jid` (XEP-0313 4.1.1, a full JID)."""
    try:
        stanza = parse(item.value)
    except Exception:
        return False
    return try_jid(stanza.attrs.get("from")) == jid or try_jid(stanza.attrs.get("to")) == jid


def result_message(item: ArchiveItem, to: JID, archive_jid: str | None, queryid: str | None) -> Element:
    """`<message><result><forwarded><delay/><message/></forwarded></result></message>` (4.2).
    `archive_jid` is the address the query was sent to (none when it had no 'to')."""
    attrs = {"to": str(to)}
    if archive_jid:
        attrs["from"] = archive_jid
    out = Element("message", ns.CLIENT, attrs)
    result = out.add("result", NS_MAM, {"id": item.key})
    if queryid is not None:
        result.attrs["queryid"] = queryid
    forwarded = result.add("forwarded", NS_FORWARD)
    forwarded.add("delay", ns.DELAY, {"stamp": format_stamp(item.when)})
    forwarded.append(parse(item.value))
    return out


def fin(page: RsmPage[ArchiveItem]) -> Element:
    """The `<fin/>` of the IQ result: 'complete' and the RSM summary of the page (4.3)."""
    out = Element("fin", NS_MAM, {"complete": "true" if page.is_complete else "false"})
    out.append(page_result_set(page, _uid))
    return out
