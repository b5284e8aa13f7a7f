"""XEP-0398: User Avatar to vCard-Based Avatars Conversion, between XEP-0084 (the PEP nodes
'urn:xmpp:avatar:data' and 'urn:xmpp:avatar:metadata') and XEP-0153 (the vcard-temp PHOTO).

- PEP to vCard: when a client publishes avatar metadata, the image of its first <info/> without
  a 'url' is looked up in the data node, checked against its SHA-1 id, and written as the PHOTO
  of the user's vCard, through modules/vcard.py's VCardService (under its per-account lock).
  Metadata without any <info/> (avatar disabled) removes the PHOTO.
- vCard to PEP: when a client sets its vCard (the VCardStored hook), the PHOTO is published to the
  data node (item id = SHA-1 of the image) and then to the metadata node, which notifies the
  user's contacts, before the client's vCard set is answered.
- XEP-0153 in presence (XEP-0398 section 4): every available presence a client sends, broadcast or
  directed, carries <x xmlns='vcard-temp:x:update'><photo>hash</photo></x> with the hash of the
  vCard PHOTO (empty when there is none), unless the client put a <photo/> there itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import struct

from ...core.hooks import PresenceFromClient, ServerStopping, SessionClosed, VCardStored
from ...core.iq import ACCOUNT
from ...core.module_api import ModuleAPI
from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.jid import JID
from ...protocol.xml import Element
from ..vcard import VCardService
from .service import Change, PepService

NS_DATA = "urn:xmpp:avatar:data"
NS_METADATA = "urn:xmpp:avatar:metadata"
NS_UPDATE = "vcard-temp:x:update"
NS_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"

Photo = tuple[str, bytes]        # (content type, image bytes)


def decode_base64(text: str) -> bytes | None:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def photo_of(vcard: Element) -> Photo | None:
    photo = vcard.find("PHOTO", ns.VCARD)
    if photo is None:
        return None
    raw = decode_base64(photo.find_text("BINVAL", ns.VCARD) or "")
    if not raw:
        return None
    return (photo.find_text("TYPE", ns.VCARD) or "image/png").strip() or "image/png", raw


def image_size(raw: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG or GIF image, read from its header."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24:
        return struct.unpack(">II", raw[16:24])
    if raw[:6] in (b"GIF87a", b"GIF89a") and len(raw) >= 10:
        return struct.unpack("<HH", raw[6:10])
    return None


class AvatarConversion:
    def __init__(self, module: ModuleAPI, service: PepService) -> None:
        self.module = module
        self.service = service
        self.vcards = module.service(VCardService)
        self._hashes: dict[JID, str] = {}                        # SHA-1 of the vCard PHOTO, "" = none
        self._tasks: set[asyncio.Task[None]] = set()

    # -- PEP to vCard ---------------------------------------------------------------------------
    async def metadata_changed(self, change: Change) -> None:
        owner = change.owner
        if change.kind in ("purge", "delete"):
            await self._set_photo(owner, None)
            return
        if change.kind != "publish" or change.item is None:
            return
        metadata = change.item.payload
        if metadata.name != "metadata" or metadata.xmlns != NS_METADATA:
            return
        infos = list(metadata.elements("info", NS_METADATA))
        if not infos:
            await self._set_photo(owner, None)        # avatar disabled (XEP-0084 4.5)
            return
        hosted = [info for info in infos if not info.get("url")]
        if not hosted:
            return                                     # only external URLs: nothing to copy
        info = hosted[0]
        item_id = info.get("id") or ""
        node = await self.service.store.get(owner, NS_DATA)
        item = await self.service.store.item(owner, node, item_id) if node is not None else None
        if item is None:
            self.module.log.info("%s published avatar metadata for %r without its data; vCard unchanged",
                                 owner, item_id)
            return
        raw = decode_base64(item.payload.text)
        if not raw or hashlib.sha1(raw).hexdigest() != item_id.lower():
            self.module.log.info("%s's avatar data does not match its id %r; vCard unchanged", owner, item_id)
            return
        await self._set_photo(owner, ((info.get("type") or "image/png"), raw))

    async def _set_photo(self, owner: JID, photo: Photo | None) -> None:
        async with self.vcards.lock(owner):
            vcard = await self.vcards.get(owner) or Element("vCard", ns.VCARD)
            if photo is None and vcard.find("PHOTO", ns.VCARD) is None:
                self._hashes[owner] = ""
                return
            before = vcard.serialize("")
            vcard.remove_all("PHOTO", ns.VCARD)
            if photo is not None:
                el = vcard.add("PHOTO", ns.VCARD)
                el.add("TYPE", ns.VCARD, text=photo[0])
                el.add("BINVAL", ns.VCARD, text=base64.b64encode(photo[1]).decode())
            if vcard.serialize("") != before:
                try:
                    await self.vcards.put(owner, vcard, source="pep-avatar")
                except StanzaError:
                    self.module.log.info("%s's avatar does not fit in a vCard of %d bytes; vCard unchanged",
                                         owner, self.vcards.max_size)
                    return
        self._hashes[owner] = hashlib.sha1(photo[1]).hexdigest() if photo is not None else ""

    # -- vCard to PEP ---------------------------------------------------------------------------
    async def vcard_stored(self, event: VCardStored) -> None:
        if event.source == "pep-avatar":
            return None                 # our own conversion: nothing new for PEP
        photo = photo_of(event.vcard)
        self._hashes[event.owner] = hashlib.sha1(photo[1]).hexdigest() if photo is not None else ""
        await self._vcard_to_pep(event.owner, photo)
        return None

    async def _vcard_to_pep(self, owner: JID, photo: Photo | None) -> None:
        store = self.service.store
        try:
            node = await store.get(owner, NS_METADATA)
            last = await store.last_item(owner, node) if node is not None else None
            current = {i.get("id") for i in last.payload.elements("info", NS_METADATA)} if last is not None else set()
            if photo is None:
                if current:             # the PHOTO was removed: disable the PEP avatar too
                    await self.service.publish(owner, NS_METADATA, Element("metadata", NS_METADATA))
                return
            mime, raw = photo
            digest = hashlib.sha1(raw).hexdigest()
            if digest in current:
                return                  # the same image again: nothing to announce
            data = Element("data", NS_DATA)
            data.set_text(base64.b64encode(raw).decode())
            await self.service.publish(owner, NS_DATA, data, digest)
            metadata = Element("metadata", NS_METADATA)
            info = metadata.add("info", attrs={"bytes": str(len(raw)), "id": digest, "type": mime})
            size = image_size(raw)
            if size is not None:
                info.attrs["width"], info.attrs["height"] = str(size[0]), str(size[1])
            await self.service.publish(owner, NS_METADATA, metadata, digest)
        except StanzaError as exc:
            self.module.log.info("the vCard avatar of %s was not published to PEP: %s", owner, exc)
        except Exception:
            self.module.log.exception("publishing the vCard avatar of %s to PEP failed", owner)

    # -- XEP-0153 hash in presence --------------------------------------------------------------
    async def photo_hash(self, owner: JID) -> str:
        digest = self._hashes.get(owner)
        if digest is None:
            digest = ""
            vcard = await self.vcards.get(owner)
            photo = photo_of(vcard) if vcard is not None else None
            if photo is not None:
                digest = hashlib.sha1(photo[1]).hexdigest()
            self._hashes[owner] = digest
        return digest

    async def presence_from_client(self, event: PresenceFromClient) -> None:
        stanza = event.stanza
        if stanza.attrs.get("type") is not None:
            return None                 # available presence only
        x = stanza.find("x", NS_UPDATE)
        if x is not None and x.find("photo", NS_UPDATE) is not None:
            return None                 # the client said it itself (possibly "no avatar": <photo/>)
        digest = await self.photo_hash(event.session.bare)
        if x is None:
            x = stanza.add("x", NS_UPDATE)
        x.add("photo", NS_UPDATE, text=digest or None)
        return None

    async def session_closed(self, event: SessionClosed) -> None:
        if not self.module.sessions.is_online(event.session.bare):
            self._hashes.pop(event.session.bare, None)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def setup(module: ModuleAPI, service: PepService, presence_priority: int) -> None:
    conversion = AvatarConversion(module, service)
    service.watch(NS_METADATA, conversion.metadata_changed)
    module.on(VCardStored, conversion.vcard_stored)
    module.on(PresenceFromClient, conversion.presence_from_client, presence_priority)
    module.on(SessionClosed, conversion.session_closed, presence_priority)

    async def stopping(event: ServerStopping) -> None:
        conversion.stop()

    module.on(ServerStopping, stopping)
    module.add_feature(NS_CONVERSION, target=ACCOUNT)
