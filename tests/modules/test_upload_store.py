"""XEP-0363 upload storage: the bytes on disk (FileStore) and the bookkeeping (Catalog) on a real
SQLite database: quota with reservations, records that survive a restart, expiry, removal."""

from __future__ import annotations

import pytest

from stockade.modules.upload import files as files_module
from stockade.modules.upload.catalog import AVAILABLE, Catalog, Slot, StoredFile
from stockade.modules.upload.files import FileStore
from stockade.storage import Storage

HOST = "example.com"


async def write(store: FileStore, file_id: str, data: bytes, *, commit: bool = True):
    writer = await store.open_for_write(file_id)
    for i in range(0, len(data), 1000):
        await writer.write(data[i:i + 1000])
    if commit:
        await writer.commit()
    return writer


async def read(store: FileStore, file_id: str) -> bytes:
    return b"".join([chunk async for chunk in await store.open_for_read(file_id)])


async def test_a_file_is_readable_only_once_committed(tmp_path, monkeypatch):
    monkeypatch.setattr(files_module, "CHUNK", 4096)      # several trips to the disk thread
    store = FileStore(tmp_path / "uploads")
    data = bytes(range(256)) * 100
    writer = await write(store, "abc", data, commit=False)
    assert not store.exists("abc")
    partial = await writer.finish()
    assert partial.read_bytes() == data                    # what UploadReceived handlers read
    await writer.commit()
    assert store.exists("abc") and await read(store, "abc") == data
    assert list((tmp_path / "uploads").iterdir()) == [tmp_path / "uploads" / "abc"]
    await store.delete("abc")
    with pytest.raises(FileNotFoundError):
        await store.open_for_read("abc")


async def test_a_discarded_or_interrupted_file_leaves_nothing(tmp_path):
    store = FileStore(tmp_path / "uploads")
    writer = await write(store, "gone", b"x" * 5000, commit=False)
    await writer.discard()
    assert list((tmp_path / "uploads").iterdir()) == []
    await write(store, "crashed", b"y" * 10, commit=False)  # the process "dies" here
    assert store.remove_partials() == 1 and list((tmp_path / "uploads").iterdir()) == []


async def test_an_existing_file_is_never_written_through(tmp_path):
    store = FileStore(tmp_path / "uploads")
    await write(store, "same", b"first", commit=False)
    with pytest.raises(FileExistsError):
        await store.open_for_write("same")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", ".hidden"])
def test_ids_that_are_not_plain_names_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        FileStore(tmp_path).path(bad)


@pytest.fixture
async def storage(tmp_path):
    storage = await Storage.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield storage
    await storage.close()


def slot(slot_id: str, user: str, size: int, expires: float = 100.0) -> Slot:
    return Slot(slot_id, HOST, user, slot_id + ".txt", size, "text/plain", expires)


async def store_file(catalog: Catalog, file_id: str, user: str, data: bytes, when: float) -> StoredFile:
    writer = await write(catalog.files, file_id, data, commit=False)
    item = StoredFile(file_id, HOST, user, file_id + ".txt", "text/plain", len(data), when, path=file_id)
    await catalog.add(item, writer.commit)
    return item


async def test_quota_counts_files_and_open_slots_and_survives_a_restart(tmp_path, storage):
    files = FileStore(tmp_path / "uploads")
    catalog = Catalog(storage.map("uploads"), files, {HOST})
    await catalog.load()
    await store_file(catalog, "f1", "alice", b"a" * 300, when=1000.0)
    catalog.open_slot(slot("s1", "alice", 200, expires=50.0))
    assert catalog.usage(HOST, "alice", now=10.0) == 500
    assert catalog.usage(HOST, "alice", now=60.0) == 300   # the slot has expired
    assert catalog.usage(HOST, "bob", now=10.0) == 0

    again = Catalog(storage.map("uploads"), files, {HOST})
    await again.load()
    assert again.usage(HOST, "alice", now=10.0) == 300
    assert again.stored["f1"].status == AVAILABLE and again.stored["f1"].filename == "f1.txt"


async def test_a_record_whose_file_is_missing_is_dropped_at_load(tmp_path, storage, caplog):
    files = FileStore(tmp_path / "uploads")
    catalog = Catalog(storage.map("uploads"), files, {HOST})
    await catalog.load()
    await store_file(catalog, "f1", "alice", b"a" * 10, when=1000.0)
    (tmp_path / "uploads" / "f1").unlink()                 # as if the server stopped before the rename
    again = Catalog(storage.map("uploads"), files, {HOST})
    await again.load()
    assert "f1" not in again.stored and await storage.map("uploads").get_all(HOST, "") == {}
    assert "is missing" in caplog.text


async def test_a_failed_commit_leaves_no_record(tmp_path, storage):
    catalog = Catalog(storage.map("uploads"), FileStore(tmp_path / "uploads"), {HOST})
    await catalog.load()

    async def broken() -> None:
        raise OSError("disk full")
    with pytest.raises(OSError):
        await catalog.add(StoredFile("f1", HOST, "alice", "f1.txt", "text/plain", 3, 1.0), broken)
    assert catalog.stored == {} and await storage.map("uploads").get_all(HOST, "") == {}


async def test_purge_deletes_old_files_and_forgets_expired_slots(tmp_path, storage):
    catalog = Catalog(storage.map("uploads"), FileStore(tmp_path / "uploads"), {HOST})
    await catalog.load()
    await store_file(catalog, "old", "alice", b"o", when=1000.0)
    await store_file(catalog, "new", "alice", b"n", when=5000.0)
    catalog.open_slot(slot("open", "alice", 5, expires=50.0))
    catalog.spend(slot("used", "alice", 5, expires=50.0))
    assert await catalog.purge(now_wall=1000.0 + 3600, now_mono=60.0, max_age=3600) == 1
    assert set(catalog.stored) == {"new"} and not (tmp_path / "uploads" / "old").exists()
    assert catalog.slots == {} and catalog.spent == {}
    assert await catalog.purge(now_wall=10**9, now_mono=60.0, max_age=0) == 0   # 0: keep forever
    assert set(catalog.stored) == {"new"}


async def test_removing_a_user_deletes_only_their_files(tmp_path, storage):
    catalog = Catalog(storage.map("uploads"), FileStore(tmp_path / "uploads"), {HOST})
    await catalog.load()
    await store_file(catalog, "a1", "alice", b"a", when=1.0)
    await store_file(catalog, "b1", "bob", b"b", when=1.0)
    catalog.open_slot(slot("a2", "alice", 5))
    assert await catalog.remove_user(HOST, "alice") == 1
    assert set(catalog.stored) == {"b1"} and "a2" not in catalog.slots
    assert catalog.usage(HOST, "alice", now=0.0) == 0
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["b1"]

