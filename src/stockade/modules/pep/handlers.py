"""The pubsub IQ requests a PEP service answers (XEP-0060 sections 6 to 8, as profiled by
XEP-0163), addressed to an account's bare JID (or to no one: the sender's own account).

    <pubsub xmlns='...pubsub'>        publish (+ publish-options), retract, items, subscribe,
                                      unsubscribe, subscriptions, affiliations, create (+ configure)
    <pubsub xmlns='...pubsub#owner'>  configure, default, delete, purge, affiliations

Only the account itself publishes, retracts and manages its nodes; anyone may read or subscribe
as the node's access model allows. Each handler parses the request, calls PepService and builds
the answer; errors are StanzaErrors with the pubsub-specific conditions.
"""

from __future__ import annotations

from ...core.iq import ACCOUNT, IqRequest
from ...core.module_api import ModuleAPI
from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from .config import (FORM_NODE_CONFIG, FORM_PUBLISH_OPTIONS, NS_OWNER, NS_PUBSUB, ConfigChange, check_node_name,
                     config_form, pubsub_error)
from .forms import parse_bool, read_submission
from .service import Change, PepService
from .store import Item


def _only_owner(request: IqRequest, what: str) -> None:
    if not request.is_own_account:
        raise StanzaError("forbidden", f"only {request.target} can {what} these PEP nodes")


def _form(parent: Element | None, form_type: str, max_items: int, *,
          is_precondition: bool = False) -> ConfigChange | None:
    """The configuration change in `parent`'s data form, or None when there is none."""
    if parent is None:
        return None
    x = parent.find("x", ns.DATA_FORMS)
    if x is None:
        return None
    form = read_submission(x)
    if form.type == "cancel":
        return None
    if form.type not in ("submit", "form"):
        raise StanzaError("bad-request", f"a submitted form has type 'submit', not {form.type!r}")
    if form.form_type is not None and form.form_type != form_type:
        raise StanzaError("bad-request", f"expected a {form_type} form, got {form.form_type}")
    return ConfigChange.parse(form, max_items, is_precondition=is_precondition)


def _item_element(item: Item) -> Element:
    el = Element("item", NS_PUBSUB, {"id": item.id})
    el.append(item.payload.copy())
    return el


