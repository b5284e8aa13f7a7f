"""The HTTPS side of XEP-0363: PUT into a slot, GET (and HEAD) the file, OPTIONS for browsers.

    PUT  /upload/<slot id>/<name>   201 once the file is stored and a policy allowed it
    GET  /upload/<slot id>/<name>   the file, with headers that keep a browser from running it
    OPTIONS                         the CORS preflight of web clients (Converse.js)

The slot id (32 random bytes) is the only secret: whoever has the URL may download the file,
as the XEP intends. A PUT is taken only for a slot that is known, open, unused, and only with the
Content-Length and Content-Type it was requested for; the body is streamed to disk and may not
grow past that length. The UploadReceived hook then decides: Deny deletes the file and the PUT
gets 403 with the verdict's text, Quarantine keeps it without ever serving it.

Every answer is a status with a plain-text body saying what happened; nothing here answers 500.
"""

from __future__ import annotations

import logging
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from ...core.hooks import UploadReceived
from ...core.verdict import Deny, Quarantine
from .catalog import AVAILABLE, QUARANTINED, Catalog, Slot, StoredFile
from .checks import content_disposition, same_type
from .files import FileStore, FileWriter

if TYPE_CHECKING:
    from ...core.module_api import ModuleAPI
    from . import Options

log = logging.getLogger(__name__)

CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, HEAD, PUT, OPTIONS",
    "access-control-allow-headers": "Content-Type, Content-Length",
    "access-control-expose-headers": "Content-Length, Content-Type, Content-Disposition",
}
# A download never runs in the server's origin: no script, no plugin, no framing, a sandbox.
DOWNLOAD_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
MAX_CACHE_AGE = 365 * 86400


def text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message + "\n", status, headers={**CORS, **(headers or {})}, media_type="text/plain")


