"""KeyValueStore and MapStore: JSON documents per user, None deletes, stores kept apart."""

from __future__ import annotations

import asyncio

import pytest

from stockade.storage import Storage, get_together

# Everything JSON can carry, and text that trips up encodings: accents, CJK, emoji outside the
# BMP, right-to-left, a NUL and other control characters, quotes and backslashes.
UNICODE_DOC = {
    "name": "Zoë Ångström", "cjk": "漢字かな交じり", "emoji": "🦊👩‍💻", "rtl": "שלום مرحبا",
    "controls": "nul\x00tab\tnewline\n", "quotes": "\"'\\", "nested": {"list": [1, 2.5, True, None]},
    "ключ": "значение", "empty": {}, "big": 2**53, "negative": -1.25e-7,
}


async def test_keyval_missing_value_is_none(storage: Storage) -> None:
    assert await storage.keyval("vcard").get("example.com", "alice") is None


async def test_keyval_round_trips_unicode_json(storage: Storage) -> None:
    vcard = storage.keyval("vcard")
    await vcard.set("example.com", "alice", UNICODE_DOC)
    assert await vcard.get("example.com", "alice") == UNICODE_DOC


@pytest.mark.parametrize("value", ["just a string", 0, 42, 3.5, False, True, [1, "two"], {}])
async def test_keyval_stores_any_json_value(storage: Storage, value: object) -> None:
    store = storage.keyval("prefs")
    await store.set("example.com", "alice", value)
    assert await store.get("example.com", "alice") == value


async def test_keyval_set_replaces_and_none_deletes(storage: Storage) -> None:
    store = storage.keyval("vcard")
    await store.set("example.com", "alice", {"v": 1})
    await store.set("example.com", "alice", {"v": 2})
    assert await store.get("example.com", "alice") == {"v": 2}

    await store.set("example.com", "alice", None)
    assert await store.get("example.com", "alice") is None
    await store.set("example.com", "alice", None)          # deleting nothing is fine


async def test_keyval_is_separated_by_store_host_and_user(storage: Storage) -> None:
    places = [("vcard", "a.example", "alice"), ("vcard", "a.example", "bob"),
              ("vcard", "b.example", "alice"), ("private", "a.example", "alice"),
              ("vcard", "a.example", "")]
    for store, host, user in places:
        await storage.keyval(store).set(host, user, [store, host, user])

    await storage.keyval("vcard").set("a.example", "alice", None)

    assert await storage.keyval("vcard").get("a.example", "alice") is None
    for store, host, user in places[1:]:
        assert await storage.keyval(store).get(host, user) == [store, host, user]


async def test_keyval_refuses_what_json_cannot_carry_and_keeps_the_old_value(
        storage: Storage) -> None:
    store = storage.keyval("vcard")
    await store.set("example.com", "alice", {"v": 1})
    with pytest.raises(TypeError):
        await store.set("example.com", "alice", {"v": {1, 2}})
    with pytest.raises(ValueError):
        await store.set("example.com", "alice", float("nan"))
    assert await store.get("example.com", "alice") == {"v": 1}


async def test_map_get_set_and_none_deletes(storage: Storage) -> None:
    roster = storage.map("roster")
    assert await roster.get("example.com", "alice", "bob@example.com") is None

    await roster.set("example.com", "alice", "bob@example.com", {"subscription": "both"})
    await roster.set("example.com", "alice", "zoë@example.com", UNICODE_DOC)
    await roster.set("example.com", "alice", "bob@example.com", {"subscription": "to"})

    assert await roster.get("example.com", "alice", "bob@example.com") == {"subscription": "to"}
    assert await roster.get_all("example.com", "alice") == {
        "bob@example.com": {"subscription": "to"}, "zoë@example.com": UNICODE_DOC}

    await roster.set("example.com", "alice", "bob@example.com", None)
    assert await roster.get("example.com", "alice", "bob@example.com") is None
    assert await roster.get_all("example.com", "alice") == {"zoë@example.com": UNICODE_DOC}


async def test_map_set_many_upserts_and_deletes_together(storage: Storage) -> None:
    roster = storage.map("roster")
    await roster.set_many("example.com", "alice", {"a": 1, "b": 2, "c": 3})

    await roster.set_many("example.com", "alice", {"a": None, "b": 20, "d": 4, "missing": None})

    assert await roster.get_all("example.com", "alice") == {"b": 20, "c": 3, "d": 4}
    await roster.set_many("example.com", "alice", {})           # nothing to do
    assert await roster.get_all("example.com", "alice") == {"b": 20, "c": 3, "d": 4}


async def test_map_set_many_with_a_bad_value_writes_nothing(storage: Storage) -> None:
    roster = storage.map("roster")
    await roster.set_many("example.com", "alice", {"a": 1})

    with pytest.raises(TypeError):
        await roster.set_many("example.com", "alice", {"a": None, "b": 2, "c": object()})

    assert await roster.get_all("example.com", "alice") == {"a": 1}


