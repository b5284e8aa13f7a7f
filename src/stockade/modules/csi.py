"""XEP-0352: Client State Indication.

A client that says it is <inactive/> (a phone in a pocket) gets presence updates and typing
notifications held back by the server: only the latest presence per contact resource is kept.
Anything that matters (a message with content, an IQ, a subscription request) flushes what is
held, in order, and goes out at once; <active/> flushes too. Nothing is ever dropped, except
presence superseded by a newer one from the same resource.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.options import option
from ..core.hooks import SessionClosed
from ..core.module_api import ModuleAPI
from ..core.sessions import ClientSession
from ..protocol.xml import Element

NS = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
KEY = "csi"


@dataclass(frozen=True)
class Options:
    max_held: int = option(200, help="Stanzas held for an inactive client before they are sent anyway.", min=1, max=100_000)


def is_unimportant(stanza: Element) -> bool:
    """Stanzas an inactive client can wait for: availability presence and bare chat states."""
    if stanza.name == "presence":
        return stanza.attrs.get("type") in (None, "unavailable")
    if stanza.name == "message":
        children = [c for c in stanza.children if isinstance(c, Element)]
        return bool(children) and all(c.xmlns == NS_CHATSTATES for c in children)
    return False


class HeldStanzas:
    """The outbound filter of one inactive session."""

    def __init__(self, session: ClientSession, max_held: int) -> None:
        self.session = session
        self.max_held = max_held
        self.held: list[Element] = []
        self.presence_index: dict[str, int] = {}     # sender full JID -> index of its held presence

    def __call__(self, stanza: Element) -> bool:
        if not is_unimportant(stanza):
            self.flush()
            return False          # the stanza itself goes out normally, after what was held
        if stanza.name == "presence":
            sender = stanza.attrs.get("from", "")
            index = self.presence_index.get(sender)
            if index is not None:
                self.held[index] = stanza         # only the newest presence matters
                return True
            self.presence_index[sender] = len(self.held)
        self.held.append(stanza)
        if len(self.held) >= self.max_held:
            self.flush()
        return True

    def flush(self) -> None:
        held, self.held = self.held, []
        self.presence_index.clear()
        channel = self.session.channel
        for stanza in held:
            channel.send_stanza(stanza)


def setup(module: ModuleAPI) -> None:
    max_held = module.options.max_held

    def client_state(conn: object, element: Element) -> bool:
        session: ClientSession | None = getattr(conn, "session", None)
        if session is None or element.name not in ("active", "inactive"):
            return False
        current = session.extra.get(KEY)
        if element.name == "inactive":
            if current is None:
                current = session.extra[KEY] = HeldStanzas(session, max_held)
                session.outbound_filter = current
        elif current is not None:
            session.outbound_filter = None
            del session.extra[KEY]
            current.flush()
        return True

    async def closed(event: SessionClosed) -> None:
        event.session.extra.pop(KEY, None)
        event.session.outbound_filter = None

    module.add_stream_feature(Element("csi", NS))
    module.on_nonza(NS, client_state)
    module.on(SessionClosed, closed)
