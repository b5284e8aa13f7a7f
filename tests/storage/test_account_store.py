"""AccountStore: accounts, SCRAM keys, and removal that wipes a user's data everywhere."""

from __future__ import annotations

import pytest

from stockade.protocol.sasl.scram import ScramCredential, check_password, derive
from stockade.storage import AccountExists, Storage, StorageError

SHA1 = derive("correct horse", "sha1", salt=b"salt-sha1-012345", iterations=4096)
SHA256 = derive("correct horse", "sha256", salt=b"salt-sha256-0123", iterations=4096)


async def test_created_account_returns_its_keys_by_hash_name(storage: Storage) -> None:
    await storage.accounts.create("example.com", "alice", [SHA1, SHA256])

    creds = await storage.accounts.get_credentials("example.com", "alice")

    assert creds == {"sha1": SHA1, "sha256": SHA256}
    assert all(type(c.salt) is bytes and type(c.stored_key) is bytes for c in creds.values())
    assert check_password("correct horse", creds["sha256"])
    assert not check_password("wrong", creds["sha256"])


async def test_creating_an_existing_account_fails_and_keeps_the_old_keys(storage: Storage) -> None:
    await storage.accounts.create("example.com", "alice", [SHA1])
    other = derive("other password", "sha256")

    with pytest.raises(AccountExists, match="alice@example.com already exists"):
        await storage.accounts.create("example.com", "alice", [other])

    assert await storage.accounts.get_credentials("example.com", "alice") == {"sha1": SHA1}
    assert await storage.accounts.count() == 1


async def test_account_exists_is_a_storage_error(storage: Storage) -> None:
    assert issubclass(AccountExists, StorageError)


async def test_usernames_are_case_sensitive_as_given(storage: Storage) -> None:
    await storage.accounts.create("example.com", "alice", [SHA1])
    await storage.accounts.create("example.com", "Alice", [SHA256])

    assert await storage.accounts.get_credentials("example.com", "Alice") == {"sha256": SHA256}
    assert await storage.accounts.count("example.com") == 2


async def test_unknown_account_has_no_credentials_and_does_not_exist(storage: Storage) -> None:
    assert await storage.accounts.get_credentials("example.com", "nobody") is None
    assert await storage.accounts.exists("example.com", "nobody") is False


async def test_account_without_keys_exists_with_empty_credentials(storage: Storage) -> None:
    await storage.accounts.create("example.com", "ldapuser", [])

    assert await storage.accounts.exists("example.com", "ldapuser") is True
    assert await storage.accounts.get_credentials("example.com", "ldapuser") == {}


async def test_set_credentials_replaces_every_key(storage: Storage) -> None:
    await storage.accounts.create("example.com", "alice", [SHA1, SHA256])
    new = derive("new password", "sha256")

    assert await storage.accounts.set_credentials("example.com", "alice", [new]) is True

    assert await storage.accounts.get_credentials("example.com", "alice") == {"sha256": new}


async def test_set_credentials_of_unknown_account_returns_false(storage: Storage) -> None:
    assert await storage.accounts.set_credentials("example.com", "nobody", [SHA1]) is False
    assert await storage.accounts.exists("example.com", "nobody") is False


async def test_two_keys_for_one_hash_are_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="one credential per hash"):
        await storage.accounts.create("example.com", "alice", [SHA1, SHA1])
    assert await storage.accounts.exists("example.com", "alice") is False


async def test_list_and_count_are_per_host_and_sorted(storage: Storage) -> None:
    for host, user in [("b.example", "zed"), ("a.example", "bob"), ("a.example", "Zoe"),
                       ("a.example", "élodie"), ("a.example", "alice")]:
        await storage.accounts.create(host, user, [SHA1])

    # Code point order: uppercase before lowercase, é after z.
    assert await storage.accounts.list("a.example") == [
        ("a.example", "Zoe"), ("a.example", "alice"), ("a.example", "bob"), ("a.example", "élodie")]
    assert await storage.accounts.list("b.example") == [("b.example", "zed")]
    assert await storage.accounts.list("c.example") == []
    assert (await storage.accounts.list())[-1] == ("b.example", "zed")
    assert len(await storage.accounts.list()) == 5
    assert await storage.accounts.count("a.example") == 4
    assert await storage.accounts.count("b.example") == 1
    assert await storage.accounts.count("c.example") == 0
    assert await storage.accounts.count() == 5