class UploadHttp:
    def __init__(self, module: ModuleAPI, options: Options, catalog: Catalog, files: FileStore) -> None:
        self.module = module
        self.options = options
        self.catalog = catalog
        self.files = files

    async def endpoint(self, request: Request) -> Response:
        method = request.method
        if method == "OPTIONS":
            return Response(status_code=204, headers={**CORS, "access-control-max-age": "86400"})
        await self.catalog.load()
        slot_id, name = request.path_params["slot_id"], request.path_params["filename"]
        if method == "PUT":
            return await self.put(request, slot_id, name)
        return await self.get(request, slot_id, name, is_head=method == "HEAD")

    # -- upload ---------------------------------------------------------------------------------
    async def put(self, request: Request, slot_id: str, name: str) -> Response:
        catalog = self.catalog
        if slot_id in catalog.stored or slot_id in catalog.spent:
            return text(409, "This upload slot has already been used. Request a new slot to upload again.")
        slot = catalog.slots.get(slot_id)
        if slot is None or slot.filename != name:
            return text(404, "There is no upload slot at this address. Request a slot (XEP-0363) first.")
        if slot.is_uploading:
            return text(409, "A file is being uploaded to this slot right now.")
        if slot.expires <= self.module.clock.monotonic():
            catalog.drop_slot(slot)
            return text(403, f"This upload slot has expired (slots are valid for {self.options.slot_lifetime} "
                             "seconds). Request a new slot.")
        problem = self._check_headers(request, slot)
        if problem is not None:
            return problem
        slot.is_uploading = True
        try:
            return await self._receive(request, slot)
        finally:
            slot.is_uploading = False

    @staticmethod
    def _check_headers(request: Request, slot: Slot) -> Response | None:
        headers = request.headers
        if "transfer-encoding" in headers:
            return text(411, "Send the file with a Content-Length header, not in chunks.")
        length = headers.get("content-length")
        if length is None:
            return text(411, f"Content-Length is required; this slot is for {slot.size} bytes.")
        if not length.isascii() or not length.isdigit():
            return text(400, f"Content-Length must be a number of bytes, not {length[:40]!r}.")
        if int(length) > slot.size:
            return text(413, f"Content-Length is {int(length)} bytes, but this slot was requested for "
                             f"{slot.size} bytes. Request a slot with the right size.")
        if int(length) != slot.size:
            return text(400, f"Content-Length is {int(length)} bytes, but this slot was requested for "
                             f"{slot.size} bytes. Request a slot with the right size.")
        sent_type = headers.get("content-type")
        if not same_type(sent_type, slot.content_type):
            return text(415, f"Content-Type is {(sent_type or '(none)')[:100]!r}, but this slot was requested for "
                             f"{slot.content_type!r}. Send the type given in the slot request.")
        return None

    async def _receive(self, request: Request, slot: Slot) -> Response:
        try:
            writer = await self.files.open_for_write(slot.id)
        except OSError as exc:
            log.error("cannot store an upload in %s: %s", self.files.root, exc)
            return text(507, "The server cannot store files right now. Try again later.")
        is_kept = False
        try:
            refusal = await self._stream(request, slot, writer)
            if refusal is not None:
                return refusal
            path = await writer.finish()
            verdict = await self.module.ctx.bus.fire_async(UploadReceived(
                slot.host, slot.username, slot.id, slot.filename, slot.content_type, slot.size, path,
                read=self.files.reader(path, slot.id)))
            if isinstance(verdict, Deny):
                self.catalog.spend(slot)
                log.info("upload %s of %s@%s refused by %s: %s", slot.id, slot.username, slot.host,
                         verdict.rule or "a policy", verdict.text)
                return text(403, f"The file was refused: {verdict.text}")
            if not await self.module.accounts.exists(slot.host, slot.username):
                # Removed while the file was on its way: AccountRemoved has already cleaned up.
                self.catalog.spend(slot)
                return text(403, "The account that requested this slot no longer exists.")
            item = StoredFile(id=slot.id, host=slot.host, username=slot.username, filename=slot.filename,
                              content_type=slot.content_type, size=slot.size, time=self.module.clock.time(),
                              path=writer.final.name)
            if isinstance(verdict, Quarantine):
                item.status, item.rule = QUARANTINED, verdict.rule
                log.info("upload %s of %s@%s quarantined by %s: %s", slot.id, slot.username, slot.host,
                         verdict.rule or "a policy", verdict.reason)
            await self.catalog.add(item, writer.commit)
            is_kept = True
            self.catalog.spend(slot)
        except ClientDisconnect:
            # The uploader went away mid-file: the slot stays open for another try.
            return text(400, "The upload was broken off before the end of the file.")
        except OSError as exc:
            log.error("storing upload %s failed: %s", slot.id, exc)
            return text(507, "The server could not store the file. Try again later.")
        except Exception:
            log.exception("storing upload %s failed", slot.id)
            return text(503, "The server could not store the file. Try again later.")
        finally:
            if not is_kept:
                await writer.discard()
        if item.status == QUARANTINED:
            return text(403, f"The file was received but is held for review and cannot be downloaded: "
                             f"{verdict.reason}")
        return text(201, "Created: the file can be downloaded from this address.")

    async def _stream(self, request: Request, slot: Slot, writer: FileWriter) -> Response | None:
        """Copy the body to the writer, never past the slot's size (whatever the headers said)."""
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > slot.size:
                return text(413, f"The body is longer than the {slot.size} bytes this slot was requested for.")
            await writer.write(chunk)
        if received != slot.size:
            return text(400, f"The body has {received} bytes, but this slot was requested for {slot.size} bytes.")
        return None

    # -- download -------------------------------------------------------------------------------
    async def get(self, request: Request, file_id: str, name: str, *, is_head: bool) -> Response:
        item = self.catalog.stored.get(file_id)
        max_age = self.options.file_expiry_days * 86400
        now = self.module.clock.time()
        if item is None or item.filename != name or (max_age and item.time + max_age <= now):
            return text(404, "There is no file at this address. It may have expired or been deleted.")
        if item.status != AVAILABLE:
            return text(403, "This file is held for review and cannot be downloaded.")
        etag = f'"{item.id}"'
        fresh_for = int(min(MAX_CACHE_AGE, item.time + max_age - now)) if max_age else MAX_CACHE_AGE
        headers = {
            **CORS,
            "content-type": item.content_type,
            "content-disposition": content_disposition(item.content_type, item.filename),
            "x-content-type-options": "nosniff",
            "content-security-policy": DOWNLOAD_CSP,
            # private: a shared cache keeps no copy; immutable: the bytes at a URL never change.
            "cache-control": f"private, max-age={max(fresh_for, 0)}, immutable",
            "etag": etag,
            "last-modified": formatdate(item.time, usegmt=True),
        }
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers={k: v for k, v in headers.items() if k != "content-type"})
        headers["content-length"] = str(item.size)
        if is_head:
            return _HeadResponse(headers)
        try:
            chunks = await self.files.open_for_read(item.id)
        except OSError as exc:
            log.error("the uploaded file %s cannot be read: %s", item.id, exc)
            return text(404, "There is no file at this address. It may have expired or been deleted.")
        return StreamingResponse(chunks, headers=headers)


class _HeadResponse(Response):
    """The headers a GET would send, with no body (Content-Length stays the file's)."""

    def __init__(self, headers: dict[str, Any]) -> None:
        super().__init__(None, 200)
        self.raw_headers = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
