"""Stream errors (RFC 6120 section 4.9) and stanza errors (section 8.3)."""

from __future__ import annotations

from . import ns
from .xml import Element

STREAM_CONDITIONS = frozenset({
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
    "remote-connection-failed", "reset", "resource-constraint", "restricted-xml", "see-other-host",
    "system-shutdown", "undefined-condition", "unsupported-encoding", "unsupported-feature",
    "unsupported-stanza-type", "unsupported-version",
})

# condition -> default error type (RFC 6120 section 8.3.3)
STANZA_CONDITIONS = {
    "bad-request": "modify", "conflict": "cancel", "feature-not-implemented": "cancel",
    "forbidden": "auth", "gone": "cancel", "internal-server-error": "cancel",
    "item-not-found": "cancel", "jid-malformed": "modify", "not-acceptable": "modify",
    "not-allowed": "cancel", "not-authorized": "auth", "policy-violation": "modify",
    "recipient-unavailable": "wait", "redirect": "modify", "registration-required": "auth",
    "remote-server-not-found": "cancel", "remote-server-timeout": "wait",
    "resource-constraint": "wait", "service-unavailable": "cancel",
    "subscription-required": "auth", "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class StreamError(Exception):
    """A fatal stream-level error: send `<stream:error/>` and close the stream."""

    def __init__(self, condition: str, text: str = "") -> None:
        if condition not in STREAM_CONDITIONS:
            raise ValueError(f"unknown stream error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text

    def to_element(self) -> Element:
        err = Element("error", ns.STREAMS)
        err.add(self.condition, ns.STREAM_ERRORS)
        if self.text:
            err.add("text", ns.STREAM_ERRORS, {"xml:lang": "en"}, self.text)
        return err


class StanzaError(Exception):
    """A stanza-level error: the stanza is answered with type='error'; the stream goes on."""

    def __init__(self, condition: str, text: str = "", type_: str | None = None,
                 app_condition: Element | None = None) -> None:
        if condition not in STANZA_CONDITIONS:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = type_ or STANZA_CONDITIONS[condition]
        self.app_condition = app_condition

    def to_element(self, by: str | None = None) -> Element:
        err = Element("error", ns.CLIENT, {"type": self.type})
        if by:
            err.attrs["by"] = by
        err.add(self.condition, ns.STANZA_ERRORS)
        if self.text:
            err.add("text", ns.STANZA_ERRORS, {"xml:lang": "en"}, self.text)
        if self.app_condition is not None:
            err.append(self.app_condition)
        return err


def error_reply(stanza: Element, error: StanzaError, by: str | None = None) -> Element:
    """The error response to `stanza` (RFC 6120 section 8.3.1): from/to swapped, original payload kept
    for messages and presence, dropped for IQs (an IQ error carries no payload of its own)."""
    attrs = {"type": "error"}
    if "id" in stanza.attrs:
        attrs["id"] = stanza.attrs["id"]
    if "to" in stanza.attrs:
        attrs["from"] = stanza.attrs["to"]
    if "from" in stanza.attrs:
        attrs["to"] = stanza.attrs["from"]
    reply = Element(stanza.name, stanza.xmlns, attrs)
    if stanza.name != "iq":
        for child in stanza.children:
            if isinstance(child, Element) and child.name != "error":
                reply.children.append(child.copy())
    reply.children.append(error.to_element(by))
    return reply