async def test_map_delete_all_only_touches_that_user_and_store(storage: Storage) -> None:
    await storage.map("roster").set_many("example.com", "alice", {"a": 1, "b": 2})
    await storage.map("roster").set("example.com", "bob", "a", 1)
    await storage.map("roster").set("other.example", "alice", "a", 1)
    await storage.map("bookmarks").set("example.com", "alice", "a", 1)
    await storage.map("roster").set("example.com", "", "a", 1)

    await storage.map("roster").delete_all("example.com", "alice")

    assert await storage.map("roster").get_all("example.com", "alice") == {}
    assert await storage.map("roster").get_all("example.com", "bob") == {"a": 1}
    assert await storage.map("roster").get_all("other.example", "alice") == {"a": 1}
    assert await storage.map("bookmarks").get_all("example.com", "alice") == {"a": 1}
    assert await storage.map("roster").get_all("example.com", "") == {"a": 1}


async def test_map_and_keyval_with_the_same_store_name_are_separate(storage: Storage) -> None:
    await storage.keyval("x").set("example.com", "alice", "kv")
    await storage.map("x").set("example.com", "alice", "k", "map")
    await storage.map("x").delete_all("example.com", "alice")
    assert await storage.keyval("x").get("example.com", "alice") == "kv"


async def test_keys_are_case_sensitive(storage: Storage) -> None:
    roster = storage.map("roster")
    await roster.set("example.com", "alice", "Bob", 1)
    await roster.set("example.com", "alice", "bob", 2)
    assert await roster.get_all("example.com", "alice") == {"Bob": 1, "bob": 2}


async def test_store_names_must_be_non_empty(storage: Storage) -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        storage.keyval("")


async def test_keyval_tracking_holders_answers_the_same_as_reading(storage: Storage) -> None:
    store = storage.keyval("vcard")
    await store.set("example.com", "alice", {"v": "before"})
    await store.set("example.com", "gone", {"v": 1})
    await store.set("example.com", "gone", None)
    # Values being stored while the holders are read must not be missed, whether their write
    # started before the read or after it.
    before = asyncio.ensure_future(store.set("example.com", "before-read", {"v": 0}))
    await asyncio.sleep(0)                       # its write is on its way
    tracking = asyncio.ensure_future(store.track_holders())
    await asyncio.sleep(0)                       # the read is on its way
    await store.set("example.com", "during", {"v": "during"})
    await asyncio.gather(before, tracking)
    assert await store.get("example.com", "before-read") == {"v": 0}
    await store.set("example.com", "after", {"v": "after"})
    await store.set_bulk([("other.org", "bulk", {"v": "bulk"})])
    assert await store.get("example.com", "alice") == {"v": "before"}
    assert await store.get("example.com", "during") == {"v": "during"}
    assert await store.get("example.com", "after") == {"v": "after"}
    assert await store.get("other.org", "bulk") == {"v": "bulk"}
    assert await store.get("example.com", "gone") is None
    assert await store.get("example.com", "nobody") is None
    await store.set("example.com", "alice", None)
    assert await store.get("example.com", "alice") is None
    await store.set("example.com", "alice", {"v": "again"})
    assert await store.get("example.com", "alice") == {"v": "again"}


async def test_get_together_reads_several_stores_of_one_user_at_once(storage: Storage) -> None:
    items, pending, version = storage.map("roster"), storage.map("roster_pending"), storage.keyval("roster_version")
    await items.set("example.com", "alice", "bob@example.com", {"name": "Bob"})
    await items.set("example.com", "alice", "carol@example.com", UNICODE_DOC)
    await pending.set("example.com", "alice", "dave@example.com", "<presence/>")
    await version.set("example.com", "alice", 7)
    # Neighbours that must not leak in: another user, another host, another store of each kind.
    await items.set("example.com", "bob", "alice@example.com", {"name": "Alice"})
    await items.set("other.example", "alice", "eve@other.example", {})
    await storage.map("bookmarks").set("example.com", "alice", "room@muc", {})
    await storage.keyval("vcard").set("example.com", "alice", {"fn": "Alice"})

    found = await get_together("example.com", "alice", items, pending, version)

    assert found == [{"bob@example.com": {"name": "Bob"}, "carol@example.com": UNICODE_DOC},
                     {"dave@example.com": "<presence/>"}, 7]
    assert found == [await items.get_all("example.com", "alice"), await pending.get_all("example.com", "alice"),
                     await version.get("example.com", "alice")]


async def test_get_together_answers_empty_stores_like_their_own_reads(storage: Storage) -> None:
    found = await get_together("example.com", "nobody", storage.map("roster"), storage.keyval("roster_version"),
                               storage.map("roster_pending"))
    assert found == [{}, None, {}]
    assert await get_together("example.com", "nobody") == []