class PubsubHandlers:
    def __init__(self, service: PepService) -> None:
        self.service = service
        self.max_items = service.limits.max_items

    # -- dispatch -------------------------------------------------------------------------------
    async def pubsub_set(self, request: IqRequest) -> Element:
        first = request.payload.first_element()
        name = first.name if first is not None and first.xmlns == NS_PUBSUB else None
        if name == "publish":
            return await self.publish(request, first)
        if name == "retract":
            return await self.retract(request, first)
        if name == "subscribe":
            return await self.subscribe(request, first)
        if name == "unsubscribe":
            return await self.unsubscribe(request, first)
        if name == "create":
            return await self.create(request, first)
        if name == "options":
            raise pubsub_error("feature-not-implemented", "unsupported", "subscription options are not supported",
                               feature="subscription-options")
        raise StanzaError("bad-request", f"unknown pubsub request <{name or '?'}/>")

    async def pubsub_get(self, request: IqRequest) -> Element:
        first = request.payload.first_element()
        name = first.name if first is not None and first.xmlns == NS_PUBSUB else None
        if name == "items":
            return await self.items(request, first)
        if name == "subscriptions":
            return await self.subscriptions(request, first)
        if name == "affiliations":
            return await self.affiliations(request, first)
        if name == "options":
            raise pubsub_error("feature-not-implemented", "unsupported", "subscription options are not supported",
                               feature="subscription-options")
        raise StanzaError("bad-request", f"unknown pubsub request <{name or '?'}/>")

    async def owner_get(self, request: IqRequest) -> Element:
        first = request.payload.first_element()
        name = first.name if first is not None and first.xmlns == NS_OWNER else None
        if name == "configure":
            return await self.get_configuration(request, first)
        if name == "default":
            return self._owner_result(request, Element("default", NS_OWNER, children=[
                config_form(self.service.default_config(first.get("node") or ""))]))
        if name == "affiliations":
            return await self.node_affiliations(request, first)
        raise StanzaError("feature-not-implemented", f"<{name or '?'}/> is not supported by this PEP service")

    async def owner_set(self, request: IqRequest) -> Element:
        first = request.payload.first_element()
        name = first.name if first is not None and first.xmlns == NS_OWNER else None
        if name == "configure":
            return await self.set_configuration(request, first)
        if name == "delete":
            _only_owner(request, "delete")
            node = check_node_name(first.get("node"))
            await self.service.delete(request.target, node)
            await self.service.changed(Change(request.target, node, "delete"))
            return request.result()
        if name == "purge":
            _only_owner(request, "purge")
            node = check_node_name(first.get("node"))
            await self.service.purge(request.target, node)
            await self.service.changed(Change(request.target, node, "purge"))
            return request.result()
        if name == "affiliations":
            return await self.set_node_affiliations(request, first)
        raise StanzaError("feature-not-implemented", f"<{name or '?'}/> is not supported by this PEP service")

    # -- publisher use cases --------------------------------------------------------------------
    async def publish(self, request: IqRequest, publish: Element) -> Element:
        _only_owner(request, "publish to")
        node_name = check_node_name(publish.get("node"))
        items = list(publish.elements("item", NS_PUBSUB))
        if not items:
            raise pubsub_error("bad-request", "item-required", "PEP nodes keep items: publish one <item/>")
        if len(items) > 1:
            raise pubsub_error("bad-request", "invalid-payload", "publish one item per request")
        payloads = list(items[0].elements())
        if not payloads:
            raise pubsub_error("bad-request", "payload-required", "the item needs a payload element")
        if len(payloads) > 1:
            raise pubsub_error("bad-request", "invalid-payload", "an item carries exactly one payload element")
        options = _form(request.payload.find("publish-options", NS_PUBSUB), FORM_PUBLISH_OPTIONS,
                        self.max_items, is_precondition=True)
        _node, item = await self.service.publish(request.target, node_name, payloads[0].copy(),
                                                 items[0].get("id"), options)
        await self.service.changed(Change(request.target, node_name, "publish", item=item))
        result = Element("pubsub", NS_PUBSUB)
        result.add("publish", attrs={"node": node_name}).add("item", attrs={"id": item.id})
        return request.result(result)

    async def retract(self, request: IqRequest, retract: Element) -> Element:
        _only_owner(request, "retract items from")
        node_name = check_node_name(retract.get("node"))
        ids = [item.get("id") for item in retract.elements("item", NS_PUBSUB)]
        if not ids or any(not i for i in ids):
            raise pubsub_error("bad-request", "item-required", "name the item to retract: <item id='...'/>")
        notify_attr = retract.get("notify")
        notify = parse_bool("notify", notify_attr) if notify_attr is not None else None
        await self.service.retract(request.target, node_name, ids, notify)  # type: ignore[arg-type]
        await self.service.changed(Change(request.target, node_name, "retract", item_ids=ids))  # type: ignore[arg-type]
        return request.result()

    async def create(self, request: IqRequest, create: Element) -> Element:
        _only_owner(request, "create")
        node_name = create.get("node")
        if not node_name:
            raise pubsub_error("not-acceptable", "nodeid-required", "PEP nodes need a name (no instant nodes)")
        check_node_name(node_name)
        configure = request.payload.find("configure", NS_PUBSUB)
        if configure is not None and configure.get("node"):
            raise StanzaError("bad-request", "<configure/> of a create request has no 'node'")
        change = _form(configure, FORM_NODE_CONFIG, self.max_items)
        await self.service.create(request.target, node_name, change)
        return request.result()

    # -- subscriber use cases -------------------------------------------------------------------
    async def items(self, request: IqRequest, items: Element) -> Element:
        node_name = check_node_name(items.get("node"))
        max_items = None
        if items.get("max_items") is not None:
            try:
                max_items = int(items.get("max_items") or "")
            except ValueError:
                max_items = 0
            if max_items < 1:
                raise StanzaError("bad-request", "max_items is a positive number")
        ids = [i.get("id") for i in items.elements("item", NS_PUBSUB)]
        if any(not i for i in ids):
            raise StanzaError("bad-request", "each requested <item/> needs an 'id'")
        _node, found = await self.service.items(request.target, node_name, request.sender,
                                                ids or None, max_items)  # type: ignore[arg-type]
        result = Element("pubsub", NS_PUBSUB)
        out = result.add("items", attrs={"node": node_name})
        for item in found:
            out.append(_item_element(item))
        return request.result(result)

    def _subscriber_jid(self, request: IqRequest, el: Element) -> JID:
        jid = try_jid(el.get("jid"))
        if jid is None:
            raise pubsub_error("bad-request", "invalid-jid", "the request needs a valid 'jid'")
        return jid

    async def subscribe(self, request: IqRequest, subscribe: Element) -> Element:
        node_name = check_node_name(subscribe.get("node"))
        jid = self._subscriber_jid(request, subscribe)
        options = request.payload.find("options", NS_PUBSUB)
        if options is not None and options.find("x", ns.DATA_FORMS) is not None:
            raise pubsub_error("feature-not-implemented", "unsupported", "subscription options are not supported",
                               feature="subscription-options")
        await self.service.subscribe(request.target, node_name, request.sender, jid)
        result = Element("pubsub", NS_PUBSUB)
        result.add("subscription", attrs={"node": node_name, "jid": str(jid), "subscription": "subscribed"})
        return request.result(result)

    async def unsubscribe(self, request: IqRequest, unsubscribe: Element) -> Element:
        node_name = check_node_name(unsubscribe.get("node"))
        jid = self._subscriber_jid(request, unsubscribe)
        await self.service.unsubscribe(request.target, node_name, request.sender, jid)
        return request.result()

    async def subscriptions(self, request: IqRequest, subscriptions: Element) -> Element:
        node_name = subscriptions.get("node")
        found = await self.service.subscriptions_of(request.target, request.sender, node_name)
        result = Element("pubsub", NS_PUBSUB)
        out = result.add("subscriptions", attrs={"node": node_name} if node_name else None)
        for node, jid in found:
            out.add("subscription", attrs={"node": node, "jid": jid, "subscription": "subscribed"})
        return request.result(result)

    async def affiliations(self, request: IqRequest, affiliations: Element) -> Element:
        node_name = affiliations.get("node")
        found = await self.service.affiliations_of(request.target, request.sender, node_name)
        result = Element("pubsub", NS_PUBSUB)
        out = result.add("affiliations", attrs={"node": node_name} if node_name else None)
        for node, affiliation in found:
            out.add("affiliation", attrs={"node": node, "affiliation": affiliation})
        return request.result(result)

    # -- owner use cases ------------------------------------------------------------------------
    def _owner_result(self, request: IqRequest, child: Element) -> Element:
        result = Element("pubsub", NS_OWNER)
        result.append(child)
        return request.result(result)

    async def get_configuration(self, request: IqRequest, configure: Element) -> Element:
        _only_owner(request, "configure")
        node = await self.service.node(request.target, check_node_name(configure.get("node")))
        out = Element("configure", NS_OWNER, {"node": node.name})
        out.append(config_form(node.config))
        return self._owner_result(request, out)

    async def set_configuration(self, request: IqRequest, configure: Element) -> Element:
        _only_owner(request, "configure")
        node_name = check_node_name(configure.get("node"))
        if configure.find("x", ns.DATA_FORMS) is None:
            raise StanzaError("bad-request", "submit the configuration as a data form")
        change = _form(configure, FORM_NODE_CONFIG, self.max_items)
        if change is None:                     # the owner cancelled (8.2.4)
            await self.service.node(request.target, node_name)
            return request.result()
        await self.service.configure(request.target, node_name, change)
        return request.result()

    async def node_affiliations(self, request: IqRequest, affiliations: Element) -> Element:
        _only_owner(request, "manage affiliations of")
        node = await self.service.node(request.target, check_node_name(affiliations.get("node")))
        out = Element("affiliations", NS_OWNER, {"node": node.name})
        out.add("affiliation", attrs={"jid": str(request.target), "affiliation": "owner"})
        for jid, affiliation in sorted(node.affiliations.items()):
            out.add("affiliation", attrs={"jid": jid, "affiliation": affiliation})
        return self._owner_result(request, out)

    async def set_node_affiliations(self, request: IqRequest, affiliations: Element) -> Element:
        _only_owner(request, "manage affiliations of")
        node_name = check_node_name(affiliations.get("node"))
        changes = []
        for el in affiliations.elements("affiliation", NS_OWNER):
            jid = try_jid(el.get("jid"))
            if jid is None:
                raise StanzaError("jid-malformed", f"{el.get('jid')!r} is not a valid JID")
            changes.append((jid, el.get("affiliation") or ""))
        if not changes:
            raise StanzaError("bad-request", "list the affiliations to change")
        await self.service.set_affiliations(request.target, node_name, changes)
        return request.result()


def register(module: ModuleAPI, service: PepService) -> None:
    handlers = PubsubHandlers(service)
    module.on_iq("set", NS_PUBSUB, "pubsub", handlers.pubsub_set, target=ACCOUNT)
    module.on_iq("get", NS_PUBSUB, "pubsub", handlers.pubsub_get, target=ACCOUNT)
    module.on_iq("get", NS_OWNER, "pubsub", handlers.owner_get, target=ACCOUNT)
    module.on_iq("set", NS_OWNER, "pubsub", handlers.owner_set, target=ACCOUNT)
