"""The compliance journal: every message, upload, subscription change and policy verdict, recorded
server-side when it is routed, before delivery, in a hash chain users cannot change.

    journal = Journal(storage, clock, signing_key, audit=audit, checkpoint_every=10_000)
    await journal.start()
    journal.subscribe(bus)          # verdicts, uploads, shutdown checkpoint
    ctx.journal = journal           # the hub calls record_stanza for every stanza it accepts
    records = await journal.read(after_id=0, limit=100)     # decrypted

What is kept (`record_stanza`): message stanzas of type chat, normal, groupchat and headline that
carry something a person reads: a body, a subject, an out-of-band URL (XEP-0066), a file share
(XEP-0447) or an encrypted payload; chat states or receipts alone are not. Presence of type
subscribe, subscribed, unsubscribe and unsubscribed. Not IQs, not ordinary presence. Verdicts
(VerdictGiven: Flag, Deny, Redact, Quarantine, for stanzas and uploads) with the original stanza,
and uploads (UploadReceived, after the content checks) with the file's metadata and its stored id.

Cost on the message path. `record_stanza` runs for every stanza a client sends: it checks the
stanza kind, takes the serialised bytes (mostly the reader's cached raw content, protocol/xml.py),
and appends one tuple to the open batch. Everything else (bare JIDs, the payload, sealing with
storage.cipher, digests, hashes, the insert) happens in the database thread, one transaction per
batch (group commit, like storage/archive.py), stored as one block (storage/journal.py): a batch
is whatever was queued while the previous one was being written.

Durability. A batch's future resolves only after its transaction committed; the sender's session
tracks it (`track_write`), so a XEP-0198 ack waits for it: acknowledged means recorded. A batch
that fails is kept and retried with backoff, in order: nothing is dropped. While the journal
cannot write, new stanzas are refused with <resource-constraint/> (fail closed), unless the
tenant chose `on_failure = "deliver"`: then they pass, stay queued until the database is back, and
the audit log records `journal.bypass` once per tenant and failure period.
"""

from __future__ import annotations

import asyncio
import json
from json.encoder import encode_basestring  # type: ignore[attr-defined]
import logging
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.hooks import FALLBACK, ServerStopping, UploadReceived, VerdictGiven
from ..core.verdict import Deny, Redact
from ..protocol.errors import StanzaError
from ..protocol.jid import try_jid
from ..protocol.xml import Element
from ..storage.archive import Commit
from ..storage.journal import JournalRow, PreparedRecord, payload_aad
from .journal_verify import make_signer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..core.bus import HookBus
    from ..core.clock import Clock
    from ..core.sessions import ClientSession
    from ..storage import Storage
    from .audit import AuditLog

log = logging.getLogger("stockade.journal")

MAX_BATCH = 2000                  # records per transaction
MAX_HELD = 200_000                # records held in memory while the database fails ("deliver")
CLOSE_TIMEOUT = 30.0              # seconds shutdown waits for an unwritable database
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)    # seconds between attempts; the last repeats
MESSAGE_KINDS = {"chat": "chat", "normal": "normal", "groupchat": "groupchat", "headline": "headline",
                 None: "normal"}
SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
NS_OOB = "jabber:x:oob"
NS_SFS = "urn:xmpp:sfs:0"
NS_OMEMO = "eu.siacs.conversations.axolotl"
# Children that make a message worth keeping: (name, namespace or None for any).
_KEPT_CHILDREN = {"body": None, "subject": None, "x": NS_OOB, "file-sharing": NS_SFS,
                  "encrypted": NS_OMEMO}
REFUSAL_TEXT = ("the compliance archive cannot record messages right now; nothing was sent; "
                "try again shortly")


def _refusal() -> StanzaError:
    return StanzaError("resource-constraint", REFUSAL_TEXT, "wait")


