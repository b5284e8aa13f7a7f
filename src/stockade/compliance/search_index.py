"""Keeps the eDiscovery index (storage/search.py) up to date with the journal, off the message path.

The journal is written at routing time; indexing it there would put HMACs and extra inserts on
every message. Instead a background task of the server (`SearchIndex.run`) reads the journal
records that came after the last one indexed, in batches, opens their payloads
(`storage.cipher.unseal` with the journal's associated data), takes out the words that an
investigator searches for (message body and subject, file names, links, the text of a refused
message) and writes their blind tokens and the record's participants. A search calls
`catch_up()` first, so that its results include every record committed before it started.

The background task yields to traffic: while the journal has records waiting to be committed
(messages are pouring in), it rests BACKGROUND_REST times as long as each batch took, so that
indexing takes about 2% of the process's time; while the journal is behind (more than a
transaction's worth waiting: the server is saturated and every message waits for the database),
it indexes one batch every MAX_REST seconds, a fraction of a percent. The index then lags behind
the journal, and a search catches it up first. When the journal is quiet it catches up at full
speed.

Records that retention purged (payload NULL, `purged` set) are never indexed, and the ones that
were indexed before the purge are dropped from the index by the next sweep (every
`ediscovery.purge_sweep_interval`); a search never shows a purged record in any case, because
it checks the journal row itself.

Another process (the `stockade archive search` CLI) may index at the same time: each batch is
written only if nobody indexed past its start meanwhile (`SearchStore.add`), so the two never
index a record twice.

`open_record` and `record_texts` are also what the search uses to show a record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import logging
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from ..storage.journal import JournalRow
from .journal import PLAIN_STARTS, open_payload_tree
from ..storage.search import INDEX_KEY, SearchStore, blind_tokens, decode_key, encode_key, search_store

log = logging.getLogger("stockade.ediscovery")

INDEX_BATCH = 500                    # journal records read and indexed per transaction
BACKGROUND_REST = 50.0               # the background task rests 50x as long as each batch took
MAX_REST = 5.0                       # seconds, at most, between two background batches
_sleep = asyncio.sleep                   # how catch_up rests (tests count the rests)
CLIENT_NS = "jabber:client"
SKIPPED_KINDS = frozenset({"checkpoint", "purge"})


@dataclass(frozen=True, slots=True)
class Record:
    """A journal record opened for reading: what an investigator sees."""
    id: int
    ts: float
    host: str
    kind: str
    conversation: str
    participants: tuple[str, ...]
    sender: str = ""                     # full JID as routed
    to: str = ""
    type: str = ""
    body: str = ""
    subject: str = ""
    links: tuple[str, ...] = ()
    file: dict[str, Any] = field(default_factory=dict)       # uploads: name, size, content_type, id
    verdict: dict[str, Any] = field(default_factory=dict)    # verdict records: class, rule, reason
    stanza: str = ""
    names: tuple[str, ...] = ()          # file names in the stanza (XEP-0446), searchable
    digest: str = ""
    hash: str = ""
    error: str = ""                      # why the payload could not be opened ("" when it could)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "host": self.host, "kind": self.kind,
                "conversation": self.conversation, "participants": list(self.participants),
                "from": self.sender, "to": self.to, "type": self.type, "body": self.body,
                "subject": self.subject, "links": list(self.links), "file": self.file or None,
                "verdict": self.verdict or None, "digest": self.digest, "hash": self.hash,
                **({"error": self.error} if self.error else {})}


async def open_payload(cipher: Any, row: JournalRow) -> dict[str, Any]:
    """The decrypted payload of a journal row as a dict (`decode_payload`). Raises ValueError
    (DecryptError is one) when it cannot be opened."""
    return (await _open_payload(cipher, row))[0]


async def _open_payload(cipher: Any, row: JournalRow) -> tuple[dict[str, Any], ET.Element | None]:
    """`open_payload`, and the stanza already parsed when the payload is the stanza itself."""
    if row.payload is None:
        return {}, None
    if cipher is None and not row.payload.startswith(PLAIN_STARTS):
        raise ValueError("the record is encrypted and encryption at rest is off in this configuration")
    payload, root = await open_payload_tree(row, cipher)
    return payload or {}, root


def _stanza_parts(xml: str, root: ET.Element | None = None) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """(body, subject, links, file names) of a serialised stanza; `root`: the same, parsed."""
    if root is None:
        if not xml or "<!" in xml:               # never a DTD or entity declaration
            return "", "", (), ()
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            return "", "", (), ()
    body = subject = ""
    links: list[str] = []
    names: list[str] = []
    for child in root:
        local = child.tag.rpartition("}")[2]
        if local == "body" and not body:
            body = child.text or ""
        elif local == "subject" and not subject:
            subject = child.text or ""
    for element in root.iter():
        local = element.tag.rpartition("}")[2]
        if local == "url" and element.text:                       # XEP-0066 out-of-band data
            links.append(element.text.strip())
        elif local == "name" and element.text and element is not root:   # XEP-0446 file metadata
            names.append(element.text.strip())
    return body, subject, tuple(links), tuple(names)


def _file_details(payload: dict[str, Any]) -> dict[str, Any]:
    details = payload.get("file")
    if not isinstance(details, dict):
        return {}
    name = details.get("name") or details.get("filename") or ""
    out = {"name": str(name), "size": details.get("size"),
           "content_type": details.get("content_type") or details.get("type") or "",
           "id": details.get("id") or details.get("file_id") or details.get("slot") or ""}
    for extra in ("url", "path", "uploader"):
        if details.get(extra):
            out[extra] = details[extra]
    return out


async def open_record(cipher: Any, row: JournalRow) -> Record:
    """The record of a journal row, decrypted; a payload that cannot be opened gives a record
    with `error` set and the row's own fields."""
    participants = tuple((row.participants or "").split())
    base = dict(id=row.id, ts=row.ts, host=row.host, kind=row.kind, conversation=row.conversation or "",
                participants=participants, digest=row.digest, hash=row.hash)
    try:
        payload, root = await _open_payload(cipher, row)
    except ValueError as exc:
        return Record(**base, error=f"the payload cannot be opened: {exc}")
    stanza = payload.get("stanza") or ""
    if not isinstance(stanza, str):
        stanza = str(stanza)
    body, subject, links, names = _stanza_parts(stanza, root)
    verdict: dict[str, Any] = {}
    if row.kind == "verdict":
        verdict = {k: payload[k] for k in ("verdict", "rule", "reason", "text", "condition") if payload.get(k)}
    return Record(**base, sender=str(payload.get("from") or ""), to=str(payload.get("to") or ""),
                  type=str(payload.get("type") or ""), body=body, subject=subject, links=links,
                  file=_file_details(payload), verdict=verdict, stanza=stanza, names=names)


