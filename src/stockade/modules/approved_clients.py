"""Approved client software: only listed clients, at or above a minimum version, stay connected.

Clients are named by their XEP-0092 software version name ("Gajim", "Conversations"), with an
optional minimum version, or by their XEP-0115 caps node ("https://gajim.org"):

    [modules.approved_clients]
    allow = ["Gajim >= 1.8", "Conversations >= 2.10", "Dino"]
    allow_caps_nodes = ["https://gajim.org"]

With both lists empty (the default) every client is allowed and nothing is asked. Otherwise, right
after a client binds its resource, the server asks it <query xmlns='jabber:iq:version'/> and,
until the answer is judged, holds every stanza addressed to it (its roster, offline messages,
chats): an unapproved client sees nothing. The decision:

1. a name on the `allow` list: approved if its version is at least the minimum (versions compare
   by their leading numbers, 2.10 > 2.9); older or unreadable: refused as outdated;
2. otherwise, a caps node (from its presence so far) on `allow_caps_nodes`: approved;
3. no answer within `query_timeout` (or an error): refused when `refuse_unanswered` (default),
   else approved;
4. anything else: refused.

A refused client gets <policy-violation/> with a text naming the approved clients, e.g.

    client Foo 1.0 is not approved here; approved clients: Gajim >= 1.8, Conversations >= 2.10

and the messages held for it go back to the account (another resource, or offline storage).
What the client sends itself during that one round trip is routed as usual.

Every checked session records its software in `session.client_info` (name, version, os, node);
`ApprovedClients.sessions()` lists what each live session uses (for the admin console). With
`record_software = true` clients are asked even when every client is allowed.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..config.options import option
from ..core.hooks import FALLBACK, POLICY, SessionBound, SessionClosed, StanzaFromClient
from ..core.module_api import ModuleAPI
from ..core.sessions import ClientSession
from ..protocol import ns
from ..protocol.errors import StanzaError, StreamError, error_reply
from ..protocol.xml import Element

KEY = "approved_clients"
NS_CAPS = "http://jabber.org/protocol/caps"
_ENTRY = re.compile(r"^\s*(?P<name>[^<>=]*[^<>=\s])\s*(?:>=\s*(?P<min>\d+(?:\.\d+)*)\s*)?$")
_VERSION = re.compile(r"\d+(?:\.\d+)*")


def parse_version(text: str) -> tuple[int, ...] | None:
    """The leading dotted numbers of a version ("2.10.1+free" -> (2, 10, 1)), trailing zeros
    dropped so that 1.8 equals 1.8.0; None when it has none."""
    found = _VERSION.search(text or "")
    if found is None:
        return None
    parts = [int(p) for p in found.group().split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class ApprovedClient:
    name: str
    minimum: tuple[int, ...] | None
    text: str                              # as written, normalised: "Gajim >= 1.8"


def parse_entry(text: str) -> ApprovedClient:
    """'Name' or 'Name >= 1.2.3'; ValueError otherwise."""
    m = _ENTRY.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not 'Name' or 'Name >= VERSION' (e.g. 'Gajim >= 1.8')")
    name, minimum = m.group("name"), m.group("min")
    return ApprovedClient(name, parse_version(minimum) if minimum else None,
                          f"{name} >= {minimum}" if minimum else name)


def _check_allow(value: list[str]) -> str | None:
    for text in value:
        try:
            parse_entry(text)
        except ValueError as exc:
            return str(exc)
    return None


@dataclass(frozen=True)
class Options:
    allow: list[str] = option(help="Approved clients by XEP-0092 software name, each 'Name' or 'Name >= MIN_VERSION' (e.g. [\"Gajim >= 1.8\", \"Conversations >= 2.10\"]); names compare without case. Empty (with allow_caps_nodes empty): every client is allowed.",
                              factory=list, check=_check_allow)
    allow_caps_nodes: list[str] = option(help="Approved clients by XEP-0115 caps node (e.g. \"https://gajim.org\"), for clients that do not answer software version queries; no minimum version can be checked this way.", factory=list)
    query_timeout: float = option(10.0, help="Seconds a client has to answer the software version query.", min=1.0, max=120.0)
    refuse_unanswered: bool = option(True, help="Refuse a client that does not answer the software version query in time (or answers with an error), unless its caps node is approved.")
    record_software: bool = option(False, help="Ask every client its software version even when all clients are allowed, so that the session list shows it.")


@dataclass(eq=False)
class ClientCheck:
    """The check of one session, and the stanzas held for it meanwhile."""
    session: ClientSession
    is_holding: bool
    held: list[Element] = field(default_factory=list)
    previous_filter: Any = None
    node: str | None = None
    task: asyncio.Task[None] | None = None
    is_done: bool = False

    def hold(self, stanza: Element) -> bool:
        """The session's outbound filter while the client is not yet approved: keep everything."""
        self.held.append(stanza)
        return True