class _Batch:
    __slots__ = ("entries", "commit")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.entries: list[tuple] = []
        self.commit = Commit(loop=loop)


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One record as a compliance officer reads it: the payload decrypted and parsed (None once
    retention purged it)."""
    id: int
    ts: float
    host: str
    kind: str
    conversation: str | None
    participants: str | None
    payload: dict | None
    purged: float | None


class Journal:
    """Records into the journal (group commit, fail closed) and reads it back decrypted."""

    def __init__(self, storage: Storage, clock: Clock, signing_key: Ed25519PrivateKey | None, *,
                 audit: AuditLog | None = None, checkpoint_every: int = 10_000,
                 on_failure: str = "refuse", host_on_failure: dict[str, str] | None = None,
                 retry_delays: Sequence[float] = RETRY_DELAYS) -> None:
        self._storage = storage
        self._store = storage.journal
        self._time = clock.time
        self._sign = make_signer(signing_key) if signing_key is not None else None
        self._audit = audit
        self._checkpoint_every = checkpoint_every
        self._on_failure = on_failure
        self._host_on_failure = host_on_failure or {}
        self._retry_delays = tuple(retry_delays) or RETRY_DELAYS
        self._batches: deque[_Batch] = deque()
        self._open: _Batch | None = None
        self._task: asyncio.Task[None] | None = None
        self._tracked: tuple[Any, Any] = (None, None)    # (commit, session) tracked last
        self._held = 0                   # records queued and not yet committed
        # Backpressure (storage/backlog.py): over two batches queued, client input pauses until
        # one batch is left; not while failing (the refusal rules apply then).
        self._backlog = storage.backlog
        self._is_closed = False
        self.is_failing = False          # the last attempt to write failed
        self.failure: str = ""           # why, while failing
        self._bypassed: set[str] = set()  # hosts whose bypass was audited in this failure period
        self.head: tuple[int, str] = (0, "")
        self.records_committed = 0
        self.failed_attempts = 0

    async def start(self) -> None:
        """Read the chain head (the writer re-reads it in every transaction as well)."""
        self.head = await self._store.head()

    def subscribe(self, bus: HookBus) -> None:
        bus.on(VerdictGiven, self._verdict_given)
        bus.on(UploadReceived, self._upload_received, FALLBACK)
        bus.on(ServerStopping, self._stopping)

    # -- recording (message path) ---------------------------------------------------------------
    def record_stanza(self, session: ClientSession, stanza: Element) -> StanzaError | None:
        """Queue a stanza the hub accepted, if the journal keeps its kind; a StanzaError when it
        must be refused because the journal cannot write (see the module docstring)."""
        kind = _kept_kind(stanza)
        if kind is None:
            return None
        if self.is_failing and self._refuses(session.host):
            return _refusal()
        attrs = stanza.attrs
        commit = self._queue((self._time(), session.host, kind, attrs.get("from"), attrs.get("to"),
                              attrs.get("type"), stanza.serialize_stanza(), ROUTED))
        if commit is None:
            return _refusal()
        if commit is not self._tracked[0] or session is not self._tracked[1]:
            self._tracked = (commit, session)
            session.track_write(commit)
        return None

    def record_from_service(self, host: str, stanza: Element) -> StanzaError | None:
        """Queue a stanza an external component (XEP-0114: a gateway, a bot) sends into the
        server, recorded under the tenant `host`, like `record_stanza`; a StanzaError when it
        must be refused."""
        kind = _kept_kind(stanza)
        if kind is None:
            return None
        if self.is_failing and self._refuses(host):
            return _refusal()
        attrs = stanza.attrs
        commit = self._queue((self._time(), host, kind, attrs.get("from"), attrs.get("to"),
                              attrs.get("type"), stanza.serialize(), ROUTED))
        return _refusal() if commit is None else None

    def _refuses(self, host: str) -> bool:
        """While failing: True to refuse; False to let it pass (audited once per period)."""
        if self._host_on_failure.get(host, self._on_failure) != "deliver" or self._held >= MAX_HELD:
            return True
        if host not in self._bypassed:
            self._bypassed.add(host)
            log.warning("the journal cannot write (%s); host %s delivers messages anyway "
                        "(on_failure = deliver): they are recorded once the database is back",
                        self.failure, host)
            if self._audit is not None:
                self._audit.record_soon(host, "system", "journal.bypass", host, reason=self.failure)
        return False

    def _queue(self, entry: tuple) -> Commit | None:
        """Add an entry to the open batch; its commit future, or None when closed."""
        batch = self._open
        if batch is None or len(batch.entries) >= MAX_BATCH:
            if self._is_closed:
                return None
            loop = asyncio.get_running_loop()
            batch = self._open = _Batch(loop)
            self._batches.append(batch)
            if self._task is None:
                self._task = loop.create_task(self._run(), name="stockade-journal-writer")
        batch.entries.append(entry)
        self._held += 1
        if self._held > 2 * MAX_BATCH and not self.is_failing:
            self._backlog.over("journal", True)          # idempotent: only the first call counts
        return batch.commit

    def _release_backlog(self) -> None:
        self._backlog.over("journal", False)

    def is_busy(self) -> bool:
        """Whether records are queued and not yet committed: messages are coming in."""
        return self._held > 0

    def is_behind(self) -> bool:
        """Whether more than a full batch waits while one is written: the database is what
        limits the message rate, and the server has no time to spare."""
        return self._held > MAX_BATCH

    def record(self, host: str, kind: str, sender: str, to: str | None, *, stanza: bytes = b"",
               stanza_type: str | None = None, detail: dict | None = None) -> Commit | None:
        """Queue a record that is not a client stanza (uploads, verdicts, purges); its commit
        future, or None when the journal is closed."""
        return self._queue((self._time(), host, kind, sender, to, stanza_type, stanza, detail))

    # -- hooks ------------------------------------------------------------------------------------
    def _verdict_given(self, event: VerdictGiven) -> None:
        verdict = event.verdict
        detail: dict[str, Any] = {"verdict": type(verdict).__name__.lower(),
                                  "rule": getattr(verdict, "rule", "")}
        for field in ("reason", "text", "condition"):
            value = getattr(verdict, field, None)
            if value:
                detail[field] = value
        if isinstance(verdict, Redact):
            detail["delivered"] = verdict.stanza.serialize().decode("utf-8", "replace")
        if event.detail:
            detail["file"] = dict(event.detail)
        stanza = event.stanza
        to = stanza.attrs.get("to") if stanza is not None else None
        commit = self.record(event.host, "verdict", event.actor, to,
                             stanza=stanza.serialize() if stanza is not None else b"",
                             stanza_type=stanza.attrs.get("type") if stanza is not None else None,
                             detail=detail)
        if commit is not None and event.session is not None:
            event.session.track_write(commit)

    async def _upload_received(self, event: UploadReceived) -> Deny | None:
        """Record an upload the content checks let through; the file becomes downloadable only
        once its record is committed."""
        if self.is_failing and self._refuses(event.host):
            return Deny("resource-constraint", REFUSAL_TEXT, rule="journal")
        uploader = f"{event.username}@{event.host}"
        path = getattr(event.path, "name", None) or str(event.path)
        commit = self.record(event.host, "upload", uploader, None, detail={"file": {
            "id": event.slot_id, "slot": event.slot_id, "filename": event.filename,
            "size": event.size, "content_type": event.content_type, "path": path,
            "uploader": uploader}})
        if commit is None:
            return Deny("resource-constraint", REFUSAL_TEXT, rule="journal")
        await asyncio.shield(commit)
        return None

    async def _stopping(self, _event: ServerStopping) -> None:
        await self.close()

    # -- the writer -------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while self._batches:
                batch = self._batches[0]
                if batch is self._open:
                    self._open = None            # what comes now goes into the next batch
                await self._write(batch)
                self._batches.popleft()
        finally:
            left = list(self._batches)
            self._batches.clear()
            self._open = None
            self._task = None
            self._release_backlog()
            for stopped in left:
                if not stopped.commit.done():
                    stopped.commit.set_exception(RuntimeError(
                        "the journal writer was stopped before these records were committed"))

    async def _write(self, batch: _Batch) -> None:
        """Commit the batch, retrying until it is written (nothing is dropped)."""
        attempt = 0
        seal = self._sealer()
        while True:
            try:
                self.head = await self._store.append_batch(
                    batch.entries, prepare, seal, self._checkpoint_every, self._sign, self._time())
                break
            except Exception as exc:
                self.failed_attempts += 1
                reason = str(exc) or type(exc).__name__
                if not self.is_failing:
                    log.error("the compliance journal cannot write: %s; new messages are refused "
                              "(or delivered where on_failure = deliver) until it can", reason)
                self.is_failing, self.failure = True, reason
                self._release_backlog()      # clients must be able to send to be refused
                await asyncio.sleep(self._retry_delays[min(attempt, len(self._retry_delays) - 1)])
                attempt += 1
        if self.is_failing:
            log.warning("the compliance journal writes again; %d queued record(s) committed",
                        len(batch.entries))
            self.is_failing, self.failure = False, ""
            self._bypassed.clear()
        self._held -= len(batch.entries)
        if self._held <= MAX_BATCH:
            self._release_backlog()
        self.records_committed += len(batch.entries)
        if not batch.commit.done():
            batch.commit.set_result(None)

    def _sealer(self):
        cipher = getattr(self._storage, "cipher", None)
        return None if cipher is None else cipher.seal

    async def flush(self) -> None:
        """Wait until every record queued so far is committed."""
        if self._batches:
            await asyncio.shield(self._batches[-1].commit)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Refuse new records, commit the queued ones and sign a final checkpoint. Gives up
        after `timeout` seconds if the database stays unwritable (logged: those are lost)."""
        self._is_closed = True
        self._open = None
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except asyncio.TimeoutError:
            log.error("shutting down with %d journal record(s) not written: the database "
                      "stayed unwritable (%s)", self._held, self.failure)
            return
        if self._sign is not None:
            try:
                await self._store.checkpoint(self._sign, self._time())
            except Exception as exc:
                log.error("the journal's shutdown checkpoint could not be written: %s", exc)

    # -- reading ----------------------------------------------------------------------------------
    async def read(self, after_id: int = 0, limit: int = 1000, *, host: str | None = None,
                   kind: str | None = None) -> list[JournalRecord]:
        """Records with ids above `after_id`, in chain order, payloads decrypted."""
        return await read_records(self._storage, after_id, limit, host=host, kind=kind)


