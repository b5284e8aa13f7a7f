"""XEP-0059: Result Set Management, the request and answer parts any paged query can share.

A protocol that pages its results (the message archive, a chat room archive, disco#items of a
chat service) reads the client's `<set xmlns='http://jabber.org/protocol/rsm'/>` with
`parse_rsm`, selects one page of items, and answers with `result_set`:

    request = parse_rsm(query)                  # None when the client sent no <set/>
    limit = page_limit(request, max_page=100)   # the client's <max/>, capped by the server
    ...select at most `limit` items after request.after / before request.before...
    query_reply.append(result_set(first=items[0].uid, last=items[-1].uid, count=total,
                                  first_index=index))

`paginate` does the selection for a list that is already in memory (small result sets such as a
list of rooms), so its callers need no paging logic of their own.

UIDs are opaque strings chosen by the using protocol; RSM only passes them back and forth.
An empty `<before/>` asks for the last page (XEP-0059 2.5); `RsmRequest.before` is then "".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from ..protocol.errors import StanzaError
from ..protocol.xml import Element

NS_RSM = "http://jabber.org/protocol/rsm"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RsmRequest:
    """What a client asked for in its `<set/>`.

    `after`/`before` are UIDs; `before == ""` means "the last page"; `index` is the position of
    the first item wanted (only when the protocol allows paging by index).
    """
    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None

    @property
    def is_backward(self) -> bool:
        """The page ends before `before` (or at the end of the set), so it is taken from the back."""
        return self.before is not None


@dataclass(frozen=True, slots=True)
class RsmPage(Generic[T]):
    """One page of a result set: its items in set order, the size of the whole set (None when
    unknown), the position of the first item in the set (None when unknown) and whether the page
    reached the end of the set in the direction of paging (nothing more to fetch)."""
    items: list[T]
    count: int | None
    first_index: int | None
    is_complete: bool


def _int(rsm: Element, name: str) -> int | None:
    text = rsm.find_text(name, NS_RSM)
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        raise StanzaError("bad-request", f"RSM <{name}/> must be a whole number, not {text!r}") from None
    if value < 0:
        raise StanzaError("bad-request", f"RSM <{name}/> cannot be negative")
    return value


def parse_rsm(parent: Element, *, allow_index: bool = False) -> RsmRequest | None:
    """The `<set/>` child of `parent`, or None when there is none.

    Refuses with a stanza error: a <max/> or <index/> that is not a non-negative whole number
    (bad-request), an empty <after/> (bad-request), <after/> together with <before/> (XEP-0059
    leaves that undefined: bad-request), and <index/> when the protocol does not page by index
    (feature-not-implemented, as XEP-0059 2.5 allows) or combined with a UID (bad-request).
    """
    rsm = parent.find("set", NS_RSM)
    if rsm is None:
        return None
    for name in ("max", "after", "before", "index"):
        if sum(1 for _ in rsm.elements(name, NS_RSM)) > 1:
            raise StanzaError("bad-request", f"RSM <{name}/> appears more than once")
    max_items = _int(rsm, "max")
    index = _int(rsm, "index")
    after = rsm.find_text("after", NS_RSM)
    before = rsm.find_text("before", NS_RSM)
    if after is not None:
        after = after.strip()
        if not after:
            raise StanzaError("bad-request", "RSM <after/> needs the id of an item")
    if before is not None:
        before = before.strip()
    if after is not None and before is not None:
        raise StanzaError("bad-request", "RSM <after/> and <before/> cannot be combined in one request")
    if index is not None:
        if not allow_index:
            raise StanzaError("feature-not-implemented",
                              "paging by <index/> is not supported here; page with <after/> or <before/>")
        if after is not None or before is not None:
            raise StanzaError("bad-request", "RSM <index/> cannot be combined with <after/> or <before/>")
    return RsmRequest(max_items, after, before, index)


def page_limit(request: RsmRequest | None, max_page: int) -> int:
    """How many items to return: the client's <max/>, but never more than `max_page`
    (XEP-0059 lets the server return fewer than asked)."""
    if request is None or request.max is None:
        return max_page
    return min(request.max, max_page)


def result_set(first: str | None = None, last: str | None = None, count: int | None = None,
               first_index: int | None = None) -> Element:
    """The `<set/>` that describes a returned page (XEP-0059 2.2): <first/> and <last/> only when
    the page has items, <count/> when the size of the whole set is known."""
    out = Element("set", NS_RSM)
    if first is not None:
        el = out.add("first", text=first)
        if first_index is not None:
            el.attrs["index"] = str(first_index)
    if last is not None:
        out.add("last", text=last)
    if count is not None:
        out.add("count", text=str(count))
    return out


def page_result_set(page: RsmPage[T], uid: Callable[[T], str]) -> Element:
    """`result_set` for a page whose items give their UID through `uid`."""
    if not page.items:
        return result_set(count=page.count)
    return result_set(uid(page.items[0]), uid(page.items[-1]), page.count, page.first_index)


def paginate(items: Sequence[T], request: RsmRequest | None, uid: Callable[[T], str],
             max_page: int) -> RsmPage[T]:
    """Select the requested page from a whole result set held in memory (in set order).

    An <after/> or <before/> UID that is not in the set is refused with item-not-found
    (XEP-0059 2.4: the position of an unknown UID cannot be derived).
    """
    limit = page_limit(request, max_page)
    total = len(items)
    if request is not None and request.index is not None:
        start = min(request.index, total)
        end = min(start + limit, total)
        return RsmPage(list(items[start:end]), total, start, end >= total)

    def position(key: str) -> int:
        for i, item in enumerate(items):
            if uid(item) == key:
                return i
        raise StanzaError("item-not-found", f"no item with the id {key!r} in this result set")

    if request is not None and request.before is not None:
        end = position(request.before) if request.before else total
        start = max(0, end - limit)
        return RsmPage(list(items[start:end]), total, start, start == 0)
    start = position(request.after) + 1 if request is not None and request.after is not None else 0
    end = min(start + limit, total)
    return RsmPage(list(items[start:end]), total, start, end >= total)
