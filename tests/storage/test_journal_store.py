"""The journal's tables on SQLite and PostgreSQL: batches are blocks that chain, checkpoints sign,
verify catches edits, journals written before blocks still read, verify and purge."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stockade.compliance.journal import ROUTED, decode_payload, prepare
from stockade.protocol.xml import Element
from stockade.compliance.journal_verify import make_signer, verify_journal
from stockade.compliance.search_index import SearchIndex
from stockade.storage import Storage
from stockade.storage.engine import Database
from stockade.storage.migrate import available, latest_version, upgrade
from stockade.storage.journal import (GENESIS_HASH, Block, BlockError, block_digest, decode_block, encode_block,
                                     record_digest, record_hash, row_intact)

NOW = 1_700_000_000.0


def _entry(n: int, kind: str = "chat") -> tuple:
    stanza = f'<message to="bob@example.com" type="chat"><body>hello {n}</body></message>'.encode()
    return (NOW + n, "example.com", kind, "alice@example.com/phone", "bob@example.com", "chat",
            stanza, None)


async def test_a_batch_is_one_block_chained_in_order(storage: Storage, run_sql) -> None:
    store = storage.journal
    assert await store.head() == (0, GENESIS_HASH)
    head = await store.append_batch([_entry(n) for n in range(3)], prepare, None, 1000, None, NOW)
    rows = await store.rows(0, 10)
    assert [r.id for r in rows] == [1, 2, 3]
    assert {(r.block, r.prev_hash, r.hash, r.chained) for r in rows} == {(1, GENESIS_HASH, rows[0].hash, True)}
    assert head == (3, rows[-1].hash) == await store.head()
    assert await run_sql("SELECT id, last_id, live FROM journal_blocks", "SELECT count(*) FROM journal") \
        == [[(1, 3, 3)], [(0,)]]
    first = rows[0]
    assert first.conversation == "alice@example.com bob@example.com"
    assert first.participants == "alice@example.com bob@example.com"
    assert first.digest == block_digest(first.conversation, first.participants, first.payload).hex()
    assert [r.ts for r in rows] == [NOW, NOW + 1, NOW + 2]
    payload = json.loads(first.payload)
    assert payload["from"] == "alice@example.com/phone" and "hello 0" in payload["stanza"]
    assert all(row_intact(r) for r in rows)


async def test_the_block_hash_is_its_definition(storage: Storage, run_sql) -> None:
    """block_hash over the first id, the count, prev_hash, the times (float64 little-endian),
    the digests and the heads, as storage/journal.py defines it."""
    await storage.journal.append_batch([_entry(n, kind) for n, kind in enumerate(["chat", "groupchat"])],
                                       prepare, None, 1000, None, NOW)
    rows = await storage.journal.rows(0, 10)
    times = b"".join(struct.pack("<d", r.ts) for r in rows)
    digests = b"".join(bytes.fromhex(r.digest) for r in rows)
    heads = b"example.com\tchat\nexample.com\tgroupchat"
    expected = hashlib.sha256(b"stockade-journal-block:1\n1\n2\n" + GENESIS_HASH.encode() + b"\n"
                              + times + digests + heads).hexdigest()
    assert rows[0].hash == expected


async def test_the_next_batch_continues_the_chain_and_filters_work(storage: Storage) -> None:
    store = storage.journal
    await store.append_batch([_entry(0)], prepare, None, 1000, None, NOW)
    await store.append_batch([_entry(1, "groupchat"), _entry(2)], prepare, None, 1000, None, NOW)
    rows = await store.rows(0, 10)
    assert [(r.id, r.block) for r in rows] == [(1, 1), (2, 2), (3, 2)]
    assert rows[1].prev_hash == rows[0].hash != rows[1].hash
    assert rows[1].conversation == "bob@example.com"            # the room
    assert [r.id for r in await store.rows(0, 10, kind="groupchat")] == [2]
    assert await store.rows(0, 10, host="other.example") == []
    assert [r.id for r in await store.rows(2, 10)] == [3]          # from inside a block
    assert [r.id for r in await store.rows(0, 2)] == [1, 2]
    assert [r.id for r in await store.rows_by_id([3, 1, 7])] == [1, 3]


async def test_payloads_are_sealed_with_the_cipher_and_the_digest_covers_the_sealed_bytes(
        storage: Storage) -> None:
    def seal(plaintext: bytes, aad: bytes) -> bytes:
        return b"SEALED" + aad + bytes(reversed(plaintext))

    await storage.journal.append_batch([_entry(0), _entry(1)], prepare, seal, 1000, None, NOW)
    first, second = await storage.journal.rows(0, 10)
    assert first.payload.startswith(b"SEALEDstockade-journal:1")
    assert second.payload.startswith(b"SEALEDstockade-journal:2")
    assert b"hello" not in first.payload
    assert first.digest == block_digest(first.conversation, first.participants, first.payload).hex()


async def test_checkpoints_are_signed_when_the_chain_crosses_a_multiple(storage: Storage) -> None:
    key = Ed25519PrivateKey.generate()
    sign = make_signer(key)
    store = storage.journal
    await store.append_batch([_entry(n) for n in range(2)], prepare, None, 3, sign, NOW)
    assert await store.checkpoints() == []
    await store.append_batch([_entry(n) for n in range(2, 4)], prepare, None, 3, sign, NOW)
    [cp] = await store.checkpoints()
    rows = await store.rows(0, 10)
    assert (cp.last_id, cp.last_hash) == (4, rows[-1].hash)
    assert await store.checkpoint(sign, NOW + 1) is None          # head already signed
    await store.append_batch([_entry(5)], prepare, None, 3, sign, NOW)
    final = await store.checkpoint(sign, NOW + 2)
    assert final is not None and final.last_id == 5
    result = await verify_journal(store, key.public_key())
    assert result.is_intact and (result.count, result.checkpoints, result.last_id) == (5, 2, 5)


async def test_a_checkpoint_moved_inside_a_block_is_named(storage: Storage, run_sql) -> None:
    key = Ed25519PrivateKey.generate()
    store = storage.journal
    await store.append_batch([_entry(n) for n in range(3)], prepare, None, 2, make_signer(key), NOW)
    [cp] = await store.checkpoints()
    assert cp.last_id == 3
    await run_sql(f"UPDATE journal_checkpoints SET last_id = 2 WHERE id = {cp.id}")
    result = await verify_journal(store, key.public_key())
    assert not result.is_intact and result.bad_id == 2
    assert f"checkpoint {cp.id} names record 2, inside the block of records 1 to 3" in result.problem


async def test_verify_names_an_edited_record_and_accepts_a_purged_one(storage: Storage, edit_block) -> None:
    store = storage.journal
    await store.append_batch([_entry(n) for n in range(4)], prepare, None, 1000, None, NOW)
    assert await storage.retention().purge_journal([2], NOW + 99) == 1
    [purged] = await store.rows_by_id([2])
    assert (purged.conversation, purged.participants, purged.payload, purged.purged) == (None, None, None, NOW + 99)
    assert purged.chained and not row_intact(purged)
    result = await verify_journal(store, None)
    assert result.is_intact and result.purged == 1 and result.count == 4
    await edit_block(3, lambda b: b._replace(parties=[p if i != 2 else ("mallory@example.com", p[1])
                                                      for i, p in enumerate(b.parties)]))
    result = await verify_journal(store, None)
    assert not result.is_intact and result.bad_id == 3
    assert "record 3 was changed: its content does not match its digest" in result.problem
    [edited] = await store.rows_by_id([3])
    assert not row_intact(edited)
    # Retention leaves an edited record as it is, so that verify still sees the edit.
    assert await storage.retention().purge_journal([3], NOW + 100) == 0


async def test_verify_names_a_record_whose_digest_was_recomputed(storage: Storage, edit_block) -> None:
    store = storage.journal
    await store.append_batch([_entry(n) for n in range(3)], prepare, None, 1000, None, NOW)
    forged = b'{"stanza":"<message><body>forged</body></message>"}'

    def forge(block):
        payloads, digests = list(block.payloads), list(block.digests)
        payloads[1] = forged
        digests[1] = block_digest(*block.parties[1], forged)
        return block._replace(payloads=payloads, digests=digests)

    await edit_block(2, forge)
    result = await verify_journal(store, None)
    assert not result.is_intact and result.bad_id == 1
    assert "records 1 to 3 were changed: the block's hash does not match" in result.problem
    assert not any(row_intact(r) for r in await store.rows(0, 10))


async def test_a_deleted_block_is_a_gap_and_ids_are_not_reused(storage: Storage, run_sql) -> None:
    store = storage.journal
    for n in range(3):
        await store.append_batch([_entry(2 * n), _entry(2 * n + 1)], prepare, None, 1000, None, NOW)
    await run_sql("DELETE FROM journal_blocks WHERE id = 3")
    result = await verify_journal(store, None)
    assert not result.is_intact and result.bad_id == 3 and "records 3 to 4 removed" in result.problem
    if storage.dialect == "sqlite":
        # The high-water mark keeps a deleted last block's first id used: the next block leaves a gap.
        await run_sql("DELETE FROM journal_blocks WHERE id = 5")
        head = await store.append_batch([_entry(9)], prepare, None, 1000, None, NOW)
        assert head[0] == 6


async def test_a_damaged_block_is_named(storage: Storage, run_sql) -> None:
    store = storage.journal
    await store.append_batch([_entry(0)], prepare, None, 1000, None, NOW)
    await store.append_batch([_entry(1), _entry(2)], prepare, None, 1000, None, NOW)
    await run_sql("UPDATE journal_blocks SET last_id = 4 WHERE id = 2")
    result = await verify_journal(store, None)
    assert not result.is_intact and "the block holds 2 record(s), its row says 3" in result.problem
    for body in [b"SJB1", b"not a block at all", b"SJB1\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"]:
        with pytest.raises(BlockError):
            decode_block(2, body, GENESIS_HASH, GENESIS_HASH)


@pytest.mark.parametrize("parties, payload", [
    (("a b", "a b"), b"one"), ((None, None), None), (("", ""), b""), (("caf\u00e9 x", None), b"\x00\xff"),
    (("line\nbreak \"q\"", "tab\there"), b"<m/>"),
])
def test_a_block_decodes_to_what_was_encoded(parties, payload) -> None:
    block = Block(7, GENESIS_HASH, "", [NOW, NOW + 0.5], [None, NOW + 9], [bytes(32), bytes(range(32))],
                  [("example.com", "chat"), ("example.org", "verdict")], [parties, ("x", "y")],
                  [payload, b"second"], True)
    decoded = decode_block(7, encode_block(block), GENESIS_HASH, "")
    assert decoded._replace(chained=True) == block
    assert decoded.last_id == 8


def test_a_host_with_a_line_break_cannot_be_written() -> None:
    block = Block(1, GENESIS_HASH, "", [NOW], [None], [bytes(32)], [("example.com\tchat", "chat")],
                  [(None, None)], [b""], True)
    with pytest.raises(ValueError):
        encode_block(block)


async def _insert_legacy(run_sql, dialect: str, kinds: list[str]) -> str:
    """Records 1, 2, ... of these kinds as a version 9 server wrote them, one row each, chained;
    the last hash."""
    prev = GENESIS_HASH
    for record_id, kind in enumerate(kinds, 1):
        payload = b'{"stanza":"<message><body>old %d</body></message>"}' % record_id
        digest = record_digest("a@example.com b@example.com", "a@example.com b@example.com", payload)
        hash_ = record_hash(record_id, NOW + record_id, "example.com", kind, digest, prev)
        literal = f"x'{payload.hex()}'" if dialect == "sqlite" else f"'\\x{payload.hex()}'::bytea"
        await run_sql("INSERT INTO journal (id, ts, host, kind, conversation, participants, payload, digest, "
                      f"prev_hash, hash) VALUES ({record_id}, {NOW + record_id}, 'example.com', '{kind}', "
                      f"'a@example.com b@example.com', 'a@example.com b@example.com', {literal}, '{digest}', "
                      f"'{prev}', '{hash_}')")
        prev = hash_
    return prev


async def test_upgrading_a_version_9_journal_keeps_its_rows_and_indexes_them_for_search(
        storage_url: str, run_sql) -> None:
    """Migration 10 on a database a version 9 server wrote: the rows stay, the records the index
    covered get their search_records row, and new records go into blocks after them."""
    db = Database.from_url(storage_url)
    try:
        assert await upgrade(db, available()[:9]) == 9
        last_hash = await _insert_legacy(run_sql, db.dialect, ["chat", "purge", "chat", "chat"])
        await run_sql("UPDATE journal SET purged = 5, payload = NULL, conversation = NULL, participants = NULL "
                      "WHERE id = 3",
                      "INSERT INTO search_state (name, value) VALUES ('last_indexed', '3')")
        assert await upgrade(db, available()) == latest_version()
    finally:
        await db.dispose()
    # Indexed: 1 (2 is a purge record, never indexed; 3 was purged); 4 comes with the indexer.
    assert await run_sql("SELECT id, host, ts, kind FROM search_records ORDER BY id") \
        == [[(1, "example.com", NOW + 1, "chat")]]
    storage = await Storage.open(storage_url)
    try:
        assert await storage.journal.head() == (4, last_hash)
        await storage.journal.append_batch([_entry(5)], prepare, None, 1000, None, NOW)
        result = await verify_journal(storage.journal, None)
        assert result.is_intact and (result.count, result.purged, result.last_id) == (5, 1, 5)
        await SearchIndex(storage).catch_up()
        assert await run_sql("SELECT id FROM search_records ORDER BY id") == [[(1,), (4,), (5,)]]
    finally:
        await storage.close()


async def test_legacy_rows_read_verify_and_purge_and_blocks_go_on_from_them(storage: Storage, run_sql) -> None:
    """A journal written before blocks (one row per record) stays as it is; the first block
    chains on from its last row, and verify, reads and retention take both."""
    prev = await _insert_legacy(run_sql, storage.dialect, ["chat", "chat"])
    store = storage.journal
    assert await store.head() == (2, prev)
    await store.append_batch([_entry(3), _entry(4)], prepare, None, 1000, None, NOW)
    rows = await store.rows(0, 10)
    assert [(r.id, r.block) for r in rows] == [(1, None), (2, None), (3, 3), (4, 3)]
    assert rows[2].prev_hash == prev
    assert all(row_intact(r) for r in rows)
    assert [r.id for r in await store.rows(1, 2)] == [2, 3]
    assert [r.id for r in await store.rows_by_id([4, 2])] == [2, 4]
    candidates = await storage.retention().journal_candidates("example.com", NOW + 10)
    assert [c.id for c in candidates] == [1, 2, 3, 4]
    assert [c.id for c in await storage.retention().journal_candidates("example.com", NOW + 10, after_id=1, limit=2)] \
        == [2, 3]
    assert await storage.retention().purge_journal([2, 3], NOW + 99) == 2
    result = await verify_journal(store, None)
    assert result.is_intact and (result.count, result.purged, result.last_id) == (4, 2, 4)
    assert [c.id for c in await storage.retention().journal_candidates("example.com", NOW + 10)] == [1, 4]
    await run_sql("UPDATE journal SET participants = 'mallory@example.com' WHERE id = 1")
    result = await verify_journal(store, None)
    assert not result.is_intact and result.bad_id == 1


async def test_candidates_page_through_blocks_by_host_and_time(storage: Storage) -> None:
    store = storage.journal
    entries = [(NOW + n, "example.com" if n % 2 else "example.org") + _entry(n)[2:] for n in range(10)]
    await store.append_batch(entries[:6], prepare, None, 1000, None, NOW)
    await store.append_batch(entries[6:], prepare, None, 1000, None, NOW)
    retention = storage.retention()
    assert [c.id for c in await retention.journal_candidates("example.com", NOW + 8)] == [2, 4, 6, 8]
    assert [c.id for c in await retention.journal_candidates("example.com", NOW + 8, limit=3)] == [2, 4, 6]
    assert [c.id for c in await retention.journal_candidates("example.com", NOW + 8, after_id=6)] == [8]
    assert [(c.ts, c.participants) for c in await retention.journal_candidates("example.org", NOW + 1)] \
        == [(NOW, "alice@example.com bob@example.com")]
    await retention.purge_journal([2, 4, 6, 8], NOW + 50)
    assert await retention.journal_candidates("example.com", NOW + 8) == []


def _reference_digest(conversation: str | None, participants: str | None, payload: bytes | None) -> str:
    """record_digest as its docstring defines it: each field length-prefixed, NULL told apart."""
    import hashlib

    def part(value: bytes | None) -> bytes:
        return b"\x00" if value is None else b"\x01" + len(value).to_bytes(8, "big") + value

    return hashlib.sha256(part(None if conversation is None else conversation.encode())
                          + part(None if participants is None else participants.encode())
                          + part(payload)).hexdigest()


def test_digests_match_their_definition_when_the_parties_repeat() -> None:
    # record_digest caches the encoded parties: the second and third calls take the cached part.
    for conversation, participants, payload in [("a b", "a b", b"one"), ("a b", "a b", b"two"),
                                                ("a b", "a b", None), ("a b", None, b""),
                                                (None, None, b"one"), ("", "", b"")]:
        for _ in range(2):
            assert record_digest(conversation, participants, payload) \
                == _reference_digest(conversation, participants, payload)


def test_prepared_records_keep_their_own_stanza_and_type_when_the_parties_repeat() -> None:
    records = [prepare((NOW, "example.com", "chat", "alice@example.com/phone", "Bob@example.com",
                        mtype, f'<message><body>n{n} "quoted"</body></message>'.encode(), None))
               for n, mtype in enumerate(["chat", "chat", None, "chat"])]
    for n, (ts, host, kind, conversation, participants, payload) in enumerate(records):
        assert (conversation, participants) == ("alice@example.com bob@example.com",
                                                "alice@example.com bob@example.com")
        decoded = json.loads(payload)
        assert decoded == {"from": "alice@example.com/phone", "to": "Bob@example.com",
                           "type": None if n == 2 else "chat",
                           "stanza": f'<message><body>n{n} "quoted"</body></message>'}
    # A verdict's detail goes into its payload; its parties are worked out the same way.
    verdict = prepare((NOW, "example.com", "verdict", "bob@example.com/pc", None, None, b"<x/>",
                       {"verdict": "deny"}))
    assert verdict[3:5] == ("bob@example.com", "bob@example.com")
    assert json.loads(verdict[5])["verdict"] == "deny"


def _routed(attrs: dict[str, str], body: str, name: str = "message") -> tuple:
    """An entry as Journal.record_stanza queues it: from, to and type from the stanza's own
    attributes, the stanza as the server serialises it."""
    stanza = Element(name, "jabber:client", dict(attrs))
    if body:
        stanza.add("body", text=body)
    return (NOW, "example.com", "subscription" if name == "presence" else "chat", attrs.get("from"),
            attrs.get("to"), attrs.get("type"), stanza.serialize(), ROUTED)


@pytest.mark.parametrize("attrs, body, name", [
    ({"from": "alice@example.com/phone", "to": "bob@example.com", "type": "chat"}, 'a < b & "c" \'d\'', "message"),
    ({"from": "alice@example.com/ph&ne", "to": "Bob@Example.com", "id": "x<y"}, "no type", "message"),
    ({"from": "alice@example.com/phone", "to": "bob@example.com", "type": "subscribe"}, "", "presence"),
    ({"from": "alice@example.com/caf\u00e9", "to": "bob@example.com", "type": "chat"}, "\u00fcml\u00e4ute \U0001f600", "message"),
])
def test_a_routed_stanza_is_its_own_payload_and_reads_back_as_the_json_would(attrs, body, name) -> None:
    entry = _routed(attrs, body, name)
    *_, payload = prepare(entry)
    assert payload == entry[6]                                 # the stanza's bytes, nothing added
    *_, as_json = prepare(entry[:7] + (None,))                 # the same entry the JSON way
    assert as_json.startswith(b"{")
    assert decode_payload(payload) == json.loads(as_json)
    assert decode_payload(payload)["type"] == attrs.get("type")


def test_a_routed_stanza_whose_address_an_xml_parser_would_change_stays_json() -> None:
    # Attribute-value normalisation turns a line break into a space: such a record keeps JSON.
    entry = _routed({"from": "alice@example.com/a\nb", "to": "bob@example.com", "type": "chat"}, "hi")
    *_, payload = prepare(entry)
    assert payload.startswith(b"{")
    assert decode_payload(payload)["from"] == "alice@example.com/a\nb"


@pytest.mark.parametrize("data", [
    b'<!DOCTYPE m [<!ENTITY e "x">]><message>&e;</message>',
    b"<message><body>cut off",
    b"[1, 2]",
])
def test_a_payload_that_is_neither_a_stanza_nor_a_json_object_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_payload(data)


async def test_routed_stanzas_read_back_sealed_and_from_before_sealing_was_on(tmp_path) -> None:
    """With encryption at rest a routed stanza is sealed as it is; one written while encryption
    was off is still read (a plain payload starts with '<' or '{', a sealed one never does)."""
    from stockade.compliance.journal import read_records
    from stockade.compliance.search_index import open_payload as open_for_index
    from stockade.storage.crypto import Keyring

    storage = await Storage.open(f"sqlite:///{tmp_path}/j.db", keyring=Keyring([bytes(range(32))], "test key"))
    try:
        attrs = {"from": "alice@example.com/phone", "to": "bob@example.com", "type": "chat"}
        await storage.journal.append_batch([_routed(attrs, "before")], prepare, None, 1000, None, NOW)
        await storage.journal.append_batch([_routed(attrs, "after")], prepare, storage.cipher.seal, 1000, None, NOW)
        plain, sealed = await storage.journal.rows(0, 10)
        assert plain.payload.startswith(b"<message") and b"after" not in sealed.payload
        records = await read_records(storage)
        assert [r.payload["stanza"] for r in records] == [_routed(attrs, b)[6].decode()
                                                          for b in ("before", "after")]
        assert {(r.payload["from"], r.payload["to"], r.payload["type"]) for r in records} == {
            ("alice@example.com/phone", "bob@example.com", "chat")}
        assert [await open_for_index(storage.cipher, row) for row in (plain, sealed)] == [r.payload for r in records]
    finally:
        await storage.close()
