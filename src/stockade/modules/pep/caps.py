"""XEP-0115: Entity Capabilities, as PEP uses them to learn which nodes a session wants
notifications for ("filtered notifications", XEP-0163 section 4.2): every disco feature
'<node>+notify' the client advertises.

When a session sends broadcast presence with <c node ver hash/>, the interests are taken from the
cache of verified 'ver' strings; on a miss the server asks the client itself (disco#info to the
full JID, node 'node#ver') in a background task, so the presence is not held up by the answer
(which arrives on the same connection and could not be read before the presence is handled).

A 'ver' is cached for everyone only when the answer hashes to it (XEP-0115 5.1 and 5.4) with a
hash function of at least SHA-1 strength: a client that lies about its capabilities affects
nothing but its own notifications. Legacy caps (no 'hash') and answers that do not verify are
used for that session alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ...core.hooks import PresenceFromClient, SessionAvailable, SessionClosed
from ...core.module_api import ModuleAPI
from ...core.sessions import ClientSession
from ...protocol import ns
from ...protocol.xml import Element

HASHES = {"sha-1": hashlib.sha1, "sha-224": hashlib.sha224, "sha-256": hashlib.sha256,
          "sha-384": hashlib.sha384, "sha-512": hashlib.sha512}
NOTIFY = "+notify"
MAX_FEATURES = 2000          # a disco#info answer with more is not believed
MAX_VER = 256

Interests = frozenset[str]


@dataclass
class SessionCaps:
    """What PEP knows about one session."""
    key: tuple[str, str, str] | None = None       # (caps node, hash, ver) last announced
    interests: Interests = frozenset()            # node names with '+notify'
    pushed: set[str] = field(default_factory=set) # nodes whose last items this session got
    task: asyncio.Task[None] | None = None


def verification_string(query: Element) -> str | None:
    """The S of XEP-0115 5.1 for a disco#info result, or None when 5.4 calls it ill-formed."""
    identities = []
    for ident in query.elements("identity", ns.DISCO_INFO):
        identities.append("/".join((ident.get("category", ""), ident.get("type", ""),
                                    ident.get("xml:lang", ""), ident.get("name", ""))))
    features = [f.get("var", "") for f in query.elements("feature", ns.DISCO_INFO)]
    if len(set(identities)) != len(identities) or len(set(features)) != len(features):
        return None
    parts = [s + "<" for s in sorted(identities)] + [f + "<" for f in sorted(features)]
    forms: dict[str, list[str]] = {}
    for x in query.elements("x", ns.DATA_FORMS):
        fields = list(x.elements("field", ns.DATA_FORMS))
        form_type = next((f for f in fields if f.get("var") == "FORM_TYPE"), None)
        if form_type is None or form_type.get("type") != "hidden":
            continue                                    # 5.4: such a form is ignored
        type_values = [v.text for v in form_type.elements("value", ns.DATA_FORMS)]
        name = type_values[0] if type_values else ""
        if name in forms:
            return None
        out = [name + "<"]
        for f in sorted((f for f in fields if f.get("var") != "FORM_TYPE"), key=lambda f: f.get("var", "")):
            out.append(f.get("var", "") + "<")
            out.extend(v + "<" for v in sorted(v.text for v in f.elements("value", ns.DATA_FORMS)))
        forms[name] = out
    for name in sorted(forms):
        parts.extend(forms[name])
    return "".join(parts)


def compute_ver(query: Element, algorithm: str) -> str | None:
    hash_fn = HASHES.get(algorithm)
    s = verification_string(query)
    if hash_fn is None or s is None:
        return None
    return base64.b64encode(hash_fn(s.encode()).digest()).decode()


def interests_of(query: Element) -> Interests | None:
    features = [f.get("var", "") for f in query.elements("feature", ns.DISCO_INFO)]
    if len(features) > MAX_FEATURES:
        return None
    return frozenset(f[:-len(NOTIFY)] for f in features if f.endswith(NOTIFY) and len(f) > len(NOTIFY))


