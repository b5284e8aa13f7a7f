"""Node configuration (XEP-0060 section 16.4, pubsub#node_config) with the PEP defaults of
XEP-0163 section 7, publish-options preconditions (XEP-0060 section 7.1.5) and the pubsub errors.

A node's configuration is a frozen `NodeConfig`. It is changed three ways, all through
`ConfigChange`: the owner's configure form (8.2), the <configure/> of a create request (8.1.3) and
the publish-options of a publish that auto-creates the node (7.1.5). On an existing node,
publish-options are preconditions: each must equal the node's value, else the publish fails with
<conflict/> + <precondition-not-met/>.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...protocol.errors import StanzaError
from ...protocol.xml import Element
from .forms import FormBuilder, Submission, parse_bool

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
FORM_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
FORM_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"

ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
NOTIFICATION_TYPES = ("headline", "normal")

MAX_NODE_NAME = 1024        # characters; node names are usually namespaces
MAX_ITEM_ID = 1024


def pubsub_error(condition: str, app: str | None, text: str, *, type_: str | None = None,
                 feature: str | None = None) -> StanzaError:
    """A stanza error with a pubsub-specific condition (XEP-0060 section 7 and 8 error cases)."""
    app_el = None
    if app is not None:
        app_el = Element(app, NS_ERRORS, {"feature": feature} if feature else None)
    return StanzaError(condition, text, type_, app_condition=app_el)


def precondition_not_met(text: str) -> StanzaError:
    return pubsub_error("conflict", "precondition-not-met", text)


@dataclass(frozen=True)
class NodeConfig:
    """The configuration of one node. Field names are the pubsub#... variables without the prefix."""
    access_model: str = "presence"
    roster_groups_allowed: tuple[str, ...] = ()
    persist_items: bool = True
    max_items: int = 1
    send_last_published_item: str = "on_sub_and_presence"
    deliver_notifications: bool = True
    deliver_payloads: bool = True
    notify_retract: bool = True
    notify_delete: bool = True
    notify_config: bool = False
    notification_type: str = "headline"
    title: str = ""

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["roster_groups_allowed"] = list(self.roster_groups_allowed)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], base: NodeConfig) -> NodeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "roster_groups_allowed" in values:
            values["roster_groups_allowed"] = tuple(values["roster_groups_allowed"])
        return dataclasses.replace(base, **values)


# var -> (form field type, label, allowed values)
FIELDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "pubsub#title": ("text-single", "A friendly name for the node", ()),
    "pubsub#access_model": ("list-single", "Who may subscribe and retrieve items", ACCESS_MODELS),
    "pubsub#roster_groups_allowed": ("list-multi", "Roster groups allowed to subscribe (roster access model)", ()),
    "pubsub#persist_items": ("boolean", "Persist items to storage", ()),
    "pubsub#max_items": ("text-single", "Maximum number of items to keep ('max' for the service maximum)", ()),
    "pubsub#send_last_published_item": ("list-single", "When to send the last published item", SEND_LAST),
    "pubsub#deliver_notifications": ("boolean", "Deliver event notifications", ()),
    "pubsub#deliver_payloads": ("boolean", "Deliver payloads with event notifications", ()),
    "pubsub#notify_retract": ("boolean", "Notify subscribers when items are removed", ()),
    "pubsub#notify_delete": ("boolean", "Notify subscribers when the node is deleted", ()),
    "pubsub#notify_config": ("boolean", "Notify subscribers when the configuration changes", ()),
    "pubsub#notification_type": ("list-single", "Message type of event notifications", NOTIFICATION_TYPES),
    # Read-only facts about PEP: accepted when submitted with the only value the service has.
    "pubsub#publish_model": ("list-single", "Who may publish (PEP: the owner only)", ("publishers",)),
}


def _value(config: NodeConfig, var: str) -> list[str]:
    if var == "pubsub#publish_model":
        return ["publishers"]
    value = getattr(config, var.removeprefix("pubsub#"))
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, tuple):
        return list(value)
    return [str(value)]