class ApprovedClients:
    def __init__(self, module: ModuleAPI) -> None:
        self.module = module
        options = module.options
        self.options = options
        self.allowed = [parse_entry(t) for t in options.allow]
        self._by_name = {e.name.casefold(): e for e in self.allowed}
        self.nodes = set(options.allow_caps_nodes)
        self.is_enforcing = bool(self.allowed or self.nodes)
        self.is_active = self.is_enforcing or options.record_software

    def approved_text(self) -> str:
        names = [e.text for e in self.allowed] + [f"caps node {n}" for n in sorted(self.nodes)]
        return ", ".join(names)

    def decide(self, name: str | None, version: str | None, node: str | None) -> str | None:
        """None when the client is approved; otherwise the refusal, saying what is approved."""
        approved = f"approved clients: {self.approved_text()}; ask your administrator"
        label = f"client {name}{f' {version}' if version else ''}" if name else ""
        entry = self._by_name.get(name.casefold()) if name else None
        if entry is not None:
            have = parse_version(version or "")
            if entry.minimum is None or (have is not None and have >= entry.minimum):
                return None
            return f"{label} is older than the approved minimum {entry.text}; update it ({approved})"
        if node and node in self.nodes:
            return None
        if name is None:
            if not self.options.refuse_unanswered:
                return None
            return ("your client did not tell which software it is (XEP-0092 software version) within "
                    f"{self.options.query_timeout:g} s, so it cannot be checked; {approved}")
        return f"{label} is not approved here; {approved}"

    # -- hooks ----------------------------------------------------------------------------------
    async def bound(self, event: SessionBound) -> None:
        self._begin(event.session, wait_for_bind=True)

    def from_client(self, event: StanzaFromClient) -> None:
        """Notes the caps node of the client's presence; starts the check of a session whose bind
        hook did not run (the check never depends on one hook alone)."""
        session = event.session
        state: ClientCheck | None = session.extra.get(KEY)
        if state is None:
            state = self._begin(session, wait_for_bind=False)
        if not state.is_done and event.stanza.name == "presence":
            caps = event.stanza.find("c", NS_CAPS)
            if caps is not None and caps.get("node"):
                state.node = caps.get("node")
        return None

    async def closed(self, event: SessionClosed) -> None:
        state: ClientCheck | None = event.session.extra.pop(KEY, None)
        if state is None:
            return
        if state.task is not None and not state.task.done():
            state.task.cancel()
        held, state.held = state.held, []
        for stanza in held:
            self._reroute(event.session, stanza)

    # -- the check ------------------------------------------------------------------------------
    def _begin(self, session: ClientSession, wait_for_bind: bool) -> ClientCheck:
        state = ClientCheck(session, is_holding=self.is_enforcing)
        session.extra[KEY] = state
        if state.is_holding:
            state.previous_filter = session.outbound_filter
            session.outbound_filter = state.hold
        if wait_for_bind:
            # The bind result is written right after the SessionBound hooks: ask after it.
            asyncio.get_running_loop().call_soon(self._start, state, 0)
        else:
            self._start(state, 0)
        return state

    def _start(self, state: ClientCheck, tries: int) -> None:
        if state.session.extra.get(KEY) is not state or state.task is not None:
            return
        conn = state.session.channel.connection
        if conn is not None and getattr(conn, "session", state.session) is not state.session and tries < 100:
            asyncio.get_running_loop().call_soon(self._start, state, tries + 1)
            return
        state.task = asyncio.ensure_future(self._check(state))

    async def _check(self, state: ClientCheck) -> None:
        session = state.session
        name, version, os_name = await self._ask(session)
        state.is_done = True
        session.client_info.update({k: v for k, v in (("name", name), ("version", version), ("os", os_name),
                                                      ("node", state.node)) if v})
        if session.is_closed or session.extra.get(KEY) is not state:
            return
        refusal = self.decide(name, version, state.node) if self.is_enforcing else None
        if refusal is not None:
            self.module.log.warning("%s from %s refused: %s", session.jid, session.channel.address, refusal)
            session.close(StreamError("policy-violation", refusal))
            return
        if state.is_holding:
            if session.outbound_filter == state.hold:
                session.outbound_filter = state.previous_filter
            held, state.held = state.held, []
            state.is_holding = False
            for stanza in held:
                session.send(stanza)

    async def _ask(self, session: ClientSession) -> tuple[str | None, str | None, str | None]:
        """XEP-0092 to the session; (name, version, os), all None without a usable answer."""
        iq_id = "client-version-" + secrets.token_hex(8)
        iq = Element("iq", ns.CLIENT, {"type": "get", "id": iq_id, "from": session.host, "to": session.full})
        iq.add("query", ns.VERSION)
        dispatcher = self.module.ctx.iq
        answer = dispatcher.expect_reply(iq_id)
        try:
            session.channel.send_stanza(iq)          # past the hold filter
            reply = await asyncio.wait_for(answer, self.options.query_timeout)
        except asyncio.TimeoutError:
            return None, None, None
        finally:
            dispatcher.forget(iq_id)
        query = reply.find("query", ns.VERSION)
        if reply.get("type") != "result" or reply.get("from") != session.full or query is None:
            return None, None, None
        name = (query.find_text("name", ns.VERSION) or "").strip() or None
        return name, (query.find_text("version", ns.VERSION) or "").strip() or None, \
            (query.find_text("os", ns.VERSION) or "").strip() or None

    def _reroute(self, session: ClientSession, stanza: Element) -> None:
        """A stanza held for a session that ended: messages go back to the account (another
        resource or offline storage), requests get an error, the rest is dropped."""
        router = self.module.router
        stype = stanza.get("type")
        if stanza.name == "message" and stype in (None, "normal", "chat"):
            copy = stanza.copy()
            if copy.find("delay", ns.DELAY) is None:
                stamp = datetime.fromtimestamp(self.module.clock.time(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                copy.add("delay", ns.DELAY, {"from": session.host, "stamp": stamp})
            copy.attrs["to"] = str(session.bare)
            pending = router.message_to_local(copy, session.bare, None)
            if pending is not None:
                asyncio.ensure_future(pending)
        elif stanza.name == "iq" and stype in ("get", "set"):
            router.route(error_reply(stanza, StanzaError("recipient-unavailable", "the recipient went away")))

    # -- for administrators ---------------------------------------------------------------------
    def sessions(self) -> list[dict[str, str]]:
        """Every live session with the client software it uses (empty strings when unknown)."""
        out = []
        for session in self.module.sessions:
            info = session.client_info
            out.append({"jid": session.full, "address": session.channel.address, "name": info.get("name", ""),
                        "version": info.get("version", ""), "os": info.get("os", ""), "node": info.get("node", "")})
        return sorted(out, key=lambda s: s["jid"])


def setup(module: ModuleAPI) -> None:
    clients = ApprovedClients(module)
    module.provide(clients)
    if not clients.is_active:
        return                                    # every client allowed, nothing asked: no cost
    module.on(SessionBound, clients.bound, FALLBACK)
    module.on(StanzaFromClient, clients.from_client, POLICY + 100)
    module.on(SessionClosed, clients.closed)
