"""eDiscovery: search the compliance journal and export what was found, every use audited.

    ediscovery = EDiscovery(storage, audit, clock)
    query = Query.build("example.com", with_any=["alice@example.com"], start="2025-01-01",
                        end="2025-01-31", words="quarterly figures")
    page = await ediscovery.search(query, actor="admin:carol")          # audited: ediscovery.search
    manifest = await ediscovery.export(query, "admin:carol", Path("case-42"))   # ediscovery.export

A query names one tenant (host) and any of: participants (any of them took part, and/or all of
them), a date range (from inclusive, to exclusive; a bare date as `to` includes that whole day),
keywords (every word must be in the record: body, subject, link, file name or a refusal's
reason) and record kinds. The index (compliance/search_index.py) is brought up to date first, so
a search sees every record the journal had committed when it started; records come back
decrypted, in journal order, a page at a time.

Exports (compliance/ediscovery_export.py) write a folder: records.jsonl (one record per line,
with its hash and whether it verified), one readable HTML transcript per conversation, the
uploaded files (decrypted), and manifest.json (the query, who, when, counts and the SHA-256 of
every file written).

Who may: the admin API and console check the `archive.search` permission (compliance officers of
the host only); the CLI is for whoever can read the server's configuration and keys anyway.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocol.jid import InvalidJid, parse_jid
from ..storage.journal import row_intact
from ..storage.search import Criteria
from .search_index import Record, SearchIndex, open_record

if TYPE_CHECKING:
    from ..core.clock import Clock
    from .audit import AuditLog

KINDS = ("chat", "normal", "groupchat", "headline", "upload", "subscription", "verdict")
MAX_PAGE = 500
MAX_PARTICIPANTS = 50
MAX_WORDS = 32
MAX_EXPORT = 100_000                 # records in one export
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
WORDS_AAD = b"stockade ediscovery query words"     # sealing the keywords in audit entries

# Reads an uploaded file's bytes (decrypted) by (host, file id); None when it is not there.
FileReader = Callable[[str, str], Awaitable[Any]]


def upload_reader(data_dir: Path, cipher: Any) -> FileReader:
    """Reads the uploaded files under `data_dir`/uploads (modules/upload/files.py), decrypted."""
    from ..modules.upload.files import FileStore
    store = FileStore(data_dir / "uploads", cipher)

    async def read(_host: str, file_id: str) -> Any:
        try:
            if not file_id or not store.exists(file_id):
                return None
        except ValueError:                  # not a file id
            return None
        return await store.open_for_read(file_id)
    return read


class QueryError(ValueError):
    """A query that cannot be run; the text says which part and what to write instead."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def parse_time(text: str, *, end: bool = False) -> float:
    """Unix time of an ISO 8601 date or date-time (UTC unless it names an offset). A bare date
    as an end means the end of that day."""
    value = text.strip()
    try:
        if _DATE.fullmatch(value):
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            return (day + timedelta(days=1) if end else day).timestamp()
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{text!r} is not a date: write 2025-01-31 or 2025-01-31T14:30:00Z",
                         "to" if end else "from") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _bare(text: str, field: str) -> str:
    try:
        jid = parse_jid(text.strip())
    except InvalidJid as exc:
        raise QueryError(f"{text!r} is not a valid address: {exc}", field) from None
    return str(jid.bare)


def _when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Query:
    """A checked eDiscovery query (build it with `Query.build`)."""
    host: str
    with_any: tuple[str, ...] = ()
    with_all: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    words: str = ""
    kinds: tuple[str, ...] = ()

    @classmethod
    def build(cls, host: str, *, with_any: Iterable[str] = (), with_all: Iterable[str] = (),
              start: str | float | None = None, end: str | float | None = None, words: str = "",
              kinds: Iterable[str] = ()) -> Query:
        """Check and normalise the parts of a query; QueryError names the first bad one."""
        any_of = tuple(dict.fromkeys(_bare(j, "with") for j in with_any if j.strip()))
        all_of = tuple(dict.fromkeys(_bare(j, "with_all") for j in with_all if j.strip()))
        if len(any_of) + len(all_of) > MAX_PARTICIPANTS:
            raise QueryError(f"at most {MAX_PARTICIPANTS} participants in one query; split the search", "with")
        begin = parse_time(start) if isinstance(start, str) and start.strip() else (
            float(start) if isinstance(start, (int, float)) else None)
        finish = parse_time(end, end=True) if isinstance(end, str) and end.strip() else (
            float(end) if isinstance(end, (int, float)) else None)
        if begin is not None and finish is not None and finish <= begin:
            raise QueryError("the end of the date range is not after its start: swap them", "to")
        kinds = tuple(dict.fromkeys(k.strip() for k in kinds if k.strip()))
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise QueryError(f"unknown record kind {unknown[0]!r}; use one of {', '.join(KINDS)}", "kind")
        words = " ".join(words.split())
        if len(words.split()) > MAX_WORDS:
            raise QueryError(f"at most {MAX_WORDS} keywords in one query", "words")
        return cls(host, any_of, all_of, begin, finish, words, kinds)

    def describe(self, cipher: Any = None) -> dict[str, Any]:
        """The query as recorded in the export manifest and, with the storage `cipher`, in the
        audit log: there the keywords are sealed (`cipher.open_text(words, WORDS_AAD)` reads
        them), because what an investigator searches for says what the messages hold, and
        neither belongs in the database in clear, nor before an auditor's eyes."""
        words = self.words
        if cipher is not None and words:
            words = cipher.seal_text(words, WORDS_AAD)
        return {"host": self.host, "with": list(self.with_any), "with_all": list(self.with_all),
                "from": _when(self.start), "to": _when(self.end), "words": words, "kinds": list(self.kinds)}


