"""The upload service on upload.<domain>: discovery and slot requests (XEP-0363 sections 3-5).

The router hands this service every stanza addressed to its domain, with a trusted 'from'
(`send`, synchronous, must not block); each is answered in a task of its own.

    disco#info      identity store/file, feature urn:xmpp:http:upload:0 and the XEP-0128 form
                    with max-file-size, so that clients know the limit before asking
    disco#items     empty
    <request/>      a slot (<put/> and <get/> URL) for a user of this domain, or an error that
                    says what to change: file-too-large with max-file-size, a type that is not
                    accepted, a quota that is used up
    other IQs       <service-unavailable/>; messages are bounced; presence is ignored

Only users of the service's own domain get slots: every domain is a tenant with its own quota,
retention and, later, its own policy, so one tenant's users never store files on another's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING
from urllib.parse import quote

from ...protocol import ns
from ...protocol.errors import StanzaError, error_reply
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from .catalog import Catalog, Slot
from .checks import check_filename, is_allowed, parse_content_type

if TYPE_CHECKING:
    from ...core.module_api import ModuleAPI
    from . import Options

log = logging.getLogger(__name__)

NS_UPLOAD = "urn:xmpp:http:upload:0"
HTTP_PATH = "/upload"
NAME = "HTTP File Upload"


def slot_path(slot_id: str, filename: str) -> str:
    return f"{HTTP_PATH}/{slot_id}/{quote(filename, safe='')}"


class UploadService:
    def __init__(self, module: ModuleAPI, domain: str, host: str, options: Options, catalog: Catalog) -> None:
        self.module = module
        self.domain = domain            # upload.example.com
        self.host = host                # example.com, whose users this service serves
        self.options = options
        self.catalog = catalog
        self._tasks: set[asyncio.Task[None]] = set()

    # -- entry from the router ------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        """Take a stanza addressed to this service (called by the router)."""
        if stanza.name == "presence":
            return                      # nothing to subscribe to, nobody to be available for
        task = asyncio.get_running_loop().create_task(self._handle(stanza), name=f"upload {self.domain}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, stanza: Element) -> None:
        try:
            reply = await self._answer(stanza)
        except StanzaError as exc:
            reply = self._refusal(stanza, exc)
        except Exception:
            log.exception("the upload service failed on %r", stanza)
            reply = self._refusal(stanza, StanzaError("internal-server-error",
                                                      "the upload service failed to handle this request"))
        if reply is not None:
            pending = self.module.send(reply)
            if pending is not None:
                await pending

    @staticmethod
    def _refusal(stanza: Element, error: StanzaError) -> Element | None:
        if stanza.get("type") == "error" or not stanza.get("from"):
            return None                 # errors are never answered with errors
        if stanza.name == "iq" and stanza.get("type") not in ("get", "set"):
            return None
        return error_reply(stanza, error)

    async def _answer(self, stanza: Element) -> Element | None:
        sender = try_jid(stanza.get("from"))
        to = try_jid(stanza.get("to"))
        if sender is None or to is None:
            return None
        if stanza.name == "message":
            if stanza.get("type") in ("error", "groupchat", "headline"):
                return None
            raise StanzaError("service-unavailable", f"{self.domain} hands out upload slots and takes no messages")
        if stanza.name != "iq" or stanza.get("type") not in ("get", "set"):
            return None                 # results and errors: the service asks nothing
        children = list(stanza.elements())
        payload = children[0] if len(children) == 1 else None
        if to.local is not None or to.resource is not None or payload is None:
            raise StanzaError("service-unavailable", "the upload service does not answer this request")
        key = (stanza.get("type"), payload.xmlns, payload.name)
        if key == ("get", ns.DISCO_INFO, "query"):
            if payload.get("node"):
                raise StanzaError("item-not-found", "the upload service has no disco nodes")
            return iq_result(stanza, self.info())
        if key == ("get", ns.DISCO_ITEMS, "query"):
            if payload.get("node"):
                raise StanzaError("item-not-found", "the upload service has no disco nodes")
            return iq_result(stanza, Element("query", ns.DISCO_ITEMS))
        if key == ("get", NS_UPLOAD, "request"):
            return iq_result(stanza, await self.request_slot(sender, payload))
        raise StanzaError("service-unavailable", "the upload service does not answer this request")

    # -- discovery ------------------------------------------------------------------------------
    def info(self) -> Element:
        query = Element("query", ns.DISCO_INFO)
        query.add("identity", attrs={"category": "store", "type": "file", "name": NAME})
        for var in (ns.DISCO_INFO, ns.DISCO_ITEMS, NS_UPLOAD):
            query.add("feature", attrs={"var": var})
        form = query.add("x", ns.DATA_FORMS, {"type": "result"})
        form.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).add("value", text=NS_UPLOAD)
        form.add("field", attrs={"var": "max-file-size"}).add("value", text=str(self.options.max_file_size))
        return query

    # -- slots ----------------------------------------------------------------------------------
    async def request_slot(self, sender: JID, request: Element) -> Element:
        if sender.local is None or sender.domain != self.host:
            if sender.local is not None and sender.domain in self.module.ctx.domains:
                hint = f"; users of {sender.domain} upload to {self.options.subdomain}.{sender.domain}"
            else:
                hint = ""
            raise StanzaError("forbidden", f"only users of {self.host} may upload files here{hint}")
        permissions = self.module.ctx.permissions         # policy/permissions.py: "upload"
        denial = permissions.refuse(self.host, sender.local, "upload") if permissions is not None else None
        if denial is not None:
            raise denial.error()
        filename, size, content_type = self._parse(request)
        options = self.options
        if size > options.max_file_size:
            too_large = Element("file-too-large", NS_UPLOAD)
            too_large.add("max-file-size", text=str(options.max_file_size))
            raise StanzaError("not-acceptable", f"the file is too large: {size} bytes; "
                              f"the largest file accepted is {options.max_file_size} bytes",
                              app_condition=too_large)
        if not is_allowed(content_type, options.allowed_content_types):
            raise StanzaError("not-acceptable", f"files of type {content_type} are not accepted here; accepted "
                              f"types: {', '.join(options.allowed_content_types)}")
        await self.catalog.load()
        clock = self.module.clock
        now = clock.monotonic()
        # No await from the quota check to the reservation: two requests at once cannot both
        # fit into the space that is left for one.
        used = self.catalog.usage(self.host, sender.local, now)
        if options.quota and used + size > options.quota:
            raise StanzaError("resource-constraint",
                              f"your upload quota is used up: you have {used} of {options.quota} bytes "
                              f"(files and pending uploads), and this file needs {size} more; "
                              "delete files or ask an administrator", type_="wait")
        slot = Slot(id=secrets.token_urlsafe(32), host=self.host, username=sender.local, filename=filename,
                    size=size, content_type=content_type, expires=now + options.slot_lifetime)
        self.catalog.open_slot(slot)
        url = self.module.ctx.http.base_url(self.host) + slot_path(slot.id, filename)
        reply = Element("slot", NS_UPLOAD)
        reply.add("put", attrs={"url": url})
        reply.add("get", attrs={"url": url})
        return reply

    @staticmethod
    def _parse(request: Element) -> tuple[str, int, str]:
        filename, size_text = request.get("filename"), request.get("size")
        if filename is None or size_text is None:
            raise StanzaError("bad-request", "a slot request needs the attributes filename and size")
        if not size_text.isascii() or not size_text.isdigit() or len(size_text) > 18:
            raise StanzaError("bad-request", f"size must be the file's length in bytes, a whole number, not {size_text[:40]!r}")
        size = int(size_text)
        if size == 0:
            raise StanzaError("bad-request", "the file is empty; there is nothing to upload")
        try:
            check_filename(filename)
        except ValueError as exc:
            raise StanzaError("not-acceptable", str(exc)) from None
        try:
            content_type = parse_content_type(request.get("content-type"))
        except ValueError as exc:
            raise StanzaError("bad-request", str(exc)) from None
        return filename, size, content_type


def iq_result(request: Element, payload: Element | None = None) -> Element:
    attrs = {"type": "result", "from": request.get("to") or "", "to": request.get("from") or ""}
    if "id" in request.attrs:
        attrs["id"] = request.attrs["id"]
    out = Element("iq", ns.CLIENT, attrs)
    if payload is not None:
        out.append(payload)
    return out
