"""XEP-0054: vcard-temp. A user sets their own vCard; anyone may read it."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.options import option
from ..core.iq import ACCOUNT, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.errors import StanzaError
from ..protocol.xml import Element, parse


@dataclass(frozen=True)
class Options:
    max_size: int = option(256 * 1024, help="Largest vCard accepted, in bytes (photos included).", min=1024, max=16 * 1024 * 1024)


def setup(module: ModuleAPI) -> None:
    store = module.open_store("vcard", "keyval")
    max_size = module.options.max_size

    async def get_vcard(request: IqRequest) -> Element:
        owner = request.target
        stored = await store.get(owner.domain, owner.local)
        if stored is None:
            if request.is_own_account:
                return request.result(Element("vCard", ns.VCARD))
            raise StanzaError("item-not-found", "this user has no vCard")
        return request.result(parse(stored))

    async def set_vcard(request: IqRequest) -> Element:
        if not request.is_own_account:
            raise StanzaError("forbidden", "you can only change your own vCard")
        data = request.payload.serialize("")
        if len(data) > max_size:
            raise StanzaError("not-acceptable", f"the vCard is larger than {max_size} bytes")
        owner = request.target
        await store.set(owner.domain, owner.local, data.decode())
        return request.result()

    module.add_feature(ns.VCARD)
    module.on_iq("get", ns.VCARD, "vCard", get_vcard, target=ACCOUNT)
    module.on_iq("set", ns.VCARD, "vCard", set_vcard, target=ACCOUNT)