@dataclass(frozen=True, slots=True)
class Page:
    records: list[Record]
    next_after: int | None          # pass as `after_id` for the next page; None at the end


class EDiscovery:
    """Search and export over the journal of one Storage, audited as `ediscovery.*`."""

    def __init__(self, storage: Any, audit: AuditLog, clock: Clock, *, index: SearchIndex | None = None,
                 before_search: Callable[[], Awaitable[None]] | None = None,
                 files: FileReader | None = None) -> None:
        self.storage = storage
        self.audit = audit
        self.clock = clock
        self.index = index or SearchIndex(storage)
        self.before_search = before_search          # e.g. flush the journal's queued records
        self.files = files

    async def _criteria(self, query: Query, after_id: int, limit: int) -> Criteria:
        if self.before_search is not None:
            await self.before_search()
        await self.index.catch_up()
        tokens = await self.index.query_tokens(query.words) if query.words else ()
        return Criteria(query.host, query.start, query.end, query.kinds, query.with_any, query.with_all,
                        tokens, after_id, limit)

    async def _records(self, ids: Sequence[int]) -> list[tuple[Record, bool]]:
        rows = await self.index.store.journal_rows(ids)
        cipher = self.index.cipher
        # A record purged while the index still had it (between retention and the next sweep)
        # is never shown.
        return [(await open_record(cipher, row), row_intact(row)) for row in rows if row.purged is None]

    async def find(self, query: Query, *, after_id: int = 0, limit: int = 100) -> Page:
        """One page of matching records, decrypted (not audited: `search` is the audited entry)."""
        if not 1 <= limit <= MAX_PAGE:
            raise QueryError(f"limit must be between 1 and {MAX_PAGE}", "limit")
        if query.words and not await self.index.query_tokens(query.words):
            return Page([], None)                  # only separators: no word can match
        criteria = await self._criteria(query, after_id, limit + 1)
        ids = await self.index.store.find(criteria)
        more = len(ids) > limit
        ids = ids[:limit]
        records = [record for record, _ in await self._records(ids)]
        return Page(records, ids[-1] if more and ids else None)

    async def search(self, query: Query, actor: str, *, after_id: int = 0, limit: int = 100,
                     via: str = "") -> Page:
        """`find`, recorded in the audit log as `ediscovery.search` with the query and the count."""
        page = await self.find(query, after_id=after_id, limit=limit)
        await self.audit.record(query.host, actor, "ediscovery.search", query.host,
                                query=query.describe(self.index.cipher),
                                count=len(page.records), after=after_id or None, **({"via": via} if via else {}))
        return page

    async def matching(self, query: Query, *, limit: int = MAX_EXPORT) -> list[tuple[Record, bool]]:
        """Every matching record (up to `limit`), with whether its hashes verified."""
        out: list[tuple[Record, bool]] = []
        after = 0
        while len(out) < limit:
            criteria = await self._criteria(query, after, min(MAX_PAGE, limit - len(out)))
            if query.words and not criteria.tokens:
                break
            ids = await self.index.store.find(criteria)
            if not ids:
                break
            out += await self._records(ids)
            after = ids[-1]
        return out

    async def export_jsonl(self, query: Query, actor: str, *, via: str = "") -> str:
        """The matching records as JSONL text; recorded as `ediscovery.export` like `export`."""
        from .ediscovery_export import jsonl_text
        records = await self.matching(query)
        await self.audit.record(query.host, actor, "ediscovery.export", query.host,
                                query=query.describe(self.index.cipher),
                                count=len(records), files=0, formats=["jsonl"], **({"via": via} if via else {}))
        return jsonl_text(records)

    async def export(self, query: Query, actor: str, folder: Path, *, formats: Sequence[str] = ("jsonl", "html"),
                     via: str = "") -> dict[str, Any]:
        """Write the export of `query` into `folder` (created; must be empty); the manifest.
        Recorded in the audit log as `ediscovery.export`."""
        from .ediscovery_export import write_export
        records = await self.matching(query)
        manifest = await write_export(folder, records, query, actor, self.clock.time(), formats, self.files)
        await self.audit.record(query.host, actor, "ediscovery.export", query.host,
                                query=query.describe(self.index.cipher),
                                count=manifest["counts"]["records"], files=manifest["counts"]["files"],
                                formats=list(formats), **({"via": via} if via else {}))
        return manifest
