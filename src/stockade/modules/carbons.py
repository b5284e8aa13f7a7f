"""XEP-0280: Message Carbons.

Every resource that enabled carbons gets a copy of the chat messages its account sends from
another resource (<sent/>) and of those delivered to another resource (<received/>), so a
conversation continues on whichever device the user picks up. Messages marked <private/>
(XEP-0280) or <no-copy/> (XEP-0334) are not copied.
"""

from __future__ import annotations

from ..core.hooks import MessageDelivered, MessageFromLocal
from ..core.iq import ACCOUNT, IqRequest
from ..core.module_api import ModuleAPI
from ..core.sessions import ClientSession
from ..protocol.errors import StanzaError
from ..protocol.jid import JID
from ..protocol.xml import Element

NS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
KEY = "carbons"


def is_eligible(stanza: Element) -> bool:
    """XEP-0280 section 6: chat messages, and normal messages with a body; never private ones,
    nor private messages between group chat occupants (they go to the joined resource only)."""
    mtype = stanza.attrs.get("type", "normal")
    if mtype == "chat":
        pass
    elif mtype == "normal":
        if stanza.find("body") is None:
            return False
    else:
        return False
    for child in stanza.children:
        if isinstance(child, Element) and ((child.name == "private" and child.xmlns == NS)
                                           or (child.name == "no-copy" and child.xmlns == NS_HINTS)
                                           or (child.name == "x" and child.xmlns == NS_MUC_USER)):
            return False
    return True


def wrap(stanza: Element, direction: str, owner: JID, to: ClientSession) -> Element:
    copy = Element("message", stanza.xmlns, {"from": str(owner), "to": str(to.jid),
                                               "type": stanza.attrs.get("type", "normal")})
    forwarded = copy.add(direction, NS).add("forwarded", NS_FORWARD)
    forwarded.append(stanza.copy())
    return copy


def setup(module: ModuleAPI) -> None:
    sessions = module.sessions

    def copy_sent(event: MessageFromLocal) -> None:
        sender = event.session
        if sessions.count(sender.bare) < 2 or not is_eligible(event.stanza):
            return None
        for other in sessions.of_user(sender.bare):
            if other is not sender and other.extra.get(KEY):
                other.send(wrap(event.stanza, "sent", sender.bare, other))
        return None

    def copy_received(event: MessageDelivered) -> None:
        to = event.to.bare
        if sessions.count(to) <= len(event.sessions) or not is_eligible(event.stanza):
            return None
        for other in sessions.of_user(to):
            if other.extra.get(KEY) and other not in event.sessions:
                other.send(wrap(event.stanza, "received", to, other))
        return None

    async def enable(request: IqRequest) -> Element:
        if not request.is_own_account or request.session is None:
            raise StanzaError("forbidden", "carbons are enabled for your own connection only")
        request.session.extra[KEY] = request.payload.name == "enable"
        return request.result()

    module.add_feature(NS)
    module.on(MessageFromLocal, copy_sent)
    module.on(MessageDelivered, copy_received)
    module.on_iq("set", NS, "enable", enable, target=ACCOUNT)
    module.on_iq("set", NS, "disable", enable, target=ACCOUNT)
