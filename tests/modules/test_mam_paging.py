"""XEP-0313 paging over the archive store, checked against a plain model of the result set.

Items share time stamps in groups (as messages routed in the same instant do), so paging and
counting in archive order (time, then append order) are tested where it is hardest: at ties.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from stockade.modules.mam.paging import ArchiveSearch
from stockade.modules.mam.query import MamQuery
from stockade.modules.rsm import RsmRequest
from stockade.protocol.errors import StanzaError
from stockade.protocol.jid import parse_jid
from stockade.storage import ArchiveItem, Storage

OWNER = parse_jid("alice@example.com")
PARTNERS = ["bob@example.com", "carol@example.com", "dave@example.com"]


@pytest.fixture
async def archive(storage_url: str) -> AsyncIterator[tuple[ArchiveSearch, list[ArchiveItem]]]:
    storage = await Storage.open(storage_url)
    try:
        store = storage.archive("mam")
        items = []
        for i in range(30):
            partner = PARTNERS[i % 3]
            value = (f"<message xmlns='jabber:client' from='{partner}/r{i % 2}' to='alice@example.com' "
                     f"type='chat'><body>{i}</body></message>")
            items.append(await store.append("example.com", "alice", value, with_jid=partner,
                                            when=1000.0 + i // 4, key=f"k{i:02}"))
        # another user's archive must never show up
        await store.append("example.com", "bob", "<message xmlns='jabber:client'/>", with_jid="alice@example.com",
                           when=1001.0, key="bobs-own")
        yield ArchiveSearch(store, max_page=100), items
    finally:
        await storage.close()


def model(items: list[ArchiveItem], q: MamQuery, limit: int) -> tuple[list[str], int, int | None, bool]:
    """(page keys, count, first index, complete) computed the obvious way."""
    by_key = {i.key: i for i in items}
    lo = by_key[q.after_id].id if q.after_id else None
    hi = by_key[q.before_id].id if q.before_id else None
    full = [i for i in items
            if (q.with_jid is None or i.with_jid == str(q.with_jid))
            and (q.start is None or i.when >= q.start) and (q.end is None or i.when <= q.end)
            and (lo is None or i.id > lo) and (hi is None or i.id < hi)]
    rsm = q.rsm
    if rsm is not None and rsm.before is not None:
        cursor = by_key[rsm.before].id if rsm.before else None
        candidates = [i for i in full if cursor is None or i.id < cursor]
        page = candidates[len(candidates) - limit:] if limit else []
    else:
        cursor = by_key[rsm.after].id if rsm is not None and rsm.after else None
        candidates = [i for i in full if cursor is None or i.id > cursor]
        page = candidates[:limit]
    index = full.index(page[0]) if page else None
    return [i.key for i in page], len(full), index, len(candidates) <= limit


async def test_every_page_matches_the_model(archive):
    search, items = archive
    filters = itertools.product([None, parse_jid(PARTNERS[1])], [None, 1002.0], [None, 1005.0],
                                [None, "k04"], [None, "k25"])
    cursors = [None, RsmRequest(max=4), RsmRequest(max=4, after="k09"), RsmRequest(max=3, after="k03"),
               RsmRequest(max=4, before=""), RsmRequest(max=4, before="k21"), RsmRequest(max=50, before="k12"),
               RsmRequest(max=0)]
    checked = 0
    for (with_jid, start, end, after_id, before_id), rsm in itertools.product(filters, cursors):
        q = MamQuery(with_jid=with_jid, start=start, end=end, after_id=after_id, before_id=before_id, rsm=rsm)
        page = await search.page(OWNER, q)
        keys, count, index, complete = model(items, q, rsm.max if rsm and rsm.max is not None else 100)
        got = ([i.key for i in page.items], page.count, page.first_index, page.is_complete)
        assert got == (keys, count, index, complete), q
        checked += 1
    assert checked == 256


async def test_a_full_jid_with_matches_that_resource_only(archive):
    search, items = archive
    q = MamQuery(with_jid=parse_jid("bob@example.com/r1"), rsm=RsmRequest(max=2))
    page = await search.page(OWNER, q)
    expected = [i.key for i in items if i.with_jid == "bob@example.com" and int(i.key[1:]) % 2 == 1]
    assert [i.key for i in page.items] == expected[:2] and not page.is_complete
    assert page.count is None and page.first_index is None
    page = await search.page(OWNER, MamQuery(with_jid=q.with_jid, rsm=RsmRequest(max=2, before="")))
    assert [i.key for i in page.items] == expected[-2:]


async def test_single_items_by_id_with_the_other_filters_applied(archive):
    search, _ = archive
    page = await search.page(OWNER, MamQuery(ids=("k07", "k02", "k07", "k20")))
    assert [i.key for i in page.items] == ["k02", "k07", "k20"] and page.count == 3
    page = await search.page(OWNER, MamQuery(ids=("k07", "k02"), start=1001.0))
    assert [i.key for i in page.items] == ["k07"]


async def test_unknown_ids_are_item_not_found_even_if_another_archive_has_them(archive):
    search, _ = archive
    for q in (MamQuery(after_id="bobs-own"), MamQuery(before_id="bobs-own"), MamQuery(ids=("k01", "bobs-own")),
              MamQuery(rsm=RsmRequest(after="bobs-own")), MamQuery(rsm=RsmRequest(before="bobs-own"))):
        with pytest.raises(StanzaError) as info:
            await search.page(OWNER, q)
        assert info.value.condition == "item-not-found" and "bobs-own" in info.value.text


async def test_metadata_names_the_first_and_last_items(archive):
    search, items = archive
    meta = await search.metadata(OWNER)
    assert meta.find("start").get("id") == items[0].key and meta.find("end").get("id") == items[-1].key
    assert (await search.metadata(parse_jid("nobody@example.com"))).children == []
