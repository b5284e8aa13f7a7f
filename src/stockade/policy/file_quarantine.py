"""Quarantined uploads: files a policy held (Quarantine on UploadReceived) wait for a compliance officer.

A held file stays in the upload catalog (modules/upload/catalog.py) with status "quarantined" and
the rule that held it, and is never served. A compliance officer lists a host's held files (admin
API GET /api/v1/hosts/{host}/quarantine/files) and either

- deletes one: the stored bytes and the catalog record are removed (the uploader was told at
  upload time and is not told again); or
- releases one: it becomes downloadable at its URL. Only a hold by a type or size rule can be
  released. A file in which the malware scanner found something (rule "malware") is never
  released: the request is refused with 409, and the file can only be deleted. When the scanner
  is on, a released file is scanned first, because a hold that came before the scan (a cheaper
  check earlier in the UploadReceived chain) ends the chain and the file was never scanned; a
  finding turns it into a malware hold, a scanner that cannot answer keeps it held (503). With
  the compliance journal on, the released file is recorded there, like any accepted upload,
  before anyone can download it.

Why a file was held (the verdict's reason; the signature for malware) is kept beside the catalog
in the map store "upload_quarantine" under (host, "", file id), written when the verdict is given
(VerdictGiven) and removed with the decision. Both decisions are audited
(`quarantine.file.release`, `quarantine.file.delete`) with the officer as actor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..core.hooks import ServerStopping, VerdictGiven
from ..core.verdict import Quarantine
from ..modules.upload.catalog import AVAILABLE, QUARANTINED
from .malware import RULE as MALWARE_RULE, ScannerUnavailable
from .quarantine import QuarantineError

if TYPE_CHECKING:
    from ..compliance.audit import AuditLog
    from ..core.bus import HookBus
    from ..modules.upload.catalog import Catalog, StoredFile
    from ..storage import Storage
    from .malware import MalwareScanner

log = logging.getLogger(__name__)

STORE = "upload_quarantine"


class FileQuarantine:
    """Lists held uploads and carries out a reviewer's decision (see the module docstring)."""

    def __init__(self, storage: Storage, catalog: Catalog, *, audit: AuditLog | None = None,
                 scanner: MalwareScanner | None = None, journal: Any = None, holds: Any = None) -> None:
        self.holds = holds              # compliance.holds.LegalHolds: a held uploader's files stay
        self.notes = storage.map(STORE)
        self.catalog = catalog
        self.audit = audit
        self.scanner = scanner          # None: [malware] is off
        self.journal = journal          # compliance.journal.Journal, or None when it is off
        self._busy: set[str] = set()    # ids with a decision under way
        self._pending: set[asyncio.Task[None]] = set()

    def subscribe(self, bus: HookBus) -> None:
        bus.on(VerdictGiven, self._verdict)
        bus.on(ServerStopping, self._stopping)

    async def _stopping(self, _event: ServerStopping) -> None:
        while self._pending:
            await asyncio.wait(set(self._pending))

    def _verdict(self, event: VerdictGiven) -> None:
        detail = event.detail or {}
        if isinstance(event.verdict, Quarantine) and event.stanza is None and detail.get("slot"):
            note = {"reason": event.verdict.reason, "signature": str(detail.get("signature") or "")}
            task = asyncio.ensure_future(self._note(event.host, str(detail["slot"]), note))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _note(self, host: str, file_id: str, note: dict[str, str] | None) -> None:
        try:
            await self.notes.set(host, "", file_id, note)
        except Exception:
            log.exception("could not keep why the upload %s of %s was held; the review lists it without", file_id,
                          host)

    # -- review -----------------------------------------------------------------------------------
    async def list(self, host: str) -> list[dict[str, Any]]:
        """The held files of `host`, oldest first."""
        await self.catalog.load()
        notes = await self.notes.get_all(host, "")
        out = []
        for item in self.catalog.stored.values():
            if item.host != host or item.status != QUARANTINED:
                continue
            note = notes.get(item.id) or {}
            out.append({"id": item.id, "uploader": f"{item.username}@{item.host}", "filename": item.filename,
                        "size": item.size, "content_type": item.content_type, "rule": item.rule,
                        "signature": note.get("signature", ""), "reason": note.get("reason", ""),
                        "ts": item.time})
        for stale in set(notes) - set(self.catalog.stored) - set(self.catalog.slots):
            await self._note(host, stale, None)         # the file was refused or removed since
        return sorted(out, key=lambda i: (i["ts"], i["id"]))

    def _held(self, host: str, file_id: str) -> StoredFile:
        item = self.catalog.stored.get(file_id)
        if item is None or item.host != host or item.status != QUARANTINED:
            raise QuarantineError(404, f"there is no quarantined file {file_id!r} on {host}; list them with "
                                       f"GET /hosts/{host}/quarantine/files")
        if file_id in self._busy:
            raise QuarantineError(409, f"the quarantined file {file_id!r} is being reviewed right now by another "
                                       "request; list the files again to see the outcome")
        return item

    async def release(self, host: str, file_id: str, *, actor: str, **detail: Any) -> StoredFile:
        """Make a file held by a type or size rule downloadable (never one with a malware finding)."""
        await self.catalog.load()
        item = self._held(host, file_id)
        self._busy.add(file_id)             # before the first await: one decision at a time
        try:
            self._refuse_malware(item, (await self.notes.get(host, "", file_id) or {}).get("signature", ""))
            await self._scan(item)
            await self._journal(item, actor)
            await self.catalog.set_status(item, AVAILABLE, item.rule)
        finally:
            self._busy.discard(file_id)
        await self._finish(item, actor, "quarantine.file.release", detail)
        return item

    @staticmethod
    def _refuse_malware(item: StoredFile, signature: str) -> None:
        if item.rule == MALWARE_RULE:
            found = f" ({signature})" if signature else ""
            raise QuarantineError(409, f"the file {item.filename!r} cannot be released: the malware scanner found "
                                       f"malware in it{found}, and a file with a malware finding is never made "
                                       "downloadable. Delete it (POST .../delete); the uploader can send a clean "
                                       "copy.")

    async def _scan(self, item: StoredFile) -> None:
        """Scan the bytes now when the scanner is on: the hold may have come before the scan."""
        scanner = self.scanner
        if scanner is None:
            return
        try:
            chunks = await self.catalog.files.open_for_read(item.id)
            try:
                signature = await scanner.client.scan(chunks)
            finally:
                await chunks.aclose()           # type: ignore[attr-defined]
        except ScannerUnavailable as exc:
            scanner.unavailable += 1
            log.error("the quarantined file %s stays held: %s", item.id, exc)
            raise QuarantineError(503, "the malware scanner is unavailable, and a file is released only once it "
                                       "was scanned; the file stays held. Try again later.") from None
        except OSError as exc:
            log.error("the quarantined file %s cannot be read for its scan: %s", item.id, exc)
            raise QuarantineError(503, "the stored file cannot be read right now (see the server log), so it "
                                       "stays held; try again later, or delete it") from None
        scanner.scanned += 1
        if signature is None:
            return
        scanner.infected += 1
        log.warning("the quarantined file %s (%r) of %s@%s contains %s: it stays held as malware", item.id,
                    item.filename, item.username, item.host, signature)
        await self.catalog.set_status(item, QUARANTINED, MALWARE_RULE)
        await self._note(item.host, item.id, {"reason": f"the malware scanner found {signature} in it",
                                              "signature": signature})
        self._refuse_malware(item, signature)

    async def _journal(self, item: StoredFile, actor: str) -> None:
        """Record the released file in the compliance journal before it can be downloaded."""
        journal = self.journal
        if journal is None:
            return
        uploader = f"{item.username}@{item.host}"
        commit = None if journal.is_failing else journal.record(
            item.host, "upload", uploader, None, detail={
                "file": {"id": item.id, "slot": item.id, "filename": item.filename, "size": item.size,
                         "content_type": item.content_type, "path": item.path, "uploader": uploader},
                "released_by": actor})
        if commit is None:
            raise QuarantineError(503, "the compliance journal cannot record files right now, so the file stays "
                                       "held; try again shortly")
        await commit

    async def delete(self, host: str, file_id: str, *, actor: str, **detail: Any) -> StoredFile:
        """Remove a held file: its bytes and its catalog record."""
        await self.catalog.load()
        item = self._held(host, file_id)
        if self.holds is not None and item.username in await self.holds.held_users(host):
            raise QuarantineError(409, f"{item.username}@{host} is under legal hold: their files are kept, "
                                       "quarantined files included (never served). Delete it once the hold "
                                       "is released.")
        self._busy.add(file_id)
        try:
            try:
                await self.catalog.remove(item)
            except OSError as exc:
                log.error("deleting the quarantined file %s failed: %s", file_id, exc)
                raise QuarantineError(503, "the stored file could not be deleted (see the server log); its "
                                           "record is gone and it is never served. Try again later.") from None
        finally:
            self._busy.discard(file_id)
        await self._finish(item, actor, "quarantine.file.delete", detail)
        return item

    async def _finish(self, item: StoredFile, actor: str, action: str, detail: dict[str, Any]) -> None:
        note = await self.notes.get(item.host, "", item.id) or {}
        await self._note(item.host, item.id, None)
        if self.audit is not None:
            await self.audit.record(item.host, actor, action, f"{item.username}@{item.host}", id=item.id,
                                    file=item.filename, size=item.size, type=item.content_type, rule=item.rule,
                                    signature=note.get("signature", ""), reason=note.get("reason", ""),
                                    held_at=item.time, **detail)