def config_form(config: NodeConfig, type_: str = "form") -> Element:
    """The node configuration as a data form (8.2.2 for 'form', 8.2.5 for notifications 'result')."""
    form = FormBuilder(type_, FORM_NODE_CONFIG)
    for var, (ftype, label, options) in FIELDS.items():
        form.field(var, ftype, _value(config, var), label, options if ftype.startswith("list-single") else ())
    return form.x


class ConfigChange:
    """Validated values from a node_config or publish-options form, applied or compared as one."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values        # NodeConfig field name -> typed value

    @classmethod
    def parse(cls, form: Submission, max_items_limit: int, *, is_precondition: bool = False) -> ConfigChange:
        """Read the fields of a submitted form. Unknown fields are refused: silently ignoring an
        option the client relies on (access_model above all) would make it believe the node is
        configured the way it asked."""
        values: dict[str, Any] = {}
        for var, raw in form.values.items():
            if var not in FIELDS:
                if is_precondition:
                    raise precondition_not_met(f"this service does not support the publish option {var}")
                raise StanzaError("not-acceptable", f"this service does not support the node option {var}")
            ftype, _label, choices = FIELDS[var]
            if ftype == "list-multi":
                values[var.removeprefix("pubsub#")] = tuple(v.strip() for v in raw if v.strip())
                continue
            if len(raw) != 1:
                raise StanzaError("bad-request", f"{var} takes exactly one value, got {len(raw)}")
            value = raw[0].strip()
            name = var.removeprefix("pubsub#")
            if ftype == "boolean":
                values[name] = parse_bool(var, value)
            elif var == "pubsub#max_items":
                values[name] = parse_max_items(value, max_items_limit)
            elif choices and value not in choices:
                if var == "pubsub#access_model":
                    if is_precondition:
                        raise precondition_not_met(f"access model {value!r} is not supported here "
                                                   f"(supported: {', '.join(ACCESS_MODELS)})")
                    raise pubsub_error("not-acceptable", "unsupported-access-model",
                                       f"access model {value!r} is not supported "
                                       f"(supported: {', '.join(ACCESS_MODELS)})")
                raise StanzaError("not-acceptable", f"{var} must be one of {', '.join(choices)}, not {value!r}")
            elif var == "pubsub#publish_model":
                continue        # only "publishers" passes the check above
            elif var == "pubsub#title" and len(value) > 1024:
                raise StanzaError("not-acceptable", "the node title is longer than 1024 characters")
            else:
                values[name] = value
        return cls(values)

    def apply(self, config: NodeConfig) -> NodeConfig:
        return dataclasses.replace(config, **self.values)

    def mismatch(self, config: NodeConfig) -> str | None:
        """A description of the first precondition the node does not meet, or None."""
        for name, wanted in self.values.items():
            actual = getattr(config, name)
            if actual != wanted:
                return (f"the node's pubsub#{name} is {_show(actual)}, not {_show(wanted)}; "
                        f"reconfigure the node or publish without that option")
        return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def parse_max_items(value: str, limit: int) -> int:
    """pubsub#max_items: a positive number or "max" (XEP-0060 16.4.4); more than the service keeps
    is lowered to its maximum, so asking twice for the same thing always meets the precondition."""
    if value == "max":
        return limit
    try:
        number = int(value)
    except ValueError:
        raise StanzaError("not-acceptable", f"pubsub#max_items is a number or 'max', not {value!r}") from None
    if number < 1:
        raise StanzaError("not-acceptable", "pubsub#max_items must be at least 1")
    return min(number, limit)


def check_node_name(node: str | None) -> str:
    if node is None or node == "":
        raise pubsub_error("bad-request", "nodeid-required", "the request needs a 'node'")
    if len(node) > MAX_NODE_NAME:
        raise StanzaError("not-acceptable", f"node names are at most {MAX_NODE_NAME} characters")
    if "\n" in node or "\r" in node:
        raise StanzaError("not-acceptable", "node names cannot contain line breaks")
    return node
