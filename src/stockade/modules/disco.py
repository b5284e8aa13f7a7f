"""XEP-0030: Service Discovery, for the server and on behalf of accounts."""

from __future__ import annotations

from ..core.iq import ACCOUNT, HOST, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.errors import StanzaError
from ..protocol.xml import Element
from .roster import RosterService


def setup(module: ModuleAPI) -> None:
    disco = module.ctx.disco
    roster = module.service(RosterService)
    module.add_feature(ns.DISCO_INFO)
    module.add_feature(ns.DISCO_ITEMS)
    module.add_identity("server", "im", "Stockade")
    module.add_feature(ns.DISCO_INFO, target=ACCOUNT)
    module.add_feature(ns.DISCO_ITEMS, target=ACCOUNT)
    module.add_identity("account", "registered", "", target=ACCOUNT)
    components = [c.domain for c in module.ctx.config.components]

    def info(kind: str, node: str | None = None) -> Element:
        query = Element("query", ns.DISCO_INFO, {"node": node} if node else None)
        for category, type_, name in disco.identities[kind]:
            attrs = {"category": category, "type": type_}
            if name:
                attrs["name"] = name
            query.add("identity", attrs=attrs)
        for var in sorted(disco.features[kind]):
            query.add("feature", attrs={"var": var})
        return query

    async def host_info(request: IqRequest) -> Element:
        node = request.payload.get("node")
        if node and node in disco.host_nodes:
            return request.result(disco.host_nodes[node](request, "info"))
        if node and node not in disco.info_nodes[HOST]:
            raise StanzaError("item-not-found", "no such node")
        return request.result(info(HOST, node))

    async def host_items(request: IqRequest) -> Element:
        node = request.payload.get("node")
        if node and node in disco.host_nodes:
            return request.result(disco.host_nodes[node](request, "items"))
        query = Element("query", ns.DISCO_ITEMS)
        if not node:
            for domain in components:
                if domain.endswith("." + request.host):
                    query.add("item", attrs={"jid": domain})
            for jid, name in disco.items.get(request.host, ()):
                query.add("item", attrs={"jid": jid, "name": name} if name else {"jid": jid})
        return request.result(query)

    async def account_info(request: IqRequest) -> Element:
        # Only the owner and the contacts it shares presence with learn what the account is.
        if not request.is_own_account and not await roster.shares_presence_with(request.target, request.sender.bare):
            raise StanzaError("service-unavailable")
        if request.payload.get("node"):
            raise StanzaError("item-not-found", "no such node")
        return request.result(info(ACCOUNT))

    async def account_items(request: IqRequest) -> Element:
        if not request.is_own_account and not await roster.shares_presence_with(request.target, request.sender.bare):
            raise StanzaError("service-unavailable")
        return request.result(Element("query", ns.DISCO_ITEMS))

    module.on_iq("get", ns.DISCO_INFO, "query", host_info, target=HOST)
    module.on_iq("get", ns.DISCO_ITEMS, "query", host_items, target=HOST)
    module.on_iq("get", ns.DISCO_INFO, "query", account_info, target=ACCOUNT)
    module.on_iq("get", ns.DISCO_ITEMS, "query", account_items, target=ACCOUNT)
