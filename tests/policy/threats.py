"""Helpers of the flood, worm, contact, impostor and alert tests: servers with a [hosts.policy]
per host, provisioning many accounts fast, and reading what a client received."""

from __future__ import annotations

from typing import Any

from slixmpp.stanza import Message

from stockade.testing.xmpp import Client, client

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_POLICY = "urn:stockade:policy:0"


def password(address: str) -> str:
    return f"pw-{address}-long-enough"


def add_users(server: Any, *addresses: str) -> None:
    for address in addresses:
        server.add_user(address, password(address))


def login(server: Any, address: str, **kwargs: Any):
    return client(server, address, password(address.partition("/")[0]), **kwargs)


def send(c: Client, to: str, body: str, msg_id: str | None = None, mtype: str = "chat") -> None:
    """c sends <message type=mtype to=to id=msg_id><body>body</body></message>."""
    msg = c.make_message(mto=to, mbody=body, mtype=mtype)
    if msg_id is not None:
        msg["id"] = msg_id
    msg.send()


async def error_for(c: Client, msg_id: str) -> Message:
    """The error c got back for its message `msg_id`."""
    return await c.next_of(c.messages, lambda m: m["type"] == "error" and m["id"] == msg_id)


async def body(c: Client, text: str) -> Message:
    """The message with this body that c received."""
    return await c.next_of(c.messages, lambda m: m["type"] != "error" and m["body"] == text)


def errors(c: Client) -> list[Message]:
    return [m for m in c.pending(c.messages) if m["type"] == "error"]


def bodies(c: Client) -> list[str]:
    return [m["body"] for m in c.pending(c.messages) if m["type"] != "error" and m["body"]]


def condition(msg: Message) -> str:
    """The stanza error condition, read from the XML (slixmpp does not know every condition)."""
    error = msg.xml.find("{jabber:client}error")
    return next(c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{STANZAS}}}") and not c.tag.endswith("}text"))


def error_text(msg: Message) -> str:
    return msg.xml.findtext(f"{{jabber:client}}error/{{{STANZAS}}}text") or ""


def label(msg: Message, name: str) -> Any:
    """The server's <name xmlns='urn:stockade:policy:0'/> label on a received message, or None."""
    return msg.xml.find(f"{{{NS_POLICY}}}{name}")
