"""`stockade archive search | export`: eDiscovery from the command line (docs/compliance.md).

    $ stockade archive search --host example.com --with alice@example.com --from 2025-01-01 \\
          --to 2025-01-31 --words "quarterly figures"
    #812  2025-01-14 09:12:44 UTC  chat  alice@example.com/laptop -> bob@example.com: the quarterly figures ...
    1 record(s)
    $ stockade archive export --host example.com --with alice@example.com --out case-42 --format html
    exported 37 record(s) of 4 conversation(s), 2 file(s) to case-42 (manifest.json lists the SHA-256 of each file)

Runs beside a running server, on the same database, with the server's keys (the configuration's
[encryption] section): the command brings the search index up to date first. Every search and
export is recorded in the audit log (actor `cli`, the query, the count). Registered by
cli_archive.py; exit 0 done, 1 refused with the reason.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .config import ServerConfig, resolve_path


def add_parsers(asub: Any) -> None:
    """`archive search` and `archive export` under the `archive` subcommands."""
    search = asub.add_parser("search", help="search the journal (eDiscovery); audited")
    export = asub.add_parser("export", help="export matching journal records as JSONL and/or HTML transcripts "
                                            "with the uploaded files and a manifest; audited")
    for p in (search, export):
        p.add_argument("--host", help="the tenant (domain) to search; needed when the server serves several")
        p.add_argument("--with", dest="with_any", action="append", default=[], metavar="JID",
                       help="records where this bare JID took part (repeat: any of them)")
        p.add_argument("--with-all", dest="with_all", action="append", default=[], metavar="JID",
                       help="records where this bare JID took part (repeat: all of them)")
        p.add_argument("--from", dest="start", metavar="DATE", help="start, inclusive: 2025-01-31 or 2025-01-31T14:30Z")
        p.add_argument("--to", dest="end", metavar="DATE", help="end, exclusive (a bare date: that whole day)")
        p.add_argument("--words", nargs="+", default=[], help="keywords; every one must match")
        p.add_argument("--kind", action="append", default=[], help="record kind (repeat): chat, groupchat, upload, ...")
    search.add_argument("--limit", type=int, default=100, help="records per page (1-500)")
    search.add_argument("--after", type=int, default=0, help="records after this journal id (the next page)")
    search.add_argument("--json", action="store_true", help="print one JSON record per line instead")
    export.add_argument("--out", type=Path, required=True, help="a new or empty folder to write the export into")
    export.add_argument("--format", action="append", choices=("jsonl", "html"), default=[],
                        help="jsonl (records.jsonl) and/or html (transcripts and files); repeat for both; "
                             "default: both")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _line(record: Any) -> str:
    if record.error:
        text = f"[{record.error}]"
    elif record.kind == "upload":
        f = record.file
        text = f"file {f.get('name', '')} ({f.get('size', '?')} bytes, {f.get('content_type', '')})"
    else:
        text = record.body or record.subject or " ".join(record.links)
    text = " ".join(text.split())               # one line per record, whatever the message holds
    to = f" -> {record.to}" if record.to else ""
    return f"#{record.id}  {_when(record.ts)}  {record.kind}  {record.sender}{to}: {text}"


async def ediscovery_command(config: ServerConfig, args: argparse.Namespace, fail: Callable[..., int]) -> int:
    from .compliance.audit import AuditLog
    from .compliance.ediscovery import EDiscovery, Query, QueryError, upload_reader
    from .compliance.ediscovery_export import ExportError, jsonl_line
    from .core.clock import SystemClock
    from .storage import Storage, StorageError
    from .storage.keyfile import load_keyring
    host = args.host or (config.domains[0] if len(config.domains) == 1 else "")
    if not host:
        return fail(f"this server serves several domains ({', '.join(config.domains)}); say which with --host")
    if host not in config.domains:
        return fail(f"{host!r} is not a domain this server serves (see hosts in {config.source})")
    try:
        query = Query.build(host, with_any=args.with_any, with_all=args.with_all, start=args.start, end=args.end,
                            words=" ".join(args.words), kinds=args.kind)
    except QueryError as exc:
        return fail(str(exc))
    data_dir = resolve_path(config, config.server.data_dir)
    if not config.storage.url and not (data_dir / "stockade.db").exists():
        return fail(f"there is no database at {data_dir / 'stockade.db'}; check server.data_dir in {config.source}")
    try:
        storage = await Storage.open(config.storage.url or f"sqlite:///{data_dir / 'stockade.db'}",
                                     keyring=load_keyring(config, data_dir))
    except (StorageError, OSError) as exc:
        return fail(f"cannot open the database: {exc}")
    clock = SystemClock()
    audit = AuditLog(storage.audit, clock)
    ediscovery = EDiscovery(storage, audit, clock, files=upload_reader(data_dir, storage.cipher))
    via = f"cli ({_os_user()})"
    try:
        if args.action == "search":
            if not 1 <= args.limit <= 500:
                return fail("--limit must be between 1 and 500")
            page = await ediscovery.search(query, "cli", after_id=max(0, args.after), limit=args.limit, via=via)
            for record in page.records:
                print(jsonl_line(record, True) if args.json else _line(record))
            print(f"{len(page.records)} record(s)" + (f"; more: add --after {page.next_after}"
                                                       if page.next_after else ""))
            return 0
        manifest = await ediscovery.export(query, "cli", args.out, formats=args.format or ["jsonl", "html"], via=via)
        counts = manifest["counts"]
        missing = f"; {counts['files_missing']} file(s) no longer stored" if counts["files_missing"] else ""
        print(f"exported {counts['records']} record(s) of {counts['conversations']} conversation(s), "
              f"{counts['files']} file(s) to {args.out}{missing} (manifest.json lists the SHA-256 of each file)")
        return 0
    except (QueryError, ExportError) as exc:
        return fail(str(exc))
    except (StorageError, ValueError) as exc:
        return fail(f"cannot read the journal: {exc}")
    finally:
        await storage.close()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown user"