async def test_remove_wipes_the_users_data_in_every_store_and_nothing_else(
        storage: Storage) -> None:
    users = [("a.example", "alice"), ("a.example", "bob"), ("b.example", "alice")]
    for host, user in users:
        await storage.accounts.create(host, user, [SHA1, SHA256])
        for store in ("vcard", "private"):
            await storage.keyval(store).set(host, user, {"owner": user})
        for store in ("roster", "bookmarks"):
            await storage.map(store).set(host, user, "k", {"owner": user})
        for store in ("offline", "mam"):
            await storage.archive(store).append(host, user, f"<message to='{user}'/>")
    await storage.keyval("vcard").set("a.example", "", {"host-wide": True})

    assert await storage.accounts.remove("a.example", "alice") is True

    assert await storage.accounts.exists("a.example", "alice") is False
    assert await storage.accounts.get_credentials("a.example", "alice") is None
    for store in ("vcard", "private"):
        assert await storage.keyval(store).get("a.example", "alice") is None
    for store in ("roster", "bookmarks"):
        assert await storage.map(store).get_all("a.example", "alice") == {}
    for store in ("offline", "mam"):
        assert await storage.archive(store).query("a.example", "alice") == []
    # The same username on another host, another user on the same host, host-wide data: intact.
    for host, user in users[1:]:
        assert await storage.accounts.get_credentials(host, user) == {"sha1": SHA1, "sha256": SHA256}
        for store in ("vcard", "private"):
            assert await storage.keyval(store).get(host, user) == {"owner": user}
        for store in ("roster", "bookmarks"):
            assert await storage.map(store).get_all(host, user) == {"k": {"owner": user}}
        for store in ("offline", "mam"):
            assert await storage.archive(store).count(host, user) == 1
    assert await storage.keyval("vcard").get("a.example", "") == {"host-wide": True}


async def test_remove_of_unknown_account_returns_false_and_changes_nothing(
        storage: Storage, snapshot) -> None:
    await storage.accounts.create("example.com", "alice", [SHA1])
    await storage.keyval("vcard").set("example.com", "ghost", {"stray": True})
    before = await snapshot()

    assert await storage.accounts.remove("example.com", "ghost") is False

    assert await snapshot() == before


async def test_remove_also_wipes_archive_appends_still_queued(storage: Storage) -> None:
    await storage.accounts.create("example.com", "alice", [SHA1])
    offline = storage.archive("offline")
    # Queued, not yet committed, when remove() is called.
    futures = [offline.append_nowait("example.com", "alice", f"<message id='{i}'/>") for i in range(5)]

    assert await storage.accounts.remove("example.com", "alice") is True

    assert all(f.done() and f.exception() is None for f in futures)
    assert await offline.query("example.com", "alice") == []


async def test_a_removed_users_archives_are_empty_and_fill_again(storage: Storage, run_sql) -> None:
    mam = storage.archive("mam")
    await storage.accounts.create("example.com", "alice", [SHA1])
    await mam.append("example.com", "alice", "<old/>")
    await storage.archive("offline").append("example.com", "alice", "<old/>")

    await storage.accounts.remove("example.com", "alice")
    await storage.accounts.create("example.com", "alice", [SHA1])
    new = await mam.append("example.com", "alice", "<new/>")

    assert await mam.query("example.com", "alice") == [new]
    assert await storage.archive("offline").count("example.com", "alice") == 0
    # The owner rows stay (the writer remembers their ids; storage/schema.py): no data in them.
    assert await run_sql("SELECT store FROM archive_owners ORDER BY store") == [[("mam",), ("offline",)]]


async def test_removed_account_can_be_created_again(storage: Storage) -> None:
    await storage.accounts.create("example.com", "alice", [SHA1])
    await storage.accounts.remove("example.com", "alice")

    await storage.accounts.create("example.com", "alice", [SHA256])

    assert await storage.accounts.get_credentials("example.com", "alice") == {"sha256": SHA256}


async def test_credentials_are_the_protocol_dataclass(storage: Storage) -> None:
    await storage.accounts.create("example.com", "alice", [SHA256])
    creds = await storage.accounts.get_credentials("example.com", "alice")
    assert isinstance(creds["sha256"], ScramCredential)


async def test_the_change_counter_moves_with_every_creation_and_removal_and_only_then(
        storage: Storage, storage_url: str) -> None:
    accounts = storage.accounts
    readings = [await accounts.changes()]

    async def moved() -> bool:
        readings.append(await accounts.changes())
        return readings[-1] != readings[-2]

    await accounts.create("example.com", "alice", [SHA1])
    assert await moved()
    with pytest.raises(AccountExists):
        await accounts.create("example.com", "alice", [SHA1])
    assert not await moved()
    await accounts.set_credentials("example.com", "alice", [SHA256])
    assert not await moved()
    assert await accounts.create_many([("example.com", "bob", [SHA1]), ("example.com", "alice", [SHA1])]) == [
        ("example.com", "bob")]
    assert await moved()
    assert await accounts.create_many([("example.com", "bob", [SHA1])]) == []
    assert not await moved()
    assert not await accounts.remove("example.com", "nobody")
    assert not await moved()
    assert await accounts.remove("example.com", "bob")
    assert await moved()
    assert readings == sorted(readings)

    # Another process (the CLI) on the same database moves the same counter.
    other = await Storage.open(storage_url)
    try:
        await other.accounts.remove("example.com", "alice")
    finally:
        await other.close()
    assert await moved()
