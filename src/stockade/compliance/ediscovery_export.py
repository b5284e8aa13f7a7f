"""Writing an eDiscovery export: JSONL, HTML transcripts, the files, and a manifest.

The folder it writes:

    manifest.json                 query, who exported, when, counts, SHA-256 of every file below
    records.jsonl                 one journal record per line (decrypted), with its hash and
                                  whether its digest and hash verified     (format "jsonl")
    transcripts/NAME.html         one readable transcript per conversation  (format "html")
    files/ID-NAME                 the bytes of each uploaded file, decrypted (format "html")

Message text is untrusted: in the transcripts every value is HTML-escaped, and each page also
carries a Content-Security-Policy that forbids scripts, so a message holding markup shows as
text even in a browser that opens the page from disk. File names are reduced to safe characters
before they name anything on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .search_index import Record

if TYPE_CHECKING:
    from .ediscovery import FileReader, Query

FORMATS = ("jsonl", "html")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'"


class ExportError(Exception):
    """An export that cannot be written (folder not empty, not writable); the text says what to do."""


def safe_name(value: str, limit: int = 80) -> str:
    """A file name made of safe characters only (never empty, never a dot file)."""
    name = _UNSAFE.sub("_", value).strip("._") or "unnamed"
    return name[:limit]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def jsonl_line(record: Record, is_verified: bool) -> str:
    return json.dumps({**record.as_json(), "time": _iso(record.ts), "verified": is_verified},
                      ensure_ascii=False, sort_keys=True)


def jsonl_text(records: Sequence[tuple[Record, bool]]) -> str:
    return "".join(jsonl_line(r, v) + "\n" for r, v in records)


def _transcript(conversation: str, host: str, records: Sequence[tuple[Record, bool]],
                files: dict[int, str]) -> str:
    e = html.escape
    rows = []
    for record, is_verified in records:
        if record.kind == "upload":
            f = record.file
            stored = files.get(record.id)
            link = f' <a href="../{e(stored)}">{e(stored)}</a>' if stored else " (file not in the export)"
            text = (f'<span class="file">file {e(str(f.get("name", "")))}, {e(str(f.get("size", "?")))} bytes, '
                    f'{e(str(f.get("content_type", "")))}</span>{link}')
        elif record.kind == "verdict":
            v = record.verdict
            text = (f'<span class="verdict">policy verdict {e(str(v.get("verdict") or v.get("class") or ""))}'
                    f' ({e(str(v.get("rule") or ""))}: {e(str(v.get("reason") or v.get("text") or ""))})</span>'
                    f"<br>{e(record.body)}")
        else:
            text = e(record.body)
            if record.subject:
                text = f"<strong>{e(record.subject)}</strong><br>{text}"
            for url in record.links:
                text += f"<br>link: {e(url)}"
        if record.error:
            text = f'<span class="error">{e(record.error)}</span>'
        mark = "" if is_verified else ' <span class="error">(hash does not verify)</span>'
        rows.append(f'<tr id="r{record.id}"><td>{e(_iso(record.ts))}</td><td>{e(record.kind)}</td>'
                    f"<td>{e(record.sender)}</td><td>{e(record.to)}</td><td>{text}{mark}</td></tr>")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>Transcript: {e(conversation)}</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:2px 8px}"
        ".error{color:#a00}.file,.verdict{font-style:italic}</style></head><body>"
        f"<h1>Transcript: {e(conversation)}</h1><p>Tenant {e(host)}; {len(records)} record(s), "
        "times in UTC. Exported from the Stockade compliance journal.</p>"
        "<table><thead><tr><th>Time</th><th>Kind</th><th>From</th><th>To</th><th>Message</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></body></html>\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def _copy_file(files: FileReader, record: Record, target: Path) -> bool:
    chunks = await files(record.host, str(record.file.get("id") or ""))
    if chunks is None:
        return False
    with open(target, "xb") as out:
        async for chunk in chunks:
            await asyncio.to_thread(out.write, chunk)
    return True


async def write_export(folder: Path, records: Sequence[tuple[Record, bool]], query: Query, actor: str,
                       now: float, formats: Sequence[str], files: FileReader | None) -> dict[str, Any]:
    """Write the export into `folder` (created if missing; must be empty); the manifest."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format {unknown[0] if unknown else ''!r}; use jsonl or html")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if any(folder.iterdir()):
            raise ExportError(f"the export folder {folder} is not empty; give a new or empty folder")
    except OSError as exc:
        raise ExportError(f"cannot write the export folder {folder}: {exc.strerror}; check the path and its "
                          f"permissions") from None
    written: list[Path] = []
    missing = 0
    copied: dict[int, str] = {}
    if "jsonl" in formats:
        path = folder / "records.jsonl"
        path.write_text(jsonl_text(records), encoding="utf-8")
        written.append(path)
    if "html" in formats:
        if files is not None:
            for record, _ in records:
                if record.kind != "upload" or not record.file.get("id"):
                    continue
                (folder / "files").mkdir(exist_ok=True)
                rel = f"files/{record.id}-{safe_name(str(record.file.get('name') or 'file'))}"
                try:
                    if await _copy_file(files, record, folder / rel):
                        copied[record.id] = rel
                        written.append(folder / rel)
                        continue
                except (OSError, ValueError):
                    (folder / rel).unlink(missing_ok=True)
                missing += 1
        conversations: dict[str, list[tuple[Record, bool]]] = {}
        for item in records:
            conversations.setdefault(item[0].conversation or item[0].kind, []).append(item)
        if conversations:
            (folder / "transcripts").mkdir(exist_ok=True)
        used: set[str] = set()
        for conversation, items in conversations.items():
            name = safe_name(conversation.replace(" ", "+"))
            while name in used:
                name += "_"
            used.add(name)
            path = folder / "transcripts" / f"{name}.html"
            path.write_text(_transcript(conversation, query.host, items, copied), encoding="utf-8")
            written.append(path)
    conversations_count = len({r.conversation for r, _ in records})
    manifest = {
        "query": query.describe(), "exported_by": actor, "exported_at": _iso(now), "exported_ts": now,
        "formats": list(formats),
        "counts": {"records": len(records), "conversations": conversations_count, "files": len(copied),
                   "files_missing": missing, "not_verified": sum(1 for _, v in records if not v)},
        "files": {str(p.relative_to(folder)): _sha256(p) for p in written},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


async def export_zip(ediscovery: Any, query: Query, actor: str, formats: Sequence[str] = FORMATS,
                     via: str = "") -> bytes:
    """The export of `query` as the bytes of a zip file (for the admin API and console)."""
    with tempfile.TemporaryDirectory(prefix="stockade-export-") as tmp:
        folder = Path(tmp) / "export"
        await ediscovery.export(query, actor, folder, formats=formats, via=via)
        return await asyncio.to_thread(_zip_folder, folder)


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, str(path.relative_to(folder)))
    return buffer.getvalue()
