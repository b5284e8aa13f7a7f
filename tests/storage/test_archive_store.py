"""ArchiveStore: append, query with every filter and paging combination, delete, pop_all.

Archive order is (when, id): by time, then append order (storage/archive.py).
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from stockade.storage import ArchiveItem, Storage

HOST = "example.com"


async def fill(storage: Storage, store: str = "mam", user: str = "alice") -> list[ArchiveItem]:
    """Ten items, 100.0 to 109.0 seconds, alternating between two partners (bob, carol)."""
    archive = storage.archive(store)
    items = []
    for i in range(10):
        partner = "bob@example.com" if i % 2 == 0 else "carol@example.com"
        items.append(await archive.append(HOST, user, f"<message id='m{i}'><body>{i}</body></message>",
                                          with_jid=partner, when=100.0 + i, key=f"stanza-{i}"))
    return items


def expected(items: list[ArchiveItem], *, with_jid=None, start=None, end=None,
             after_item=None, before_item=None, limit=None, reverse=False) -> list[ArchiveItem]:
    """What query() must return, computed the obvious way."""
    matching = [i for i in sorted(items, key=lambda i: (i.when, i.id))
                if (with_jid is None or i.with_jid == with_jid)
                and (start is None or i.when >= start) and (end is None or i.when <= end)
                and (after_item is None or (i.when, i.id) > (after_item.when, after_item.id))
                and (before_item is None or (i.when, i.id) < (before_item.when, before_item.id))]
    if limit is None:
        return matching
    if reverse:
        return matching[max(0, len(matching) - limit):] if limit else []
    return matching[:limit]


async def test_append_returns_the_stored_item(storage: Storage) -> None:
    archive = storage.archive("mam")
    item = await archive.append(HOST, "alice", "<message/>", with_jid="bob@example.com",
                                when=123.5, key="stanza-1")

    assert item == ArchiveItem(item.id, "stanza-1", 123.5, "bob@example.com", "<message/>")
    assert await archive.query(HOST, "alice") == [item]


async def test_append_without_key_or_time_generates_a_key_and_uses_the_clock(
        storage: Storage, clock) -> None:
    archive = storage.archive("offline")
    clock.now = 1_800_000_000.25
    first = await archive.append(HOST, "alice", "<message/>")
    second = await archive.append(HOST, "alice", "<message/>")

    assert first.when == second.when == 1_800_000_000.25
    assert first.with_jid is None
    assert first.key and second.key and first.key < second.key        # time-ordered (keys.py)
    assert await archive.get_by_key(HOST, "alice", second.key) == second


async def test_ids_increase_and_items_come_back_in_append_order(storage: Storage) -> None:
    items = await fill(storage)
    ids = [i.id for i in items]
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert await storage.archive("mam").query(HOST, "alice") == items


async def test_query_with_every_filter_and_paging_combination(storage: Storage) -> None:
    items = await fill(storage)
    await fill(storage, user="bob")            # another user's items must never show up
    await fill(storage, store="offline")       # nor another store's
    archive = storage.archive("mam")
    grid = {
        "with_jid": [None, "bob@example.com", "carol@example.com", "nobody@example.com"],
        "start": [None, 103.0, 103.5],
        "end": [None, 107.0],
        "after_item": [None, items[1]],
        "before_item": [None, items[8]],
        "limit": [None, 0, 1, 3, 100],
        "reverse": [False, True],
    }
    checked = 0
    for values in itertools.product(*grid.values()):
        filters = dict(zip(grid, values))
        got = await archive.query(HOST, "alice", **filters)
        assert got == expected(items, **filters), repr(filters)
        checked += 1
    assert checked == 4 * 3 * 2 * 2 * 2 * 5 * 2


async def test_reverse_with_limit_returns_the_last_items_in_ascending_order(
        storage: Storage) -> None:
    items = await fill(storage)
    got = await storage.archive("mam").query(HOST, "alice", limit=3, reverse=True)
    assert got == items[7:]


async def test_paging_backwards_with_before_item_visits_every_item_once(storage: Storage) -> None:
    """XEP-0313 + XEP-0059: <before/> then <before>first-id-of-last-page</before> until empty."""
    items = await fill(storage)
    archive = storage.archive("mam")
    pages, before = [], None
    while page := await archive.query(HOST, "alice", before_item=before, limit=3, reverse=True):
        pages.append(page)
        before = page[0]
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [item for page in reversed(pages) for item in page] == items


async def test_paging_forwards_with_after_item_visits_every_item_once(storage: Storage) -> None:
    items = await fill(storage)
    archive = storage.archive("mam")
    seen, after = [], None
    while page := await archive.query(HOST, "alice", after_item=after, limit=4):
        seen.extend(page)
        after = page[-1]
    assert seen == items


async def test_archive_order_is_time_then_append_order(storage: Storage) -> None:
    archive = storage.archive("pep_items")
    late = await archive.append(HOST, "alice", "<late/>", when=200.0)
    early = await archive.append(HOST, "alice", "<early/>", when=100.0)      # re-stored, older
    tie = await archive.append(HOST, "alice", "<tie/>", when=200.0)

    assert early.id > late.id
    assert await archive.query(HOST, "alice") == [early, late, tie]
    assert await archive.query(HOST, "alice", limit=1, reverse=True) == [tie]
    assert await archive.query(HOST, "alice", after_item=early) == [late, tie]
    assert await archive.query(HOST, "alice", before_item=tie) == [early, late]
    assert await archive.count(HOST, "alice", after_item=early, before_item=tie) == 1
    assert await archive.get_by_key(HOST, "alice", tie.key) == tie
    assert [item.position for item in (early, late, tie)] == [(100.0, early.id), (200.0, late.id),
                                                              (200.0, tie.id)]


async def test_paging_goes_on_from_an_item_deleted_meanwhile(storage: Storage) -> None:
    items = await fill(storage)
    archive = storage.archive("mam")
    page = await archive.query(HOST, "alice", limit=4)
    await archive.delete(HOST, "alice", ids=[page[-1].id])

    assert await archive.query(HOST, "alice", after_item=page[-1], limit=4) == items[4:8]


async def test_count_agrees_with_query_for_every_filter(storage: Storage) -> None:
    items = await fill(storage)
    archive = storage.archive("mam")
    for with_jid, start, after_item, before_item in itertools.product(
            [None, "carol@example.com"], [None, 102.0], [None, items[2]], [None, items[7]]):
        filters = {"with_jid": with_jid, "start": start, "after_item": after_item,
                   "before_item": before_item}
        assert await archive.count(HOST, "alice", **filters) == len(expected(items, **filters))


async def test_negative_limit_is_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="limit"):
        await storage.archive("mam").query(HOST, "alice", limit=-1)


async def test_get_by_key_finds_only_that_users_item_in_that_store(storage: Storage) -> None:
    items = await fill(storage)
    await fill(storage, user="bob")
    archive = storage.archive("mam")

    assert await archive.get_by_key(HOST, "alice", "stanza-4") == items[4]
    assert await archive.get_by_key(HOST, "alice", "no-such-key") is None
    assert await storage.archive("offline").get_by_key(HOST, "alice", "stanza-4") is None
    assert (await archive.get_by_key(HOST, "bob", "stanza-4")).id != items[4].id
    assert await archive.get_by_key(HOST, "nobody", "stanza-4") is None


async def test_a_key_many_users_share_is_found_for_each(storage: Storage) -> None:
    """PEP item keys ("node\nitem id") are the same in many archives."""
    pep = storage.archive("pep_items")
    mine = {user: await pep.append(HOST, user, f"<{user}/>", key="urn:xmpp:avatar:metadata\ncurrent")
            for user in ("alice", "bob", "carol")}

    for user, item in mine.items():
        assert await pep.get_by_key(HOST, user, "urn:xmpp:avatar:metadata\ncurrent") == item


async def test_count_applies_the_filters(storage: Storage) -> None:
    await fill(storage)
    await fill(storage, user="bob")
    archive = storage.archive("mam")

    assert await archive.count(HOST, "alice") == 10
    assert await archive.count(HOST, "alice", with_jid="bob@example.com") == 5
    assert await archive.count(HOST, "alice", start=102.0, end=105.0) == 4
    assert await archive.count(HOST, "alice", with_jid="carol@example.com", start=104.0) == 3
    assert await archive.count(HOST, "nobody") == 0


async def test_delete_by_ids_removes_only_this_users_items(storage: Storage) -> None:
    items = await fill(storage)
    bobs = await fill(storage, user="bob")
    archive = storage.archive("mam")

    # Bob's id is in the list, but this is Alice's delete: it must stay.
    deleted = await archive.delete(HOST, "alice", ids=[items[0].id, items[5].id, bobs[1].id])

    assert deleted == 2
    assert await archive.query(HOST, "alice") == [i for n, i in enumerate(items) if n not in (0, 5)]
    assert await archive.query(HOST, "bob") == bobs
    assert await archive.delete(HOST, "alice", ids=[]) == 0


async def test_delete_before_is_strict_and_combines_with_ids(storage: Storage) -> None:
    items = await fill(storage)
    archive = storage.archive("mam")

    assert await archive.delete(HOST, "alice", before=103.0) == 3          # 100, 101, 102
    assert (await archive.query(HOST, "alice"))[0] == items[3]
    # Both given: items that are in the list AND older than `before`.
    assert await archive.delete(HOST, "alice", ids=[items[3].id, items[9].id], before=105.0) == 1
    assert await archive.query(HOST, "alice") == items[4:]


async def test_delete_without_filters_empties_only_that_users_store(storage: Storage) -> None:
    await fill(storage)
    bobs = await fill(storage, user="bob")
    offline = await fill(storage, store="offline")
    archive = storage.archive("mam")

    assert await archive.delete(HOST, "alice") == 10

    assert await archive.query(HOST, "alice") == []
    assert await archive.query(HOST, "bob") == bobs
    assert await storage.archive("offline").query(HOST, "alice") == offline


async def test_pop_all_returns_everything_in_order_and_empties_the_store(storage: Storage) -> None:
    items = await fill(storage, store="offline")
    bobs = await fill(storage, store="offline", user="bob")
    offline = storage.archive("offline")

    assert await offline.pop_all(HOST, "alice") == items

    assert await offline.pop_all(HOST, "alice") == []
    assert await offline.query(HOST, "bob") == bobs


async def test_concurrent_pops_never_deliver_an_item_twice(storage: Storage) -> None:
    items = await fill(storage, store="offline")
    offline = storage.archive("offline")

    first, second = await asyncio.gather(offline.pop_all(HOST, "alice"),
                                         offline.pop_all(HOST, "alice"))

    assert sorted(first + second, key=lambda i: i.id) == items
    assert not {i.id for i in first} & {i.id for i in second}


async def test_ids_of_deleted_items_are_never_reused(storage: Storage) -> None:
    offline = storage.archive("offline")
    popped = [await offline.append(HOST, "alice", "<message/>") for _ in range(3)]
    await offline.pop_all(HOST, "alice")          # the store (and the whole table) is empty now

    fresh = await offline.append(HOST, "alice", "<message/>")

    assert fresh.id > max(i.id for i in popped)


async def test_append_refuses_values_that_are_not_text(storage: Storage) -> None:
    archive = storage.archive("mam")
    with pytest.raises(TypeError, match="serialised stanzas"):
        await archive.append(HOST, "alice", b"<message/>")
    with pytest.raises(TypeError, match="with_jid"):
        await archive.append(HOST, "alice", "<message/>", with_jid=42)
    assert await archive.count(HOST, "alice") == 0


async def test_large_and_unicode_stanzas_round_trip(storage: Storage) -> None:
    body = "<message><body>" + "Grüße 🦊 漢字 " * 5000 + "</body></message>"
    item = await storage.archive("mam").append(HOST, "alice", body, with_jid="zoë@example.com")
    assert (await storage.archive("mam").get_by_key(HOST, "alice", item.key)).value == body


async def test_count_after_tracking_owners_matches_the_database(storage: Storage) -> None:
    offline = storage.archive("offline")
    await offline.append("example.com", "alice", "<message/>")
    await offline.track_owners()
    assert await offline.count("example.com", "alice") == 1
    assert await offline.count("example.com", "nobody") == 0
    await offline.append("example.com", "bob", "<message/>")      # an owner created afterwards
    await offline.append("example.com", "bob", "<message/>")
    assert await offline.count("example.com", "bob") == 2
    assert len(await offline.pop_all("example.com", "bob")) == 2
    assert await offline.count("example.com", "bob") == 0
