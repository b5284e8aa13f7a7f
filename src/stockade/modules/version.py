"""XEP-0092: Software Version (the server's; hideable with server.hide_version)."""

from __future__ import annotations

import platform

from ..core.iq import HOST, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.xml import Element


def setup(module: ModuleAPI) -> None:
    hide = module.ctx.config.server.hide_version
    version = module.ctx.version

    async def handle_version(request: IqRequest) -> Element:
        query = Element("query", ns.VERSION)
        query.add("name", text="Stockade")
        if not hide:
            query.add("version", text=version)
            query.add("os", text=f"{platform.system()} {platform.release()}")
        return request.result(query)

    module.add_feature(ns.VERSION)
    module.on_iq("get", ns.VERSION, "query", handle_version, target=HOST)