async def read_records(storage: Storage, after_id: int = 0, limit: int = 1000, *,
                       host: str | None = None, kind: str | None = None) -> list[JournalRecord]:
    """The journal's records as JournalRecord (for the CLI and eDiscovery as much as the server)."""
    rows = await storage.journal.rows(after_id, limit, host=host, kind=kind)
    cipher = getattr(storage, "cipher", None)
    return [JournalRecord(r.id, r.ts, r.host, r.kind, r.conversation, r.participants,
                          await open_payload(r, cipher), r.purged) for r in rows]


async def open_payload(row: JournalRow, cipher: Any) -> dict | None:
    """The record's payload as a dict: unsealed with `cipher` when it is sealed (a record
    written before encryption was turned on is not). Raises ValueError when it is sealed and
    cannot be opened (wrong or missing key)."""
    return (await open_payload_tree(row, cipher))[0]


async def open_payload_tree(row: JournalRow, cipher: Any) -> tuple[dict | None, ET.Element | None]:
    """`open_payload`, and the stanza parsed when the payload is the stanza itself (None for a
    JSON payload): for readers that look inside the stanza, so that it is parsed once."""
    data = row.payload
    if data is None:
        return None, None
    if cipher is not None and not data.startswith(PLAIN_STARTS):
        data = await cipher.unseal(data, payload_aad(row.id))
    try:
        return decode_payload_tree(data)
    except ValueError:
        raise ValueError(f"journal record {row.id} is sealed or damaged; configure the key it was "
                         f"sealed with to read it") from None


