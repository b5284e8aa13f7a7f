"""The one shape every feature module has: `setup(module: ModuleAPI)`.

A module registers hook handlers, IQ handlers and disco features through its `ModuleAPI`, opens
the stores it needs, and offers services to other modules (`provide`/`service`). It never touches
SQL, sockets or another module's internals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..protocol.xml import Element
from .hooks import DEFAULT
from .iq import HOST, IqHandler

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..storage import Storage
    from .accounts import AccountService
    from .bus import HookBus
    from .clock import Clock
    from .iq import IqDispatcher
    from .router import Router
    from .sessions import SessionManager

S = TypeVar("S")


@dataclass
class DiscoRegistry:
    """Features and identities the server advertises (XEP-0030), per target kind."""
    features: dict[str, list[str]] = field(default_factory=lambda: {"host": [], "account": []})
    identities: dict[str, list[tuple[str, str, str]]] = field(default_factory=lambda: {"host": [], "account": []})
    items: dict[str, list[tuple[str, str]]] = field(default_factory=dict)    # host -> [(jid, name)]
    # disco#info nodes answered with the same info as without a node (the XEP-0115 caps node)
    info_nodes: dict[str, set[str]] = field(default_factory=lambda: {"host": set(), "account": set()})
    # Nodes of the host answered by the module that owns them (XEP-0050 commands):
    # node -> fn(request, "info" | "items") -> the <query/> payload; see modules/adhoc.py.
    host_nodes: dict[str, Callable[[Any, str], Element]] = field(default_factory=dict)

    def add_info_node(self, target: str, node: str) -> None:
        self.info_nodes[target].add(node)

    def add_item(self, host: str, jid: str, name: str) -> None:
        entries = self.items.setdefault(host, [])
        if (jid, name) not in entries:
            entries.append((jid, name))

    def add_feature(self, var: str, target: str) -> None:
        if var not in self.features[target]:
            self.features[target].append(var)

    def add_identity(self, category: str, type_: str, name: str, target: str) -> None:
        ident = (category, type_, name)
        if ident not in self.identities[target]:
            self.identities[target].append(ident)


@dataclass
class ServerContext:
    """Everything app.py built that modules may use."""
    config: ServerConfig
    clock: Clock
    bus: HookBus
    router: Router
    sessions: SessionManager
    accounts: AccountService
    storage: Storage
    iq: IqDispatcher
    domains: set[str]
    disco: DiscoRegistry = field(default_factory=DiscoRegistry)
    services: dict[type, Any] = field(default_factory=dict)
    version: str = "0"
    hub: Any = None                         # core.hub.ClientHub: bind, close sessions
    http: Any = None                        # net.http.HttpService: HTTPS routes (upload, web)
    groups: Any = None                      # directory.groups.GroupService: groups per host (shared rosters)
    directory: Any = None                   # directory.sync.DirectoryService: what the company directory says of users
    permissions: Any = None                 # policy.permissions.Permissions: may this user use that feature?
    data_dir: Any = None                    # pathlib.Path of the server's data folder
    # compliance.journal.Journal when the compliance journal is on: the hub records every stanza
    # it accepts there before routing (record_stanza returns a StanzaError to refuse it).
    journal: Any = None
    # False in the worker processes other than worker 0 ([server] workers > 1): the services
    # that are not accounts (MUC, upload, the SOCKS5 proxy) run in worker 0, which the others
    # forward their stanzas to (core/partition.py); they only describe them (disco).
    runs_services: bool = True
    # Offered in <stream:features/> after authentication (stream management, CSI, ...).
    stream_features: list[Element] = field(default_factory=list)
    # Handlers for top-level elements that are not stanzas, by namespace: (connection, element)
    # -> bool or awaitable bool (False: not understood). See net/connection.py.
    nonza_handlers: dict[str, Callable[[Any, Element], Any]] = field(default_factory=dict)


class ModuleAPI:
    def __init__(self, name: str, ctx: ServerContext, options: Any = None) -> None:
        self.name = name
        self.ctx = ctx
        self.options = options
        self.log = logging.getLogger(f"stockade.modules.{name}")

    # shortcuts to the shared parts
    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def router(self) -> Router:
        return self.ctx.router

    @property
    def sessions(self) -> SessionManager:
        return self.ctx.sessions

    @property
    def accounts(self) -> AccountService:
        return self.ctx.accounts

    def on(self, hook: type, handler: Callable[..., Any], priority: int = DEFAULT) -> None:
        self.ctx.bus.on(hook, handler, priority)

    def on_iq(self, type_: str, xmlns: str, name: str, handler: IqHandler, target: str = HOST) -> None:
        self.ctx.iq.register(target, type_, xmlns, name, handler)

    def add_feature(self, var: str, target: str = HOST) -> None:
        self.ctx.disco.add_feature(var, target)

    def add_identity(self, category: str, type_: str, name: str, target: str = HOST) -> None:
        self.ctx.disco.add_identity(category, type_, name, target)

    def add_disco_item(self, host: str, jid: str, name: str = "") -> None:
        """List a service (e.g. conference.example.com) in disco#items of the host."""
        self.ctx.disco.add_item(host, jid, name)

    def add_stream_feature(self, element: Element) -> None:
        """Offer an element in the stream features after authentication."""
        self.ctx.stream_features.append(element)

    def on_nonza(self, xmlns: str, handler: Callable[[Any, Element], Any]) -> None:
        """Handle top-level elements of a namespace that are not stanzas (XEP-0198 <r/>, XEP-0352
        <active/>). The handler gets the connection (`.session`, `.authenticated`, `.adopt()`,
        `.send_element()`, `.close()`) and the element; it returns True when it understood it."""
        if xmlns in self.ctx.nonza_handlers:
            raise ValueError(f"a handler for {xmlns} elements is already registered")
        self.ctx.nonza_handlers[xmlns] = handler

    def open_store(self, name: str, kind: str) -> Any:
        """A store of this module's own: kind is "keyval", "map" or "archive"."""
        storage = self.ctx.storage
        if kind == "keyval":
            return storage.keyval(name)
        if kind == "map":
            return storage.map(name)
        if kind == "archive":
            return storage.archive(name)
        raise ValueError(f"unknown store kind {kind!r}")

    def send(self, stanza: Element) -> Any:
        """Route a stanza the server itself sends (its `from` must already be set)."""
        return self.ctx.router.route(stanza)

    def provide(self, service: Any) -> None:
        self.ctx.services[type(service)] = service

    def service(self, cls: type[S]) -> S:
        try:
            return self.ctx.services[cls]
        except KeyError:
            raise RuntimeError(f"module {self.name} needs {cls.__name__}; load the module that provides it first") from None