def record_texts(record: Record) -> list[str]:
    """The texts of a record whose words are searchable."""
    texts = [record.body, record.subject, *record.links]
    if record.file.get("name"):
        texts.append(record.file["name"])
    texts += record.names
    for key in ("reason", "text", "rule"):
        value = record.verdict.get(key)
        if isinstance(value, str):
            texts.append(value)
    return [t for t in texts if t]


class SearchIndex:
    """The blind-token index of one Storage: its key, catching up with the journal, query tokens."""

    def __init__(self, storage: Any, *, batch: int = INDEX_BATCH) -> None:
        self.storage = storage
        self.store: SearchStore = search_store(storage)
        self.batch = batch
        self._key: bytes | None = None
        self._lock = asyncio.Lock()
        self.failures = 0

    @property
    def cipher(self) -> Any:
        return getattr(self.storage, "cipher", None)

    async def key(self) -> bytes:
        """The index key: made (random, sealed by the storage cipher) on first use."""
        if self._key is None:
            stored = await self.store.state(INDEX_KEY)
            if stored is None:
                stored = await self.store.init_state(INDEX_KEY, encode_key(os.urandom(32), self.cipher))
            self._key = await decode_key(stored, self.cipher)
        return self._key

    async def query_tokens(self, text: str) -> tuple[str, ...]:
        """The blind tokens of the words of a search (all must match)."""
        return tuple(blind_tokens(await self.key(), [text]))

    async def catch_up(self, *, rest: float = 0.0, is_busy: Callable[[], bool] | None = None,
                       is_behind: Callable[[], bool] | None = None) -> int:
        """Index every journal record committed so far; how many records were looked at.
        `rest` > 0: after each batch, while `is_busy()` says messages are pouring in, sleep
        `rest` times as long as the batch took, and MAX_REST while `is_behind()` says the
        journal cannot keep up (the background task's way of leaving the process to the
        messages; a search meanwhile takes the lock between two batches and catches up at full
        speed)."""
        key = await self.key()
        indexed = 0
        while True:
            started = time.monotonic()
            async with self._lock:
                looked_at = await self._index_batch(key)
            if looked_at is None:
                return indexed
            indexed += looked_at
            if rest and is_behind is not None and is_behind():
                await _sleep(MAX_REST)
            elif rest and (is_busy is None or is_busy()):
                await _sleep(min(rest * (time.monotonic() - started), MAX_REST))
            else:
                await _sleep(0)                  # let the messages of this loop turn through

    async def _index_batch(self, key: bytes) -> int | None:
        """Index the next batch of journal records; None when there is none, else how many
        records this call indexed (0 when another process indexed them first)."""
        last = await self.store.last_indexed()
        rows = await self.store.journal_after(last, self.batch)
        if not rows:
            return None
        records: list[tuple[int, str, float, str]] = []
        docs: list[tuple[int, str, str]] = []
        people: list[tuple[str, int]] = []
        for row in rows:
            if row.purged is not None or row.payload is None or row.kind in SKIPPED_KINDS:
                continue
            records.append((row.id, row.host, row.ts, row.kind))
            record = await open_record(self.cipher, row)
            if record.error:
                log.error("journal record %d cannot be indexed for eDiscovery: %s", row.id, record.error)
            tokens = blind_tokens(key, record_texts(record))
            if tokens:
                docs.append((row.id, row.host, " ".join(tokens)))
            people += [(jid, row.id) for jid in dict.fromkeys(record.participants)]
        return len(rows) if await self.store.add(last, rows[-1].id, records, docs, people) else 0

    async def sweep_purged(self) -> int:
        """Drop from the index every record that retention purged since; how many."""
        dropped = 0
        while True:
            count = await self.store.drop_purged()
            if not count:
                return dropped
            dropped += count

    async def run(self, interval: float, sweep_interval: float, monotonic: Any = None,
                  is_busy: Callable[[], bool] | None = None, is_behind: Callable[[], bool] | None = None) -> None:
        """Catch up every `interval` seconds, and drop purged records every `sweep_interval`,
        until cancelled (the server's background task). `is_busy`: whether messages are being
        journaled right now (the indexer then rests between batches); `is_behind`: whether the
        journal cannot keep up with them (it then rests MAX_REST)."""
        now = monotonic or time.monotonic
        last_sweep = now()
        while True:
            try:
                await self.catch_up(rest=BACKGROUND_REST, is_busy=is_busy, is_behind=is_behind)
                if now() - last_sweep >= sweep_interval:
                    last_sweep = now()
                    await self.sweep_purged()
            except Exception as exc:
                self.failures += 1
                log.error("the eDiscovery index could not catch up with the journal: %s; retrying in %g s",
                          exc, interval)
            await asyncio.sleep(interval)