# -- in the database thread --------------------------------------------------------------------
# How a payload that is not sealed starts: JSON, or a stanza's XML (sealed ones start with the
# cipher's version byte, storage/crypto.py).
PLAIN_STARTS = (b"{", b"<")
# One encoder for every payload (json.dumps with options builds a new one per call).
_PAYLOAD_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

_BARE_CACHE: dict[str, str] = {}
_BARE_CACHE_SIZE = 50_000


def _kept_kind(stanza: Element) -> str | None:
    """The record kind of a stanza the journal keeps, or None: messages with something a person
    reads (a body, a subject, a link, a file, an encrypted payload) and subscription presence."""
    attrs = stanza.attrs
    name = stanza.name
    if name == "message":
        kind = MESSAGE_KINDS.get(attrs.get("type"))
        if kind is None:
            return None                              # error messages
        for child in stanza.children:
            if child.__class__ is Element:
                wanted = _KEPT_CHILDREN.get(child.name, 0)
                if wanted is None or wanted == child.xmlns:
                    return kind
        return None
    if name == "presence" and attrs.get("type") in SUBSCRIPTION_TYPES:
        return "subscription"
    return None


def _bare(address: str | None) -> str | None:
    """The normalised bare JID of an address. Cached: the same few thousand addresses come back
    with every record, and parsing one (stringprep, IDNA) costs more than the rest of a record."""
    if not address:
        return None
    bare = _BARE_CACHE.get(address)
    if bare is None:
        jid = try_jid(address)
        bare = str(jid.bare) if jid is not None else address.partition("/")[0]
        if len(_BARE_CACHE) >= _BARE_CACHE_SIZE:
            _BARE_CACHE.clear()
        _BARE_CACHE[address] = bare
    return bare


