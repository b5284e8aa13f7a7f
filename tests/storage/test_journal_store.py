"""The journal's tables on SQLite and PostgreSQL: batches chain, checkpoints sign, verify catches edits."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stockade.compliance.journal import ROUTED, decode_payload, prepare
from stockade.protocol.xml import Element
from stockade.compliance.journal_verify import make_signer, verify_journal
from stockade.storage import Storage
from stockade.storage.journal import GENESIS_HASH, record_digest, record_hash

NOW = 1_700_000_000.0


def _entry(n: int, kind: str = "chat") -> tuple:
    stanza = f'<message to="bob@example.com" type="chat"><body>hello {n}</body></message>'.encode()
    return (NOW + n, "example.com", kind, "alice@example.com/phone", "bob@example.com", "chat",
            stanza, None)


async def test_a_batch_is_chained_in_order(storage: Storage) -> None:
    store = storage.journal
    assert await store.head() == (0, GENESIS_HASH)
    head = await store.append_batch([_entry(n) for n in range(3)], prepare, None, 1000, None, NOW)
    rows = await store.rows(0, 10)
    assert [r.id for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    assert head == (3, rows[-1].hash) == await store.head()
    first = rows[0]
    assert first.conversation == "alice@example.com bob@example.com"
    assert first.participants == "alice@example.com bob@example.com"
    assert first.digest == record_digest(first.conversation, first.participants, first.payload)
    assert first.hash == record_hash(1, first.ts, "example.com", "chat", first.digest, GENESIS_HASH)
    payload = json.loads(first.payload)
    assert payload["from"] == "alice@example.com/phone" and "hello 0" in payload["stanza"]


async def test_the_next_batch_continues_the_chain_and_filters_work(storage: Storage) -> None:
    store = storage.journal
    await store.append_batch([_entry(0)], prepare, None, 1000, None, NOW)
    await store.append_batch([_entry(1, "groupchat"), _entry(2)], prepare, None, 1000, None, NOW)
    rows = await store.rows(0, 10)
    assert [r.id for r in rows] == [1, 2, 3]
    assert rows[1].prev_hash == rows[0].hash
    assert rows[1].conversation == "bob@example.com"            # the room
    assert [r.id for r in await store.rows(0, 10, kind="groupchat")] == [2]
    assert await store.rows(0, 10, host="other.example") == []


async def test_payloads_are_sealed_with_the_cipher_and_the_digest_covers_the_sealed_bytes(
        storage: Storage) -> None:
    def seal(plaintext: bytes, aad: bytes) -> bytes:
        return b"SEALED" + aad + bytes(reversed(plaintext))

    await storage.journal.append_batch([_entry(0)], prepare, seal, 1000, None, NOW)
    [row] = await storage.journal.rows(0, 10)
    assert row.payload.startswith(b"SEALEDstockade-journal:1")
    assert b"hello" not in row.payload
    assert row.digest == record_digest(row.conversation, row.participants, row.payload)


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


async def test_verify_names_an_edited_row_and_accepts_a_purged_one(storage: Storage, run_sql) -> None:
    store = storage.journal
    await store.append_batch([_entry(n) for n in range(4)], prepare, None, 1000, None, NOW)
    await run_sql("UPDATE journal SET conversation = NULL, participants = NULL, payload = NULL, "
                  f"purged = {NOW + 99} WHERE id = 2")
    result = await verify_journal(store, None)
    assert result.is_intact and result.purged == 1 and result.count == 4
    await run_sql("UPDATE journal SET participants = 'mallory@example.com' WHERE id = 3")
    result = await verify_journal(store, None)
    assert not result.is_intact and result.bad_id == 3
    assert "record 3 was changed" in result.problem


async def test_a_deleted_row_is_a_gap_and_ids_are_not_reused(storage: Storage, run_sql) -> None:
    store = storage.journal
    await store.append_batch([_entry(n) for n in range(3)], prepare, None, 1000, None, NOW)
    await run_sql("DELETE FROM journal WHERE id = 2")
    result = await verify_journal(store, None)
    assert not result.is_intact and result.bad_id == 2 and "record 2 removed" in result.problem
    if storage.dialect == "sqlite":
        # The high-water mark keeps a deleted last id used: the next record leaves a gap.
        await run_sql("DELETE FROM journal WHERE id = 3")
        head = await store.append_batch([_entry(9)], prepare, None, 1000, None, NOW)
        assert head[0] == 4


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
