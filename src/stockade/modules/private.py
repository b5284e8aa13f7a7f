"""XEP-0049: Private XML Storage.

A user stores any XML fragment qualified by its own namespace and reads it back; nobody else can
do either (<forbidden/>). Fragments are kept per (namespace, element name), one map-store key each,
so that <storage xmlns='storage:bookmarks'/> and <storage xmlns='storage:rosternotes'/> are two
independent documents. Reserved namespaces ('jabber:*', 'http://jabber.org/*', 'vcard-temp') are
refused with <not-acceptable/> (XEP-0049 section 2.3): they belong to protocols with their own
storage.

Other modules read and write the same documents through `PrivateStorage` and may `watch` a
fragment to hear when a client replaced it (bookmark conversion, XEP-0411).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from ..config.options import option
from ..core.hooks import AccountRemoved
from ..core.iq import ACCOUNT, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol.errors import StanzaError
from ..protocol.jid import JID
from ..protocol.xml import Element, XmlError, parse

NS_PRIVATE = "jabber:iq:private"
RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")
RESERVED = frozenset({"vcard-temp"})


@dataclass(frozen=True)
class Options:
    max_size: int = option(65536, help="Largest private XML fragment accepted, in bytes.", min=1024, max=16 * 1024 * 1024)
    max_fragments: int = option(100, help="Most private XML fragments (namespace and element pairs) one account keeps.", min=1, max=100_000)


Watcher = Callable[[JID, Element], Awaitable[None]]


def _key(xmlns: str, name: str) -> str:
    return f"{{{xmlns}}}{name}"


def is_reserved(xmlns: str) -> bool:
    return xmlns in RESERVED or xmlns.startswith(RESERVED_PREFIXES)


class PrivateStorage:
    """The private XML documents of every account."""

    def __init__(self, module: ModuleAPI, options: Options) -> None:
        self.module = module
        self.options = options
        self.store = module.open_store("private", "map")
        self._watchers: dict[tuple[str, str], list[Watcher]] = {}

    def watch(self, xmlns: str, name: str, watcher: Watcher) -> None:
        """Call `watcher(owner, element)` after a client stored this fragment."""
        self._watchers.setdefault((xmlns, name), []).append(watcher)

    async def get(self, owner: JID, xmlns: str, name: str) -> Element | None:
        stored = await self.store.get(owner.domain, owner.local, _key(xmlns, name))
        if stored is None:
            return None
        try:
            return parse(stored)
        except XmlError:
            self.module.log.error("the private fragment {%s}%s of %s cannot be read", xmlns, name, owner)
            return None

    async def put(self, owner: JID, element: Element) -> None:
        """Store one fragment for the server's own purposes (no watcher is told)."""
        await self.store.set(owner.domain, owner.local, _key(element.xmlns, element.name),
                             element.serialize("").decode())

    # -- the IQ protocol ------------------------------------------------------------------------
    async def handle_get(self, request: IqRequest) -> Element:
        self._check_owner(request)
        children = list(request.payload.elements())
        if len(children) != 1:
            raise StanzaError("bad-request", "ask for exactly one element, e.g. <storage xmlns='storage:bookmarks'/>")
        wanted = children[0]
        self._check_namespace(wanted)
        stored = await self.get(request.target, wanted.xmlns, wanted.name)
        query = Element("query", NS_PRIVATE)
        query.append(stored if stored is not None else Element(wanted.name, wanted.xmlns))
        return request.result(query)

    async def handle_set(self, request: IqRequest) -> Element:
        self._check_owner(request)
        children = list(request.payload.elements())
        if not children:
            raise StanzaError("not-acceptable", "store at least one element qualified by its own namespace")
        updates: dict[str, str | None] = {}
        for child in children:
            self._check_namespace(child)
            data = child.serialize("")
            if len(data) > self.options.max_size:
                raise StanzaError("not-acceptable", f"<{child.name} xmlns='{child.xmlns}'/> is {len(data)} bytes; "
                                                    f"this server keeps at most {self.options.max_size}")
            updates[_key(child.xmlns, child.name)] = data.decode()
        owner = request.target
        existing = await self.store.get_all(owner.domain, owner.local)
        if len(set(existing) | set(updates)) > self.options.max_fragments:
            raise StanzaError("not-acceptable", f"an account keeps at most {self.options.max_fragments} "
                                                f"private XML fragments")
        await self.store.set_many(owner.domain, owner.local, updates)       # all or nothing
        for child in children:
            for watcher in self._watchers.get((child.xmlns, child.name), ()):
                try:
                    await watcher(owner, child)
                except Exception:
                    # Stored is stored: a mirror that failed must not turn the answer into an error.
                    self.module.log.exception("mirroring private XML {%s}%s of %s failed",
                                              child.xmlns, child.name, owner)
        return request.result()

    @staticmethod
    def _check_owner(request: IqRequest) -> None:
        if not request.is_own_account:
            raise StanzaError("forbidden", "private XML storage belongs to its account alone")

    @staticmethod
    def _check_namespace(child: Element) -> None:
        if not child.xmlns or child.xmlns == NS_PRIVATE:
            raise StanzaError("not-acceptable", "a private XML fragment needs a namespace of its own")
        if is_reserved(child.xmlns):
            raise StanzaError("not-acceptable", f"the namespace {child.xmlns!r} is reserved and cannot be "
                                                f"stored as private XML")

    async def account_removed(self, event: AccountRemoved) -> None:
        await self.store.delete_all(event.host, event.username)


def setup(module: ModuleAPI) -> None:
    private = PrivateStorage(module, module.options or Options())
    module.provide(private)
    module.add_feature(NS_PRIVATE, target=ACCOUNT)
    module.on_iq("get", NS_PRIVATE, "query", private.handle_get, target=ACCOUNT)
    module.on_iq("set", NS_PRIVATE, "query", private.handle_set, target=ACCOUNT)
    module.on(AccountRemoved, private.account_removed)
