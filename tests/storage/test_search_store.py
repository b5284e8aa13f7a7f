"""The eDiscovery index (storage/search.py, compliance/search_index.py) on SQLite and PostgreSQL:
journal records are indexed by blind tokens and participants, found by words, people, dates and
kinds, and dropped from the index when retention purges them."""

from __future__ import annotations

import json
import os

from stockade.compliance.audit import AuditLog
from stockade.compliance.ediscovery import EDiscovery, Query
from stockade.compliance import search_index
from stockade.compliance.search_index import SearchIndex
from stockade.storage import Storage
from stockade.storage.crypto import Keyring
from stockade.storage.journal import Prepared
from stockade.storage.search import Criteria, blind, words

A = "example.com"
T0 = 1_700_000_000.0


def _message(ts: float, sender: str, to: str, body: str, kind: str = "chat", host: str = A) -> Prepared:
    stanza = f'<message xmlns="jabber:client" from="{sender}/pc" to="{to}" type="{kind}"><body>{body}</body></message>'
    payload = json.dumps({"from": f"{sender}/pc", "to": to, "type": kind, "stanza": stanza}).encode()
    pair = " ".join(sorted((sender, to)))
    return Prepared(ts, host, kind, pair if kind != "groupchat" else to, f"{sender} {to}", payload)


async def _append(storage: Storage, records: list[Prepared]) -> None:
    seal = storage.cipher.seal if storage.cipher is not None else None
    await storage.journal.append_batch(records, lambda p: p, seal, 1_000_000, None, T0)


async def _ids(index: SearchIndex, **criteria) -> list[int]:
    await index.catch_up()
    text = criteria.pop("text", "")
    tokens = await index.query_tokens(text) if text else ()
    return await index.store.find(Criteria(criteria.pop("host", A), tokens=tokens, **criteria))


def test_words_are_normalised_before_they_are_blinded() -> None:
    assert words("Ｑｕａｒｔｅｒｌｙ FIGURES, straße!") == ["quarterly", "figures", "strasse"]
    key = os.urandom(32)
    assert blind(key, "figures") != blind(os.urandom(32), "figures")
    assert len(blind(key, "figures")) == 17 and "figures" not in blind(key, "figures")


async def test_records_are_found_by_words_people_dates_and_kinds(storage: Storage, run_sql) -> None:
    await _append(storage, [
        _message(T0, f"alice@{A}", f"bob@{A}", "the quarterly figures are ready"),
        _message(T0 + 10, f"bob@{A}", f"alice@{A}", "thanks, sending the figures to carol"),
        _message(T0 + 20, f"carol@{A}", f"room@muc.{A}", "Quarterly meeting at noon", "groupchat"),
        _message(T0 + 30, "eve@other.org", "mallory@other.org", "quarterly figures", host="other.org"),
    ])
    index = SearchIndex(storage, batch=2)          # several batches
    assert await _ids(index, text="quarterly figures") == [1]
    assert await _ids(index, text="FIGURES") == [1, 2]
    assert await _ids(index, text="quarterly") == [1, 3]
    assert await _ids(index, text="quarterly", host="other.org") == [4]      # tenants apart
    assert await _ids(index, with_any=(f"carol@{A}",)) == [3]
    assert await _ids(index, with_any=(f"carol@{A}", f"bob@{A}")) == [1, 2, 3]
    assert await _ids(index, with_all=(f"alice@{A}", f"bob@{A}")) == [1, 2]
    assert await _ids(index, with_all=(f"alice@{A}", f"carol@{A}")) == []
    assert await _ids(index, start=T0 + 5, end=T0 + 20) == [2]
    assert await _ids(index, kinds=("groupchat",)) == [3]
    assert await _ids(index, after_id=1, limit=1) == [2]
    assert await _ids(index, text="nowhere") == []
    # the database holds tokens, not words
    dump = repr(await run_sql("SELECT tokens FROM search_docs", "SELECT value FROM search_state"))
    assert "quarterly" not in dump.lower() and "figures" not in dump.lower()


async def test_purged_records_leave_the_index_and_the_results(storage: Storage) -> None:
    await _append(storage, [_message(T0, f"alice@{A}", f"bob@{A}", "merger plans"),
                            _message(T0 + 1, f"alice@{A}", f"bob@{A}", "merger is off")])
    index = SearchIndex(storage)
    assert await _ids(index, text="merger") == [1, 2]
    assert await storage.retention().purge_journal([1], 5.0) == 1
    assert await _ids(index, text="merger") == [2]              # the search checks the journal row
    assert await _ids(index, with_any=(f"alice@{A}",)) == [2]
    assert await index.store.counts() == {"records": 1, "docs": 2, "participants": 4}
    assert await index.sweep_purged() == 1
    assert await index.store.counts() == {"records": 1, "docs": 1, "participants": 2}
    assert await _ids(index, text="merger") == [2]
    assert await index.sweep_purged() == 0


