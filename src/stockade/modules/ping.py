"""XEP-0199: XMPP Ping."""

from __future__ import annotations

from ..core.iq import ACCOUNT, HOST, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.xml import Element


def setup(module: ModuleAPI) -> None:
    module.add_feature(ns.PING)
    module.on_iq("get", ns.PING, "ping", handle_ping, target=HOST)
    module.on_iq("get", ns.PING, "ping", handle_ping, target=ACCOUNT)


async def handle_ping(request: IqRequest) -> Element:
    return request.result()
