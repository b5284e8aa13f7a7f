"""XEP-0363: HTTP File Upload.

Files go through the server, never peer to peer: a user asks the upload service of their domain
(upload.example.com, an in-process component listed in the domain's disco#items) for a slot,
PUTs the file to the secret URL it gets on the server's HTTPS listener, and sends that URL to
whoever should download it. Every upload passes the UploadReceived hook before anyone can
download it: malware scanning and encryption at rest sit there.

Where things are:
    checks.py    what a file may be called and claim to be; inline or attachment on download
    files.py     the bytes on disk (FileStore: write, read, delete), replaceable by an encrypting store
    catalog.py   slots in memory, file records in the "uploads" map store, quota per user, expiry
    service.py   the XMPP side: disco and slot requests on upload.<domain>
    http.py      the HTTPS side: PUT, GET/HEAD, CORS preflight
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ...config.options import option
from ...core.hooks import AccountRemoved, ServerStopping
from ...core.module_api import ModuleAPI
from ...protocol.jid import InvalidJid, normalise_domain
from .catalog import Catalog
from .checks import check_pattern
from .files import FileStore
from .http import UploadHttp
from .service import HTTP_PATH, NAME, UploadService

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def _check_subdomain(value: str) -> str | None:
    if not value or "." in value:
        return "give one DNS label, like upload (the service is <label>.<domain>)"
    try:
        normalise_domain(value + ".example.com")
    except InvalidJid as exc:
        return str(exc)
    return None if value == value.lower() else "write the label in lower case"


def _check_patterns(patterns: list[str]) -> str | None:
    for pattern in patterns:
        problem = check_pattern(pattern)
        if problem:
            return problem
    return None


@dataclass(frozen=True)
class Options:
    subdomain: str = option("upload", help="The upload service of each served domain is <subdomain>.<domain>.",
                            check=_check_subdomain)
    max_file_size: int = option(100 * MIB, help="Largest file accepted, in bytes; announced in disco#info "
                                                "(max-file-size) and refused at the slot request with <file-too-large/>.",
                                min=1, max=1 << 40)
    quota: int = option(1024 * MIB, help="Bytes one user may keep stored (files not yet expired, plus slots not "
                                         "yet used); 0: no limit.", min=0, max=1 << 50)
    allowed_content_types: list[str] = option(
        help="Media types accepted, like image/png or image/*. Empty: any type (files that browsers could run "
             "are always served as downloads).", factory=list, check=_check_patterns)
    slot_lifetime: int = option(300, help="Seconds a slot's PUT URL stays valid after it was handed out.",
                                min=10, max=86400)
    file_expiry_days: int = option(0, help="Days an uploaded file is kept before it is deleted; 0: keep files "
                                           "until their owner's account is removed.", min=0, max=36500)
    purge_interval: int = option(3600, help="Seconds between two sweeps that delete expired files and forget "
                                            "expired slots.", min=1, max=86400)


def setup(module: ModuleAPI) -> None:
    options: Options = module.options
    ctx = module.ctx
    if not ctx.config.http.enabled:
        log.info("HTTP file upload is off: it needs the HTTPS listener (http.enabled)")
        return
    files = FileStore(ctx.data_dir / "uploads", ctx.storage.cipher)      # sealed at rest (storage/crypto.py)
    catalog = Catalog(module.open_store("uploads", "map"), files, set(ctx.domains))
    module.provide(catalog)
    for host in sorted(ctx.domains):
        domain = f"{options.subdomain}.{host}"
        module.router.components[domain] = UploadService(module, domain, host, options, catalog)
        module.add_disco_item(host, domain, NAME)
    http = UploadHttp(module, options, catalog, files)
    ctx.http.add_route(HTTP_PATH + "/{slot_id}/{filename}", http.endpoint, ["GET", "HEAD", "PUT", "OPTIONS"])

    async def account_removed(event: AccountRemoved) -> None:
        removed = await catalog.remove_user(event.host, event.username)
        if removed:
            log.info("deleted %d uploaded files of %s@%s (account removed)", removed, event.username, event.host)

    async def purge_now() -> int:
        # Files of users under a legal hold are kept whatever their age (compliance/holds.py).
        from ...compliance.holds import LegalHolds
        holds = ctx.services.get(LegalHolds)
        held: set[tuple[str, str]] = set()
        if holds is not None and options.file_expiry_days:
            for host in sorted(ctx.domains):
                held.update((host, user) for user in await holds.held_users(host))
        return await catalog.purge(module.clock.time(), module.clock.monotonic(), options.file_expiry_days * 86400,
                                   held)

    async def purge_periodically() -> None:
        while True:
            try:
                removed = await purge_now()
                if removed:
                    log.info("deleted %d expired uploaded files", removed)
            except Exception:
                log.exception("deleting expired uploads failed; trying again in %d s", options.purge_interval)
            await asyncio.sleep(options.purge_interval)

    sweeper = asyncio.get_running_loop().create_task(purge_periodically(), name="upload purge")

    async def stopping(event: ServerStopping) -> None:
        sweeper.cancel()

    module.on(AccountRemoved, account_removed)
    module.on(ServerStopping, stopping)