class CapsTracker:
    """Per-session notification interests. `on_interests(session, nodes)` is called (awaited) with
    the nodes a newly available session, or a session whose capabilities changed, newly wants."""

    def __init__(self, module: ModuleAPI, on_interests: Callable[[ClientSession, set[str]], Awaitable[None]],
                 *, timeout: float, cache_size: int) -> None:
        self.module = module
        self.on_interests = on_interests
        self.timeout = timeout
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Interests] = OrderedDict()   # (hash, ver) -> interests
        self._tasks: set[asyncio.Task[None]] = set()

    def state(self, session: ClientSession) -> SessionCaps:
        state = session.extra.get(self.module.name)
        if state is None:
            state = session.extra[self.module.name] = SessionCaps()
        return state

    def interested(self, session: ClientSession, node: str) -> bool:
        state = session.extra.get(self.module.name)
        return state is not None and node in state.interests

    # -- hooks ----------------------------------------------------------------------------------
    async def presence_from_client(self, event: PresenceFromClient) -> None:
        """Runs before the presence module and never ends the chain."""
        stanza = event.stanza
        if event.to is not None or stanza.attrs.get("type") is not None:
            return None
        c = stanza.find("c", ns.CAPS)
        if c is None:
            return None     # nothing announced: what we knew still holds
        session = event.session
        node, algorithm, ver = c.get("node", "") or "", c.get("hash", "") or "", c.get("ver", "") or ""
        if not ver or len(ver) > MAX_VER or len(node) > 1024:
            return None
        state = self.state(session)
        key = (node, algorithm, ver)
        if state.key == key:
            return None
        state.key = key
        if state.task is not None:
            state.task.cancel()
            state.task = None
        cached = self._cache.get((algorithm, ver)) if algorithm in HASHES else None
        if cached is not None:
            self._cache.move_to_end((algorithm, ver))
            state.interests = cached
            if session.is_available:        # not initial presence: SessionAvailable will not come
                self._spawn(self._push(session))
            return None
        state.task = self._spawn(self._discover(session, key))
        return None

    async def session_available(self, event: SessionAvailable) -> None:
        await self._push(event.session)

    async def session_closed(self, event: SessionClosed) -> None:
        state = event.session.extra.get(self.module.name)
        if state is not None and state.task is not None:
            state.task.cancel()

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- discovery ------------------------------------------------------------------------------
    async def _discover(self, session: ClientSession, key: tuple[str, str, str]) -> None:
        node, algorithm, ver = key
        query = await self._ask(session, f"{node}#{ver}")
        state = self.state(session)
        if query is None or state.key != key:
            return
        interests = interests_of(query)
        if interests is None:
            return
        if algorithm in HASHES and compute_ver(query, algorithm) == ver:
            self._cache[(algorithm, ver)] = interests
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        elif algorithm:
            self.module.log.info("capabilities of %s do not match their 'ver'; used for that session only",
                                 session.jid)
        state.interests = interests
        state.task = None
        await self._push(session)

    async def _ask(self, session: ClientSession, node: str) -> Element | None:
        """disco#info to the session's full JID; the answer's <query/>, or None."""
        iq_id = "pep-caps-" + secrets.token_hex(8)
        iq = Element("iq", ns.CLIENT, {"type": "get", "id": iq_id, "from": session.host, "to": str(session.jid)})
        iq.add("query", ns.DISCO_INFO, {"node": node})
        dispatcher = self.module.ctx.iq
        reply_future = dispatcher.expect_reply(iq_id)
        try:
            pending = self.module.send(iq)
            if pending is not None:
                await pending
            reply = await asyncio.wait_for(reply_future, self.timeout)
        except asyncio.TimeoutError:
            self.module.log.debug("%s did not answer the capabilities query in time", session.jid)
            return None
        finally:
            dispatcher.forget(iq_id)
        # The reply is matched by its random id; check it also comes from the session asked.
        if reply.attrs.get("type") != "result" or reply.attrs.get("from") != str(session.jid):
            return None
        return reply.find("query", ns.DISCO_INFO)

    async def _push(self, session: ClientSession) -> None:
        state = self.state(session)
        if not session.is_available or session.is_closed:
            return
        state.pushed &= state.interests     # an interest dropped and announced again counts as new
        new = set(state.interests) - state.pushed
        if not new:
            return
        state.pushed |= new         # before awaiting: a concurrent push does not repeat these
        await self.on_interests(session, new)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            self.module.log.exception("learning capabilities failed")