# (kind, host, sender, recipient, type) -> (conversation, participants, the payload's JSON up to
# the stanza, whether the stanza itself can be the payload) for records without detail: the same
# pairs of addresses come back all the time.
_PREFIX_CACHE: dict[tuple, tuple[str | None, str | None, str, bool]] = {}
_PREFIX_CACHE_SIZE = 50_000
# The detail of an entry whose from, to and type are the stanza's own attributes (`prepare`).
ROUTED = True
# Characters an XML parser turns into spaces in an attribute value (attribute-value
# normalisation): a record whose addresses or type hold one keeps its payload in JSON.
_NORMALISED = frozenset("\t\n\r")


def prepare(entry: tuple) -> PreparedRecord:
    """A queued entry as a record: conversation, participants and the payload.

    The payload of a stanza recorded as it was routed (detail ROUTED: a message, subscription
    presence) is the stanza's XML itself: its from, to and type are its own attributes, and
    `decode_payload` reads them back as the same fields the JSON of the other records has
    (uploads, verdicts, purges: `from`, `to`, `type`, `stanza` and the details). That saves a
    fifth of the record's bytes and the JSON encoding of the stanza."""
    ts, host, kind, sender_full, to, stanza_type, stanza, detail = entry
    if detail and detail is not ROUTED:
        conversation, participants = _parties(host, kind, sender_full, to)
        payload: dict[str, Any] = {"from": sender_full, "to": to, "type": stanza_type,
                                   "stanza": stanza.decode("utf-8", "replace") if stanza else None}
        payload.update(detail)
        return ts, host, kind, conversation, participants, _PAYLOAD_JSON.encode(payload).encode("utf-8")
    key = (kind, host, sender_full, to, stanza_type)
    known = _PREFIX_CACHE.get(key)
    if known is None:
        conversation, participants = _parties(host, kind, sender_full, to)
        as_is = _NORMALISED.isdisjoint("".join(value for value in key[2:] if value))
        known = (conversation, participants, f'{{"from":{_json_value(sender_full)},"to":{_json_value(to)},'
                                             f'"type":{_json_value(stanza_type)},"stanza":', as_is)
        if len(_PREFIX_CACHE) >= _PREFIX_CACHE_SIZE:
            _PREFIX_CACHE.clear()
        _PREFIX_CACHE[key] = known
    conversation, participants, head, as_is = known
    if detail is ROUTED and as_is and stanza[:1] == b"<":
        return ts, host, kind, conversation, participants, stanza
    text = stanza.decode("utf-8", "replace") if stanza else None
    return ts, host, kind, conversation, participants, (head + _json_value(text) + "}").encode("utf-8")


def decode_payload(data: bytes) -> dict[str, Any]:
    """A record's payload (not sealed) as a dict: its JSON, or for a stanza stored as itself
    (`prepare`) its from, to and type attributes and the XML as `stanza`, as in the JSON.
    Raises ValueError when it is neither."""
    return decode_payload_tree(data)[0]


def decode_payload_tree(data: bytes) -> tuple[dict[str, Any], ET.Element | None]:
    """`decode_payload`, and the parsed stanza when the payload is the stanza itself."""
    if data[:1] == b"<":
        text = data.decode("utf-8", "replace")
        if "<!" in text:                        # never a DTD or entity declaration
            raise ValueError("the record's stanza holds a declaration")
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise ValueError(f"the record's stanza is not well-formed XML: {exc}") from None
        attrs = root.attrib
        return {"from": attrs.get("from"), "to": attrs.get("to"), "type": attrs.get("type"), "stanza": text}, root
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("the record's payload is not a JSON object")
    return value, None


def _parties(host: str, kind: str, sender_full: str | None, to: str | None) -> tuple[str | None, str | None]:
    """(conversation, participants) of a record: bare JIDs, sorted for a conversation."""
    sender = _bare(sender_full) or host
    recipient = _bare(to)
    if kind == "upload":
        return sender, sender
    if kind == "groupchat":
        return recipient, f"{sender} {recipient}"
    if recipient is None:
        recipient = sender if kind != "verdict" else None
    if recipient is None:
        return sender, sender
    conversation = " ".join(sorted((sender, recipient)))
    return conversation, f"{sender} {recipient}" if recipient != sender else sender


def _json_value(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


__all__ = ["Journal", "JournalRecord", "PLAIN_STARTS", "REFUSAL_TEXT", "ROUTED", "decode_payload",
           "decode_payload_tree", "open_payload", "open_payload_tree", "prepare", "read_records"]