async def test_a_record_purged_while_the_index_still_has_it_is_never_shown(storage: Storage, edit_block,
                                                                           clock) -> None:
    """Between a purge and the indexer's next sweep (a purge racing the indexer, or another
    process), the index may still point at a purged record: eDiscovery reads the record itself
    and leaves it out."""
    await _append(storage, [_message(T0, f"alice@{A}", f"bob@{A}", "merger plans"),
                            _message(T0 + 1, f"alice@{A}", f"bob@{A}", "merger is off")])
    index = SearchIndex(storage)
    ediscovery = EDiscovery(storage, AuditLog(storage.audit, clock), clock, index=index)
    query = Query(A, words="merger")
    assert [r.id for r in (await ediscovery.find(query)).records] == [1, 2]

    def purge_first(block):            # as retention does, but leaving the index as it was
        return block._replace(purged=[T0 + 5, None], parties=[(None, None), block.parties[1]],
                              payloads=[None, block.payloads[1]])

    await edit_block(1, purge_first)
    assert await _ids(index, text="merger") == [1, 2]            # the index still has it
    assert [r.id for r in (await ediscovery.find(query)).records] == [2]
    assert [r.id for r, _ in await ediscovery.matching(query)] == [2]


async def test_the_background_indexer_gives_way_to_messages(storage: Storage, monkeypatch) -> None:
    """Full speed while the journal is quiet, resting BACKGROUND_REST times each batch's time
    while messages come in, and MAX_REST while the journal is behind; every record is indexed
    either way."""
    rests: list[float] = []

    async def rest(seconds: float) -> None:
        rests.append(seconds)

    monkeypatch.setattr(search_index, "_sleep", rest)
    index = SearchIndex(storage, batch=2)
    for case, (busy, behind) in enumerate(((False, False), (True, False), (True, True))):
        first = 6 * case + 1
        for n in range(first, first + 6):                      # a block each: batches of two
            await _append(storage, [_message(T0 + n, f"alice@{A}", f"bob@{A}", f"report {n}")])
        rests.clear()
        looked_at = await index.catch_up(rest=search_index.BACKGROUND_REST, is_busy=lambda: busy,
                                         is_behind=lambda: behind)
        assert looked_at == 6
        assert len(rests) == 3                                 # one after each batch of two
        if not busy:
            assert rests == [0, 0, 0]
        elif not behind:
            assert all(0 < seconds < search_index.MAX_REST for seconds in rests)
        else:
            assert rests == [search_index.MAX_REST] * 3
    assert await _ids(index, text="report") == list(range(1, 19))


async def test_two_indexers_never_index_a_record_twice(storage: Storage) -> None:
    await _append(storage, [_message(T0 + i, f"alice@{A}", f"bob@{A}", f"note {i}") for i in range(30)])
    first, second = SearchIndex(storage, batch=7), SearchIndex(storage, batch=5)
    import asyncio
    await asyncio.gather(first.catch_up(), second.catch_up())
    assert (await first.store.counts())["docs"] == 30
    assert await _ids(first, text="note") == list(range(1, 31))[:100]


async def test_sealed_records_are_indexed_and_the_key_is_stored_sealed(tmp_path, run_sql) -> None:
    url = f"sqlite:///{tmp_path / 'sealed.db'}"
    storage = await Storage.open(url, keyring=Keyring([os.urandom(32)], "a test key"))
    try:
        assert storage.cipher is not None
        await _append(storage, [_message(T0, f"alice@{A}", f"bob@{A}", "confidential acquisition")])
        index = SearchIndex(storage)
        assert await _ids(index, text="acquisition") == [1]
        stored = await index.store.state("index_key")
        assert stored.startswith("sealed:")
    finally:
        await storage.close()
    # a second process (the CLI) with the same keys gets the same index key and finds the record
    reopened = await Storage.open(url, keyring=Keyring(list(storage.cipher.keyring.keys.values()), "a test key"))
    try:
        assert await _ids(SearchIndex(reopened), text="Acquisition") == [1]
    finally:
        await reopened.close()
    raw = (tmp_path / "sealed.db").read_bytes()
    assert b"acquisition" not in raw and b"confidential" not in raw


async def test_a_stored_stanza_is_parsed_once_and_its_links_and_file_names_are_found(storage: Storage,
                                                                                      monkeypatch) -> None:
    """A routed message's record holds the stanza itself: the indexer reads its addresses, body,
    links and file names (XEP-0066, XEP-0447) from one parse of it."""
    from xml.etree import ElementTree

    from stockade.compliance.journal import ROUTED, prepare

    stanza = (f'<message xmlns="jabber:client" from="alice@{A}/pc" to="bob@{A}" type="chat">'
              '<body>see attached</body>'
              '<x xmlns="jabber:x:oob"><url>https://files.example.net/budget</url></x>'
              '<file-sharing xmlns="urn:xmpp:sfs:0"><file xmlns="urn:xmpp:file:metadata:0">'
              '<name>forecast-2027.xlsx</name></file></file-sharing></message>').encode()
    seal = storage.cipher.seal if storage.cipher is not None else None
    await storage.journal.append_batch([(T0, A, "chat", f"alice@{A}/pc", f"bob@{A}", "chat", stanza, ROUTED)],
                                       prepare, seal, 1_000_000, None, T0)
    parses = []
    parse = ElementTree.fromstring
    monkeypatch.setattr(ElementTree, "fromstring", lambda text, *a, **k: parses.append(text) or parse(text, *a, **k))
    index = SearchIndex(storage)
    await index.catch_up()
    assert len(parses) == 1
    monkeypatch.undo()
    for text in ("attached", "budget", "forecast", "xlsx"):
        assert await _ids(index, text=text) == [1], text
    assert await _ids(index, with_all=(f"alice@{A}", f"bob@{A}")) == [1]
