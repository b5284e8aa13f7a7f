"""IQ requests handled by the server itself, for a host or on behalf of an account.

A module registers `module.on_iq("get", ns.PING, "ping", handler, target=HOST)`. The handler gets an
`IqRequest` and returns the result element (`request.result(payload)`), returns None when it has
answered by itself, or raises `StanzaError`. Requests nobody handles get <service-unavailable/>
(RFC 6120 section 8.4); results and errors addressed to the server are matched to the server's own
pending requests or dropped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

from ..protocol.errors import StanzaError
from ..protocol.jid import JID, try_jid
from ..protocol.xml import Element

if TYPE_CHECKING:
    from .router import Router
    from .sessions import ClientSession

log = logging.getLogger(__name__)

HOST = "host"         # addressed to the domain (the server)
ACCOUNT = "account"   # addressed to a bare JID (or no 'to'), answered by the server for the account


@dataclass(slots=True)
class IqRequest:
    stanza: Element
    type: str                      # get | set
    payload: Element               # the single child element
    sender: JID                    # trusted full (or bare/domain) JID of the requester
    target: JID                    # the host domain, or the bare JID of the account
    session: ClientSession | None  # the requester's session when it is a local client

    @property
    def is_own_account(self) -> bool:
        """The requester asks about its own account (no 'to', or its own bare JID)."""
        return self.target.local is not None and self.sender.bare == self.target

    @property
    def host(self) -> str:
        return self.target.domain

    def result(self, payload: Element | None = None) -> Element:
        attrs = {"type": "result", "to": str(self.sender)}
        if "id" in self.stanza.attrs:
            attrs["id"] = self.stanza.attrs["id"]
        if "to" in self.stanza.attrs:
            attrs["from"] = self.stanza.attrs["to"]
        iq = Element("iq", self.stanza.xmlns, attrs)
        if payload is not None:
            iq.children.append(payload)
        return iq


IqHandler = Callable[[IqRequest], Awaitable[Element | None]]


class IqDispatcher:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str, str, str], IqHandler] = {}
        self._pending: dict[str, asyncio.Future[Element]] = {}

    def register(self, target: str, type_: str, xmlns: str, name: str, handler: IqHandler) -> None:
        key = (target, type_, xmlns, name)
        if key in self._handlers:
            raise ValueError(f"an IQ handler for {key} is already registered")
        self._handlers[key] = handler

    def dispatch(self, stanza: Element, target: JID, origin: ClientSession | None,
                 router: Router) -> Awaitable[None] | None:
        itype = stanza.attrs.get("type")
        if itype in ("result", "error"):
            waiter = self._pending.pop(stanza.attrs.get("id", ""), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(stanza)
            return None
        children = [c for c in stanza.children if isinstance(c, Element)]
        if itype not in ("get", "set") or len(children) != 1:
            router.bounce(stanza, StanzaError("bad-request", "an IQ get or set carries exactly one child element"))
            return None
        payload = children[0]
        kind = ACCOUNT if target.local is not None else HOST
        handler = self._handlers.get((kind, itype, payload.xmlns, payload.name))
        if handler is None:
            router.bounce(stanza, StanzaError("service-unavailable", "this request is not supported here"))
            return None
        sender = try_jid(stanza.attrs.get("from"))
        if sender is None:
            return None
        return self._run(handler, IqRequest(stanza, itype, payload, sender, target, origin), router)

    async def _run(self, handler: IqHandler, request: IqRequest, router: Router) -> None:
        try:
            result = await handler(request)
        except StanzaError as exc:
            router.bounce(request.stanza, exc)
            return
        except Exception:
            log.exception("IQ handler failed on %s", request.stanza)
            router.bounce(request.stanza, StanzaError("internal-server-error",
                                                      "the server failed to handle this request"))
            return
        if result is not None:
            router.route(result)

    def expect_reply(self, iq_id: str) -> asyncio.Future[Element]:
        """A future for the reply to an IQ the server sends itself."""
        fut: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._pending[iq_id] = fut
        return fut

    def forget(self, iq_id: str) -> None:
        self._pending.pop(iq_id, None)
