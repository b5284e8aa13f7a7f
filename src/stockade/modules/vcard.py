"""XEP-0054: vcard-temp. A user sets their own vCard; anyone may read it.

Other modules read and change vCards through `VCardService` (one lock per account, so that two
writers never lose each other's change) and learn about new ones from the `VCardStored` hook
(the XEP-0398 avatar conversion does both).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..config.options import option
from ..core.hooks import ServerStarted, VCardStored
from ..core.iq import ACCOUNT, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.errors import StanzaError
from ..protocol.jid import JID
from ..protocol.xml import Element, XmlError, parse


@dataclass(frozen=True)
class Options:
    max_size: int = option(256 * 1024, help="Largest vCard accepted, in bytes (photos included).", min=1024, max=16 * 1024 * 1024)


class VCardService:
    def __init__(self, module: ModuleAPI) -> None:
        self.module = module
        self.store = module.open_store("vcard", "keyval")
        self.max_size = module.options.max_size
        self._locks: dict[JID, asyncio.Lock] = {}

    def lock(self, owner: JID) -> asyncio.Lock:
        """Held around a read-modify-write of one account's vCard."""
        lock = self._locks.get(owner)
        if lock is None:
            lock = self._locks[owner] = asyncio.Lock()
        return lock

    async def get(self, owner: JID) -> Element | None:
        stored = await self.store.get(owner.domain, owner.local)
        if stored is None:
            return None
        try:
            return parse(stored)
        except XmlError:
            self.module.log.error("the stored vCard of %s cannot be read", owner)
            return None

    async def put(self, owner: JID, vcard: Element, *, source: str = "client") -> None:
        """Store a vCard (the caller holds the lock) and tell the VCardStored handlers.
        Raises StanzaError when it is too large."""
        data = vcard.serialize("")
        if len(data) > self.max_size:
            raise StanzaError("not-acceptable", f"the vCard is larger than {self.max_size} bytes")
        await self.store.set(owner.domain, owner.local, data.decode())
        await self.module.ctx.bus.fire_async(VCardStored(owner, vcard, source))


def setup(module: ModuleAPI) -> None:
    vcards = VCardService(module)
    module.provide(vcards)

    async def get_vcard(request: IqRequest) -> Element:
        stored = await vcards.get(request.target)
        if stored is None:
            if request.is_own_account:
                return request.result(Element("vCard", ns.VCARD))
            raise StanzaError("item-not-found", "this user has no vCard")
        return request.result(stored)

    async def set_vcard(request: IqRequest) -> Element:
        if not request.is_own_account:
            raise StanzaError("forbidden", "you can only change your own vCard")
        owner = request.target
        async with vcards.lock(owner):
            await vcards.put(owner, request.payload.copy())
        return request.result()

    module.add_feature(ns.VCARD)
    module.on_iq("get", ns.VCARD, "vCard", get_vcard, target=ACCOUNT)
    module.on_iq("set", ns.VCARD, "vCard", set_vcard, target=ACCOUNT)

    async def started(_: ServerStarted) -> None:
        await vcards.store.track_holders()   # the avatar hash at login reads only existing vCards
    module.on(ServerStarted, started)
