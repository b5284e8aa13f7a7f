"""XEP-0050: Ad-Hoc Commands offered by the server on each host.

Other modules register commands with the `AdHocCommands` service:

    commands.register(Command(node="accept-aup", name="Accept the acceptable-use policy",
                              start=show_form, complete=record_acceptance, is_available=...))

Discovery: the host's disco#info lists http://jabber.org/protocol/commands; disco#items on the
node http://jabber.org/protocol/commands lists the commands the requester may run (a command
that does not apply to them is neither listed nor executable); disco#info on a command's node
names it (identity automation/command-node).

A command here has at most two stages, which is all the server's commands need: `execute`
answers the form (`start`), and `complete` with the submitted form (or `execute` within the
session, whose default action is complete) runs `complete` and ends the session with its note.
`cancel` ends it. Sessions belong to the full JID that started them, expire after
SESSION_LIFETIME seconds, and a user has at most MAX_SESSIONS open at a time.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Awaitable, Callable

from ..core.iq import HOST, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.errors import StanzaError
from ..protocol.jid import JID
from ..protocol.xml import Element

NS_COMMANDS = "http://jabber.org/protocol/commands"
SESSION_LIFETIME = 600.0        # seconds a started command waits for its completion
MAX_SESSIONS = 10               # open command sessions per user


@dataclass(frozen=True)
class Command:
    """A server command. `start(request)` returns the form to fill in; `complete(request, form)`
    acts on the submitted form (None when the client sent none) and returns the note shown to
    the user; either raises StanzaError to refuse with a reason."""
    node: str
    name: str
    start: Callable[[IqRequest], Awaitable[Element]]
    complete: Callable[[IqRequest, Element | None], Awaitable[str]]
    is_available: Callable[[JID, str], bool] = lambda requester, host: requester.local is not None


@dataclass
class _Session:
    node: str
    owner: JID
    expires: float


def _app_error(condition: str, text: str, app: str) -> StanzaError:
    return StanzaError(condition, text, app_condition=Element(app, NS_COMMANDS))


class AdHocCommands:
    def __init__(self, module: ModuleAPI) -> None:
        self.module = module
        self.commands: dict[str, Command] = {}
        self._sessions: dict[str, _Session] = {}

    def register(self, command: Command) -> None:
        if command.node in self.commands or command.node == NS_COMMANDS:
            raise ValueError(f"an ad-hoc command with the node {command.node!r} is already registered")
        self.commands[command.node] = command
        self.module.ctx.disco.host_nodes[command.node] = self._node_disco

    def _visible(self, request: IqRequest) -> list[Command]:
        return [c for c in self.commands.values() if c.is_available(request.sender, request.host)]

    # -- discovery ------------------------------------------------------------------------------
    def list_disco(self, request: IqRequest, kind: str) -> Element:
        """disco#info / #items of the commands node: the commands this requester may run."""
        if kind == "info":
            query = Element("query", ns.DISCO_INFO, {"node": NS_COMMANDS})
            query.add("identity", attrs={"category": "automation", "type": "command-list",
                                         "name": "Commands"})
            return query
        query = Element("query", ns.DISCO_ITEMS, {"node": NS_COMMANDS})
        for command in sorted(self._visible(request), key=lambda c: c.node):
            query.add("item", attrs={"jid": request.host, "node": command.node, "name": command.name})
        return query

    def _node_disco(self, request: IqRequest, kind: str) -> Element:
        node = request.payload.get("node") or ""
        command = self.commands[node]
        if not command.is_available(request.sender, request.host):
            raise StanzaError("item-not-found", f"there is no command {node!r} for you on {request.host}")
        if kind == "items":
            return Element("query", ns.DISCO_ITEMS, {"node": node})
        query = Element("query", ns.DISCO_INFO, {"node": node})
        query.add("identity", attrs={"category": "automation", "type": "command-node", "name": command.name})
        query.add("feature", attrs={"var": NS_COMMANDS})
        query.add("feature", attrs={"var": ns.DATA_FORMS})
        return query

    # -- execution ------------------------------------------------------------------------------
    async def handle(self, request: IqRequest) -> Element:
        payload = request.payload
        node = payload.get("node") or ""
        command = self.commands.get(node)
        if command is None or not command.is_available(request.sender, request.host):
            raise StanzaError("item-not-found", f"there is no command {node!r} for you on {request.host}; "
                                                f"list them with disco#items on the node {NS_COMMANDS}")
        action = payload.get("action") or "execute"
        if action not in ("execute", "complete", "cancel", "next", "prev"):
            raise _app_error("bad-request", f"unknown action {action!r}: use execute, complete or cancel",
                             "malformed-action")
        now = self.module.clock.monotonic()
        self._expire(now)
        session_id = payload.get("sessionid")
        if session_id is None:
            if action != "execute":
                raise _app_error("bad-request", "start the command with action='execute' first",
                                 "bad-sessionid")
            return await self._start(request, command, now)
        session = self._sessions.get(session_id)
        if session is None or session.owner != request.sender or session.node != node:
            raise _app_error("not-allowed", "this command session is unknown or has expired; start the command "
                                            "again", "bad-sessionid")
        if action == "cancel":
            del self._sessions[session_id]
            return request.result(self._answer(node, session_id, "canceled"))
        if action in ("next", "prev"):
            raise _app_error("bad-request", "this command has one form: complete it or cancel it", "bad-action")
        form = payload.find("x", ns.DATA_FORMS)
        note = await command.complete(request, form)     # a refusal keeps the session for another try
        del self._sessions[session_id]
        answer = self._answer(node, session_id, "completed")
        answer.add("note", attrs={"type": "info"}, text=note)
        return request.result(answer)

    async def _start(self, request: IqRequest, command: Command, now: float) -> Element:
        mine = [k for k, s in self._sessions.items() if s.owner.bare == request.sender.bare]
        if len(mine) >= MAX_SESSIONS:
            raise StanzaError("resource-constraint", f"you have {len(mine)} unfinished commands; complete or "
                                                     "cancel one first", type_="wait")
        form = await command.start(request)
        session_id = secrets.token_urlsafe(12)
        self._sessions[session_id] = _Session(command.node, request.sender, now + SESSION_LIFETIME)
        answer = self._answer(command.node, session_id, "executing")
        actions = answer.add("actions", attrs={"execute": "complete"})
        actions.add("complete")
        answer.append(form)
        return request.result(answer)

    @staticmethod
    def _answer(node: str, session_id: str, status: str) -> Element:
        return Element("command", NS_COMMANDS, {"node": node, "sessionid": session_id, "status": status})

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


def setup(module: ModuleAPI) -> None:
    commands = AdHocCommands(module)
    module.provide(commands)
    module.add_feature(NS_COMMANDS)
    module.ctx.disco.host_nodes[NS_COMMANDS] = commands.list_disco
    module.on_iq("set", NS_COMMANDS, "command", commands.handle, target=HOST)
