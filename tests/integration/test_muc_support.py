"""Helpers for the XEP-0045 tests (this file has no tests of its own).

Every client registers slixmpp's MUC, MAM and RSM plugins; `enter` joins and returns what the
room sent (own presence, subject, occupants, history); `configure` fills the room's
muc#roomconfig form the way a client does; `admin_iq`/`owner_iq` build raw muc#admin and
muc#owner requests for the cases slixmpp has no call for.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

from slixmpp.exceptions import PresenceError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from stockade.testing.xmpp import TIMEOUT, Client, client

from .conftest import USERS, jid

SERVICE = "conference.example.com"
PLUGINS = ("xep_0030", "xep_0045", "xep_0059", "xep_0199", "xep_0249", "xep_0313", "xep_0359")
NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
NS_SID = "urn:xmpp:sid:0"


@contextlib.asynccontextmanager
async def muc_client(server: Any, user: str, resource: str | None = None, **kwargs: Any) -> AsyncIterator[Client]:
    """A logged-in client of `user` with the MUC plugins. `c.room_presences` gets every presence
    it receives: slixmpp stops reporting presence from a room once its MUC plugin has seen it;
    `c.room_messages` every message (slixmpp reports only those with a body)."""
    address = jid(user) + (f"/{resource}" if resource else "")
    async with client(server, address, USERS[user], plugins=PLUGINS, **kwargs) as c:
        watch(c)
        yield c


def watch(c: Client) -> None:
    c.room_presences = asyncio.Queue()  # type: ignore[attr-defined]
    c.room_messages = asyncio.Queue()  # type: ignore[attr-defined]
    c.register_handler(Callback("all presence", StanzaPath("presence"), c.room_presences.put_nowait))  # type: ignore[attr-defined]
    c.register_handler(Callback("all messages", StanzaPath("message"), c.room_messages.put_nowait))  # type: ignore[attr-defined]


def room(name: str) -> str:
    return f"{name}@{SERVICE}"


def codes(stanza: Any) -> set[int]:
    """The MUC status codes of a presence or message."""
    return set(stanza["muc"]["status_codes"])


def item(stanza: Any) -> Any:
    """The <item/> of the muc#user element (as an ElementTree element, or None)."""
    return stanza.xml.find(f"{{{NS_USER}}}x/{{{NS_USER}}}item")


def error_condition(stanza: Any) -> str:
    return stanza["error"]["condition"]


async def enter(c: Client, room_jid: str, nick: str, **kwargs: Any) -> tuple[Any, Any, list[Any], list[Any]]:
    """c enters the room as nick; returns (own presence, subject message, occupants, history)."""
    return await c.plugin["xep_0045"].join_muc_wait(room_jid, nick, timeout=TIMEOUT, **kwargs)


async def enter_refused(c: Client, room_jid: str, nick: str, **kwargs: Any) -> str:
    """c tries to enter and is refused; returns the error condition."""
    try:
        await enter(c, room_jid, nick, **kwargs)
    except PresenceError as exc:
        return exc.presence["error"]["condition"]
    raise AssertionError(f"{c.boundjid} entered {room_jid} as {nick}, but should have been refused")


async def configure(c: Client, room_jid: str, **fields: Any) -> Any:
    """Fetch the configuration form, change the given muc#roomconfig_* fields, submit it.
    Returns the server's answer (an error answer is returned, not raised)."""
    muc = c.plugin["xep_0045"]
    form = await muc.get_room_config(room_jid)
    values = {}
    for name, value in fields.items():
        values[f"muc#roomconfig_{name}"] = value
    form.set_values(values)
    form["type"] = "submit"
    iq = c.make_iq_set(ito=room_jid)
    query = ET.SubElement(iq.xml, f"{{{NS_OWNER}}}query")
    query.append(form.xml)
    return await c.query(iq)


async def create(c: Client, room_jid: str, nick: str, **fields: Any) -> None:
    """c creates the room (it gets status 201) and configures it with `fields` (none: instant)."""
    own, _, _, _ = await enter(c, room_jid, nick)
    assert 201 in codes(own) and 110 in codes(own), own
    if fields:
        reply = await configure(c, room_jid, **fields)
    else:
        reply = await owner_iq(c, room_jid, "set", ET.fromstring("<x xmlns='jabber:x:data' type='submit'/>"))
    assert reply["type"] == "result", reply


def admin_iq(c: Client, room_jid: str, type_: str, *items: dict[str, str], reason: str | None = None) -> Any:
    """A muc#admin get or set with these <item/> attributes."""
    iq = c.make_iq_set(ito=room_jid) if type_ == "set" else c.make_iq_get(ito=room_jid)
    query = ET.SubElement(iq.xml, f"{{{NS_ADMIN}}}query")
    for attrs in items:
        el = ET.SubElement(query, f"{{{NS_ADMIN}}}item", attrs)
        if reason:
            ET.SubElement(el, f"{{{NS_ADMIN}}}reason").text = reason
    return c.query(iq)


def owner_iq(c: Client, room_jid: str, type_: str, *children: Any) -> Any:
    iq = c.make_iq_set(ito=room_jid) if type_ == "set" else c.make_iq_get(ito=room_jid)
    query = ET.SubElement(iq.xml, f"{{{NS_OWNER}}}query")
    for child in children:
        query.append(child)
    return c.query(iq)


async def presence_from(c: Client, occupant_jid: str, match: Any = None) -> Any:
    """The next presence from this occupant JID (available, unavailable or error)."""
    return await c.next_of(c.room_presences,  # type: ignore[attr-defined]
                           lambda p: str(p["from"]) == occupant_jid and (match is None or match(p)))


async def message_from(c: Client, address: str, match: Any = None) -> Any:
    """The next message from this address, body or not."""
    return await c.next_of(c.room_messages,  # type: ignore[attr-defined]
                           lambda m: str(m["from"]) == address and (match is None or match(m)))


async def groupchat_from(c: Client, occupant_jid: str) -> Any:
    return await c.next_of(c.messages, lambda m: str(m["from"]) == occupant_jid and m["type"] == "groupchat"
                           and bool(m["body"]))


def nothing_from(c: Client, jid_prefix: str, *, body: str | None = None) -> bool:
    """True when nothing received so far (and not yet taken) comes from an address starting with
    jid_prefix (and carries `body`, when given)."""
    for stanza in c.pending(c.messages) + c.pending(c.room_presences):  # type: ignore[attr-defined]
        if str(stanza["from"]).startswith(jid_prefix) and (body is None or stanza["body"] == body):
            return False
    return True
