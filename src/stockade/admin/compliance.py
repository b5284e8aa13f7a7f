"""eDiscovery in the admin API and the console: search the compliance journal, export it.

API (docs/admin.md):
    GET  /api/v1/hosts/{host}/archive/search?with=JID&with_all=JID&from=DATE&to=DATE&words=...&kind=...
    POST /api/v1/hosts/{host}/archive/export   {"with": [...], "from": ..., "format": "jsonl" | "zip"}
Console: /admin/compliance (search form, results, export buttons).

Only a principal with the `archive.search` permission on the host may: the compliance officer of
that host (roles.py). Everyone else gets 403 with the reason, a host outside the admin's scope
included. Every search and export is recorded in the audit log by compliance/ediscovery.py, with
the admin as actor and the query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import Query as Q
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from ..compliance.ediscovery import MAX_PAGE, KINDS, Query, QueryError
from ..compliance.ediscovery_export import ExportError, export_zip
from . import roles
from .actions import ActionRefused

if TYPE_CHECKING:
    from ..compliance.ediscovery import EDiscovery
    from .actions import AdminActions
    from .console import Console, ConsoleSession
    from .identities import Principal

CONSOLE_PAGE = 50
Kind = Literal[KINDS]  # type: ignore[valid-type]


def _ediscovery(actions: AdminActions, who: Principal, host: str) -> EDiscovery:
    actions.check(who, roles.ARCHIVE_SEARCH, host)
    if actions.ediscovery is None:
        raise ActionRefused(404, "eDiscovery is not available on this server")
    return actions.ediscovery


def build_query(host: str, *, with_any: list[str], with_all: list[str], start: str | None, end: str | None,
                words: str, kinds: list[str]) -> Query:
    try:
        return Query.build(host, with_any=with_any, with_all=with_all, start=start, end=end, words=words,
                           kinds=kinds)
    except QueryError as exc:
        raise ActionRefused(422, str(exc), exc.field) from None


async def search(actions: AdminActions, who: Principal, query: Query, *, after: int = 0, limit: int = 100,
                 via: str) -> dict[str, Any]:
    """One page of results, as the API and the console show them (audited)."""
    ediscovery = _ediscovery(actions, who, query.host)
    try:
        page = await ediscovery.search(query, who.actor, after_id=after, limit=limit, via=via)
    except QueryError as exc:
        raise ActionRefused(422, str(exc), exc.field) from None
    return {"records": [r.as_json() for r in page.records], "next_after": page.next_after}


async def export(actions: AdminActions, who: Principal, query: Query, fmt: str, *, via: str) -> Response:
    """The export as a download: JSONL text, or a zip with JSONL, HTML transcripts, files and the
    manifest (audited)."""
    ediscovery = _ediscovery(actions, who, query.host)
    name = f"ediscovery-{query.host}"
    try:
        if fmt == "jsonl":
            text = await ediscovery.export_jsonl(query, who.actor, via=via)
            return Response(text.encode("utf-8"), media_type="application/x-ndjson",
                            headers={"content-disposition": f'attachment; filename="{name}.jsonl"'})
        data = await export_zip(ediscovery, query, who.actor, via=via)
    except (QueryError, ExportError) as exc:
        raise ActionRefused(422, str(exc), getattr(exc, "field", None)) from None
    return Response(data, media_type="application/zip",
                    headers={"content-disposition": f'attachment; filename="{name}.zip"'})


# -- API ------------------------------------------------------------------------------------------

class ArchiveRecord(BaseModel):
    id: int
    ts: float
    host: str
    kind: str
    conversation: str
    participants: list[str]
    from_: str = Field(alias="from")
    to: str
    type: str
    body: str
    subject: str
    links: list[str]
    file: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    digest: str
    hash: str
    error: str | None = None

    model_config = ConfigDict(populate_by_name=True)


class ArchivePage(BaseModel):
    records: list[ArchiveRecord]
    next_after: int | None = Field(description="pass as ?after= for the next page; null at the end")


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    with_: list[str] = Field(default_factory=list, alias="with", max_length=50,
                             description="bare JIDs: records where any of them took part")
    with_all: list[str] = Field(default_factory=list, max_length=50, description="bare JIDs that all took part")
    from_: str | None = Field(default=None, alias="from", max_length=64,
                              description="start, inclusive: 2025-01-31 or 2025-01-31T14:30:00Z")
    to: str | None = Field(default=None, max_length=64, description="end, exclusive (a bare date: that whole day)")
    words: str = Field(default="", max_length=1000, description="keywords; every one must match")
    kinds: list[Kind] = Field(default_factory=list, max_length=len(KINDS))  # type: ignore[valid-type]
    format: Literal["jsonl", "zip"] = Field(default="jsonl", description="jsonl: the records; zip: records, "
                                            "HTML transcripts, files and a manifest")


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "the export: JSONL (one record per line) or a zip file",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                "application/zip": {"schema": {"type": "string", "format": "binary"}}}}}


def add_api_routes(app: Any, actions: AdminActions, who_dependency: Any, host_param: Any) -> None:
    """The eDiscovery routes of the admin API (called by api.build_api)."""

    @app.get("/hosts/{host}/archive/search", response_model=ArchivePage, response_model_by_alias=True,
             summary="Search the compliance journal (compliance officers; audited)")
    async def archive_search(
            host: str = host_param,
            with_: list[str] = Q([], alias="with", max_length=50, description="any of these bare JIDs took part"),
            with_all: list[str] = Q([], max_length=50, description="all of these bare JIDs took part"),
            from_: str | None = Q(None, alias="from", max_length=64, description="start date (inclusive)"),
            to: str | None = Q(None, max_length=64, description="end date (exclusive; a bare date: that whole day)"),
            words: str = Q("", max_length=1000, description="keywords, all must match"),
            kind: list[Kind] = Q([], max_length=len(KINDS)),  # type: ignore[valid-type]
            after: int = Q(0, ge=0, le=2**62, description="only records after this journal id (paging)"),
            limit: int = Q(100, ge=1, le=MAX_PAGE),
            who: Principal = who_dependency) -> Any:
        actions.check(who, roles.ARCHIVE_SEARCH, host)
        query = build_query(host, with_any=with_, with_all=with_all, start=from_, end=to, words=words,
                            kinds=list(kind))
        return await search(actions, who, query, after=after, limit=limit, via="api")

    @app.post("/hosts/{host}/archive/export", response_class=Response, responses=EXPORT_RESPONSES,
              summary="Export matching journal records as JSONL or a zip (compliance officers; audited)")
    async def archive_export(body: ExportRequest, host: str = host_param, who: Principal = who_dependency) -> Any:
        actions.check(who, roles.ARCHIVE_SEARCH, host)
        query = build_query(host, with_any=body.with_, with_all=body.with_all, start=body.from_, end=body.to,
                            words=body.words, kinds=list(body.kinds))
        return await export(actions, who, query, body.format, via="api")


# -- console ------------------------------------------------------------------------------------------

def _split(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


async def console_page(console: Console, request: Request) -> Response:
    """GET shows the form; POST (with the session's CSRF token) runs the search or an export."""
    async def build(session: ConsoleSession, who: Principal) -> Response:
        actions = console.actions
        if request.method == "POST":
            data = await console.form(request, session)
            if data is None:
                return console.refused_form(request, session, who)
        else:
            data = {}
        host = console.host_of(request, who, data.get("host") or None)
        actions.check(who, roles.ARCHIVE_SEARCH, host)
        values = {k: data.get(k, "") for k in ("with", "with_all", "from", "to", "words", "kind")}
        results: dict[str, Any] | None = None
        error = ""
        if request.method == "POST":
            try:
                query = build_query(host, with_any=_split(values["with"]), with_all=_split(values["with_all"]),
                                    start=values["from"] or None, end=values["to"] or None, words=values["words"],
                                    kinds=[values["kind"]] if values["kind"] else [])
                op = data.get("op", "search")
                if op in ("jsonl", "zip"):
                    return console._secure(await export(actions, who, query, op, via="console"), None)
                after_text = data.get("after", "")
                after = int(after_text) if after_text.isdigit() and int(after_text) < 2**62 else 0
                results = await search(actions, who, query, after=after, limit=CONSOLE_PAGE, via="console")
            except ActionRefused as exc:
                if exc.status != 422:
                    raise
                error = exc.message
        return console.render(request, "compliance.html", 422 if error else 200, session, who, host=host,
                              values=values, results=results, error=error, kinds=KINDS)
    return await console.page(request, build)
