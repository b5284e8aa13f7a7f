"""XEP-0313 queries with XEP-0059 paging over an archive store: parsing, paging, result stanzas.

Nothing here is specific to chat rooms: the room archive uses it, and a user archive can use it
the same way (give it the store, the (host, user) key of the archive and the parsed query).

Theory of operation
-------------------
A query is `<query xmlns='urn:xmpp:mam:2' queryid?>` with an optional data form (FORM_TYPE
urn:xmpp:mam:2; fields 'with', 'start', 'end') and an optional RSM `<set/>` (`max`, `after`,
`before`; an empty `<before/>` asks for the last page). `parse_query` refuses what it does not
understand: an unknown form field is <feature-not-implemented/> (XEP-0313 4.1.5), a bad date or a
bad number <bad-request/>, an RSM `<index/>` <feature-not-implemented/> (XEP-0059 2.5 allows it).

The UIDs in results and in RSM `after`/`before` are the archive items' keys (the XEP-0359 stanza
ids). `fetch_page` turns those keys into items (positions in archive order: time, then append
order, storage/archive.py), asks the store for one item more than the
page so that it knows whether the page reached the end of the result set ('complete'), and
counts the whole set for `<count/>`. `<first index/>` is given where it is known without another
count: paging forwards, for the first page and a page that reaches the end; paging backwards,
for a page that reaches the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.jid import try_jid
from ...protocol.xml import Element
from ...storage import ArchiveItem
from .forms import add_field, new_form, read_submission
from .history import parse_stamp, stamp

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_SID = "urn:xmpp:sid:0"
QUERY_FIELDS = ("with", "start", "end")


@dataclass(frozen=True)
class RsmRequest:
    """XEP-0059 request: `before` is "" for the last page, None when absent."""
    max: int | None = None
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True)
class MamQuery:
    queryid: str | None = None
    with_jid: str | None = None
    start: float | None = None
    end: float | None = None
    rsm: RsmRequest = RsmRequest()
    flip: bool = False


@dataclass(frozen=True)
class Page:
    items: list[ArchiveItem]
    count: int
    first_index: int | None
    complete: bool


class Archive(Protocol):
    async def query(self, host: str, user: str, *, with_jid: str | None = None, start: float | None = None,
                    end: float | None = None, after_item: ArchiveItem | None = None,
                    before_item: ArchiveItem | None = None, limit: int | None = None,
                    reverse: bool = False) -> list[ArchiveItem]: ...
    async def count(self, host: str, user: str, *, with_jid: str | None = None, start: float | None = None,
                    end: float | None = None) -> int: ...
    async def get_by_key(self, host: str, user: str, key: str) -> ArchiveItem | None: ...


def parse_rsm(parent: Element) -> RsmRequest:
    rsm = parent.find("set", NS_RSM)
    if rsm is None:
        return RsmRequest()
    if rsm.find("index", NS_RSM) is not None:
        raise StanzaError("feature-not-implemented", "paging by index is not supported; page with <after/> or <before/>")
    max_text = rsm.find_text("max", NS_RSM)
    max_items = None
    if max_text is not None:
        try:
            max_items = int(max_text.strip())
        except ValueError:
            raise StanzaError("bad-request", f"RSM <max/> must be a whole number, not {max_text!r}") from None
        if max_items < 0:
            raise StanzaError("bad-request", "RSM <max/> cannot be negative")
    after = rsm.find_text("after", NS_RSM)
    before = rsm.find_text("before", NS_RSM)
    if after is not None and not after.strip():
        raise StanzaError("bad-request", "RSM <after/> needs the id of an item")
    if after is not None and before is not None:
        raise StanzaError("bad-request", "RSM <after/> and <before/> cannot be combined")
    return RsmRequest(max_items, after.strip() if after else None, before.strip() if before is not None else None)


def parse_query(query: Element) -> MamQuery:
    """Read a XEP-0313 query element (already known to be <query xmlns='urn:xmpp:mam:2'/>)."""
    values: dict[str, str] = {}
    x = query.find("x", ns.DATA_FORMS)
    if x is not None:
        form = read_submission(x)
        if form.form_type is not None and form.form_type != NS_MAM:
            raise StanzaError("bad-request", f"the query form must have FORM_TYPE {NS_MAM}")
        for var in form.values:
            if var not in QUERY_FIELDS:
                raise StanzaError("feature-not-implemented", f"the query field {var!r} is not supported "
                                                             f"(supported: {', '.join(QUERY_FIELDS)})")
            value = form.single(var)
            if value:
                values[var] = value.strip()
    with_jid = None
    if "with" in values:
        jid = try_jid(values["with"])
        if jid is None:
            raise StanzaError("jid-malformed", f"'with' is not a valid JID: {values['with']!r}")
        with_jid = str(jid)
    start = parse_stamp(values["start"], "start") if "start" in values else None
    end = parse_stamp(values["end"], "end") if "end" in values else None
    if start is not None and end is not None and end < start:
        raise StanzaError("bad-request", "'end' is before 'start'")
    return MamQuery(query.get("queryid"), with_jid, start, end, parse_rsm(query),
                    query.find("flip-page", NS_MAM) is not None)


def query_form() -> Element:
    """The fields a query may use (XEP-0313 4.1.5), for an IQ get."""
    x = new_form(NS_MAM)
    add_field(x, "with", "jid-single")
    add_field(x, "start", "text-single")
    add_field(x, "end", "text-single")
    return x


async def _cursor(archive: Archive, host: str, user: str, key: str) -> ArchiveItem:
    item = await archive.get_by_key(host, user, key)
    if item is None:
        raise StanzaError("item-not-found", f"there is no message with the id {key!r} in this archive")
    return item


async def fetch_page(archive: Archive, host: str, user: str, query: MamQuery, max_page: int) -> Page:
    """One page of the archive (host, user) for `query`, at most `max_page` items."""
    rsm = query.rsm
    limit = max_page if rsm.max is None else min(rsm.max, max_page)
    filters = {"with_jid": query.with_jid, "start": query.start, "end": query.end}
    count = await archive.count(host, user, **filters)
    if rsm.before is not None:
        before = await _cursor(archive, host, user, rsm.before) if rsm.before else None
        if limit == 0:
            return Page([], count, None, count == 0)
        items = await archive.query(host, user, **filters, before_item=before, limit=limit + 1, reverse=True)
        complete = len(items) <= limit
        items = items[-limit:]
        # Only index 0 (the page reaches the start) is given when paging backwards: clients such
        # as slixmpp stop paging back as soon as index + page size equals the count.
        return Page(items, count, 0 if complete and items else None, complete)
    after = await _cursor(archive, host, user, rsm.after) if rsm.after else None
    if limit == 0:
        return Page([], count, None, count == 0)
    items = await archive.query(host, user, **filters, after_item=after, limit=limit + 1)
    complete = len(items) <= limit
    items = items[:limit]
    if after is None:
        index = 0
    elif complete:
        index = count - len(items)
    else:
        index = None
    return Page(items, count, index if items else None, complete)


def result_message(archive_jid: str, to: str, queryid: str | None, item: ArchiveItem,
                   message: Element) -> Element:
    """`<message><result><forwarded><delay/><message/></forwarded></result></message>` (4.2)."""
    out = Element("message", ns.CLIENT, {"from": archive_jid, "to": to})
    result = out.add("result", NS_MAM, {"id": item.key})
    if queryid is not None:
        result.attrs["queryid"] = queryid
    forwarded = result.add("forwarded", NS_FORWARD)
    forwarded.add("delay", ns.DELAY, {"stamp": stamp(item.when)})
    forwarded.append(message)
    return out


def fin(page: Page) -> Element:
    """The `<fin/>` of the IQ result, with the RSM summary of the page (4.3)."""
    out = Element("fin", NS_MAM)
    if page.complete:
        out.attrs["complete"] = "true"
    rsm = out.add("set", NS_RSM)
    if page.items:
        first = rsm.add("first", text=page.items[0].key)
        if page.first_index is not None:
            first.attrs["index"] = str(page.first_index)
        rsm.add("last", text=page.items[-1].key)
    rsm.add("count", text=str(page.count))
    return out
