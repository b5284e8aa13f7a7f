"""The composition root: builds and wires every component. Nothing else wires.

    server = Server(config)
    await server.start()        # storage, accounts, modules, listeners
    ...                         # server.ports tells what was bound
    await server.stop()         # <system-shutdown/> to clients, storage flushed
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from . import __version__
from .compliance.audit import AuditLog
from .config import ConfigError, ServerConfig, resolve_path
from .core.accounts import AccountService
from .core.password_policy import HISTORY_STORE, PasswordPolicy
from .core.lockouts import STORE as LOCKOUT_STORE, LockoutRegistry
from .core.revocation import STORE as REVOCATION_STORE, SessionRevocation
from .directory.groups import GroupService
from .directory.sync import DirectoryService
from .policy.permissions import STORE as PERMISSIONS_STORE, Permissions
from .core.auth import Authenticator, LoginThrottle, ThrottleLimits
from .core.bus import HookBus
from .core.clock import Clock, SystemClock
from .core.hooks import AccountLocked, AccountRemoved, ServerStarted, ServerStopping
from .core.hub import ClientHub
from .core.iq import IqDispatcher
from .core.module_api import ModuleAPI, ServerContext
from .core.router import Router
from .core.sessions import SessionManager
from .modules import DEFAULT_MODULES
from .net.c2s import C2SConnection, C2SContext
from .net.component import ComponentContext, ComponentConnection
from .net.http import HttpService
from .net.listener import listen
from .net.metrics import ServerCollector, StanzasReceived, count_connections, setup_metrics, subscribe_stanza_count
from .net.tls import ensure_self_signed, server_context, ALPN_CLIENT
from .protocol import ns
from .protocol.errors import StreamError
from .protocol.xml import Element
from .protocol.stream import StreamOptions
from .storage import Storage
from .web import setup_web
from .web.client import setup_client

log = logging.getLogger("stockade")

IDLE_SWEEP_INTERVAL = 10.0    # seconds; a connection silent for a whole interval is compacted


def release_free_memory() -> None:
    """Ask glibc to give freed heap memory back to the system (no-op elsewhere): thousands of
    parsers freed at once otherwise leave the process as large as at its peak."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def module_options() -> dict[str, type]:
    """Each module's Options class, for validating [modules.*] in the configuration."""
    return {name: mod.Options for name, mod in DEFAULT_MODULES.items() if hasattr(mod, "Options")}


class Server:
    def __init__(self, config: ServerConfig, *, clock: Clock | None = None, worker: Any = None) -> None:
        """`worker`: the net.workers.WorkerSpec of a worker started by worker 0 (None: this is
        the process `stockade serve` started)."""
        self.config = config
        self.worker_spec = worker
        self.node: Any = None            # worker_node.WorkerNode with [server] workers > 1
        self.failure: str | None = None  # why the node stopped on its own (a worker exited)
        self.clock = clock or SystemClock()
        self.data_dir = resolve_path(config, config.server.data_dir)
        self.ports: dict[str, int] = {}
        self.cert_path: Path | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._stopped = asyncio.Event()
        self._stopping = False
        self.storage: Storage | None = None

    # -- start ----------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot use the data folder {self.data_dir}: {exc.strerror}; "
                          f"check server.data_dir in {config.source}") from None
        url = config.storage.url or f"sqlite:///{self.data_dir / 'stockade.db'}"
        # Encryption at rest (storage/crypto.py): a damaged, missing or wrong master key stops
        # the start here (KeyFileError), before anything is written.
        from .storage.keyfile import load_keyring
        # On a SQLite file, each worker's archives in a file of their own (storage/archive_files.py):
        # the first worker moves archives between files if the number of workers changed.
        files = config.server.workers if self.worker_spec is None else None
        self.storage = storage = await Storage.open(url, keyring=load_keyring(config, self.data_dir),
                                                    archive_files=files)
        domains = set(config.domains)
        self.bus = bus = HookBus()
        self.sessions = sessions = SessionManager()
        self.audit = audit = AuditLog(storage.audit, self.clock)
        audit.subscribe(bus)
        self.accounts = accounts = AccountService(storage, domains, iterations=config.auth.scram_iterations,
                                                  min_password_length=config.auth.min_password_length,
                                                  audit=audit, policy=PasswordPolicy.from_config(
                                                      config, storage.keyval(HISTORY_STORE)))
        await accounts.load()
        self.iq = iq = IqDispatcher()
        self.router = router = Router(domains, sessions, bus, iq, accounts)
        router.configured_components = {c.domain for c in config.components}
        if config.server.workers > 1:
            from .worker_node import WorkerNode
            self.node = WorkerNode(config.server.workers, self.worker_spec, self._node_failed)
            router.partition = self.node.partition        # before the modules: they ask it
        self.ctx = ctx = ServerContext(config=config, clock=self.clock, bus=bus, router=router,
                                       sessions=sessions, accounts=accounts, storage=storage, iq=iq,
                                       domains=domains, version=__version__)
        if self.node is not None:
            ctx.runs_services = self.node.runs_services
        ctx.services[AuditLog] = audit
        # The compliance journal (compliance/journal.py): the hub records every stanza there.
        if config.journal.enabled:
            self.journal = ctx.journal = await self._start_journal(storage, audit)
            self.journal.subscribe(bus)
        accounts.on_removed.append(self._account_removed)
        # Groups and the company directory (directory/), before the modules: shared rosters follow groups.
        self.groups = ctx.groups = GroupService(storage, domains)
        await self.groups.load()
        accounts.on_removed.append(self.groups.member_removed)
        self.directory = DirectoryService(config, storage, accounts, self.groups, sessions)
        await self.directory.load()
        ctx.directory = self.directory
        if self.node is not None:       # a sync in worker 0: the others read its changes at once
            mesh = self.node.mesh
            self.directory.synced.append(lambda host: mesh.broadcast("directory", {"host": host}))
            self.node.on_directory_synced = self._directory_synced_elsewhere
        # Per-group feature permissions (policy/permissions.py): modules ask ctx.permissions.
        self.permissions = ctx.permissions = Permissions(config, self.groups, storage.keyval(PERMISSIONS_STORE),
                                                         router=router, audit=audit)
        await self.permissions.load()
        self.permissions.subscribe(bus)
        # Threat protection (policy/engine.py, docs/policy.md): each host's [hosts.policy], replaced
        # at runtime through the admin API; every control registers and gets each host's policy.
        from .policy.dlp import DlpControl, served_here
        from .policy.engine import STORE as POLICY_STORE, PolicyEngine
        from .policy.links import LinkControl
        from .policy.quarantine import QuarantineService
        from .policy.reporting import VerdictReporter
        self.policy_engine = ctx.services[PolicyEngine] = PolicyEngine(config, storage.keyval(POLICY_STORE), audit=audit)
        await self.policy_engine.load()
        VerdictReporter(audit, self.clock).subscribe(bus)
        self.quarantine = ctx.services[QuarantineService] = QuarantineService(storage, router, self.clock, audit=audit,
                                                                                   journal=ctx.journal)
        self.quarantine.subscribe(bus)
        self.dlp = DlpControl(self.groups, lambda domain: served_here(router, domain))
        self.dlp.subscribe(bus)
        self.policy_engine.register(self.dlp)
        self.links = LinkControl(config.domains)
        self.links.subscribe(bus)
        self.policy_engine.register(self.links)
        self.dlp.then = self.links.check        # a redacted or flagged message still meets the link policy
        # Administrator alerts (policy/alerts.py): audit entry + headline to [hosts.policy] alert_jids.
        from .policy.alerts import AdminAlerts
        self.alerts = ctx.services[AdminAlerts] = AdminAlerts(audit, router)
        self.policy_engine.register(self.alerts)
        # Uploaded files (policy/files.py, policy/malware.py): real type, size cap, malware scan.
        from .policy.files import FilePolicy
        self.file_policy = FilePolicy(self.groups, bus)
        self.file_policy.subscribe(bus)
        self.policy_engine.register(self.file_policy)
        if config.malware.enabled:
            from .policy.malware import MalwareScanner
            self.malware = MalwareScanner.from_config(config.malware, bus, ctx.services, audit)
            self.malware.subscribe(bus)
        self.hub = ctx.hub = ClientHub(ctx)
        self.http = ctx.http = HttpService()
        ctx.data_dir = self.data_dir
        self.http.default_host = next((i for i in config.http.interfaces if i not in ("*", "0.0.0.0", "::")), "")
        self.http.public_url = config.http.public_url
        self.modules: dict[str, ModuleAPI] = {}
        disabled = set(config.server.disabled_modules)
        unknown = disabled - set(DEFAULT_MODULES)
        if unknown:
            raise ConfigError(config.source, "server.disabled_modules",
                              f"unknown module(s) {', '.join(sorted(unknown))} (known: {', '.join(DEFAULT_MODULES)})")
        for name, mod in DEFAULT_MODULES.items():
            if name in disabled:
                continue
            api = ModuleAPI(name, ctx, config.modules.get(name))
            mod.setup(api)
            self.modules[name] = api
        # Retention and legal hold (compliance/retention.py, holds.py): after the modules, whose
        # upload catalog it purges; the scheduler starts with the other background tasks.
        self._setup_retention()
        self._setup_ediscovery()
        limits = ThrottleLimits(config.auth.max_failures_per_account, config.auth.max_failures_per_address,
                                config.auth.failure_window, config.auth.lockout)
        self.throttle = LoginThrottle(self.clock, limits)
        self.auth = Authenticator(accounts, self.throttle, bus)
        self.auth.external = self.directory          # PLAIN logins of directory users: LDAP bind
        # Lockouts and revocations an administrator lists or makes with `stockade user` (another
        # process on the same database): docs/account-security.md.
        self.lockouts = self.auth.lockouts = LockoutRegistry(storage.map(LOCKOUT_STORE), self.clock, self.throttle)
        bus.on(AccountLocked, self.lockouts.on_locked)
        await self.lockouts.restore()
        self.revocations = ctx.services[SessionRevocation] = SessionRevocation(
            storage.map(REVOCATION_STORE), self.clock, sessions)
        await self.revocations.load()
        self._setup_threat_controls()
        self._setup_live()
        if self.node is not None:
            self.node.attach(router, self.throttle, storage)
            # On SQLite every worker appends to the one journal (the archive: a file each).
            await self.node.start(shared_writes=storage.dialect == "sqlite" and config.journal.enabled,
                                  pin=config.server.pin_workers)
        await bus.fire_async(ServerStarted())
        await self._start_listeners()
        if self.node is not None:
            self.node.handoff.c2s = self.c2s_ctx
            self.c2s_ctx.handoff = self.node.handoff
            if self.node.is_first:
                await self.node.start_workers(config.source, self.ports)
            else:
                self.node.announce_ready()
        if not config.malware.enabled and "upload" not in config.server.disabled_modules and self.ctx.runs_services:
            log.warning("uploaded files are not scanned for malware: install clamav-daemon and set [malware] "
                        "enabled = true (docs/policy.md, \"Files and malware\")")
        self._background = [asyncio.ensure_future(self._check_accounts()),
                            asyncio.ensure_future(self._sweep_idle())]
        if hasattr(self, "admin") and self.admin.stanza_rate is not None:
            self._background.append(asyncio.ensure_future(self.admin.stanza_rate.run()))
        if self.node is not None and not self.node.is_first:
            # Retention, the search index and the directory's syncs run in worker 0; this worker
            # reads what they change (at once after a sync: worker_node.py, "directory").
            self.directory.start(refresh_interval=config.server.account_check_interval, sync=False)
            return
        self._background.append(asyncio.ensure_future(self.retention_scheduler.run()))
        journal = getattr(self, "journal", None)
        self._background.append(asyncio.ensure_future(self.search_index.run(
            config.ediscovery.index_interval, config.ediscovery.purge_sweep_interval, self.clock.monotonic,
            is_busy=journal.is_busy if journal is not None else None,
            is_behind=journal.is_behind if journal is not None else None)))
        self.directory.start(refresh_interval=config.server.account_check_interval)

    async def _start_journal(self, storage: Storage, audit: AuditLog) -> Any:
        """The journal with its checkpoint signing key; a bad key stops the start (ConfigError)."""
        from .compliance.journal import Journal
        from .compliance.journal_verify import DEFAULT_KEY_NAME, SigningKeyError, load_signing_key
        config = self.config
        given = config.journal.signing_key_path
        path = resolve_path(config, given) if given else self.data_dir / "keys" / DEFAULT_KEY_NAME
        try:
            key = load_signing_key(path, create=not given)
        except SigningKeyError as exc:
            raise ConfigError(config.source, "journal.signing_key_path", str(exc)) from None
        journal = Journal(storage, self.clock, key, audit=audit,
                          checkpoint_every=config.journal.checkpoint_every,
                          on_failure=config.journal.on_failure,
                          host_on_failure={h.domain: h.journal_on_failure for h in config.hosts
                                           if h.journal_on_failure is not None})
        await journal.start()
        return journal

    def _setup_retention(self) -> None:
        from .compliance.holds import STORE as HOLDS_STORE, LegalHolds
        from .compliance.retention import Retention, RetentionScheduler
        from .modules.upload.catalog import Catalog
        storage, ctx = self.storage, self.ctx
        assert storage is not None
        self.holds = ctx.services[LegalHolds] = LegalHolds(storage.map(HOLDS_STORE), self.groups, self.audit,
                                                           self.clock, ctx.domains)
        self.accounts.removal_guards.append(self.holds.removal_refusal)     # no removal under hold
        self.retention = ctx.services[Retention] = Retention(self.config, storage.retention(), self.groups,
                                                             self.holds, self.audit, self.clock,
                                                             catalog=ctx.services.get(Catalog), journal=ctx.journal)
        self.retention_scheduler = RetentionScheduler(self.retention)
        from .modules.offline import OfflineStore
        offline = ctx.services.get(OfflineStore)
        if offline is not None:
            self.retention.on_purged.append(offline.forget_counts)

    def _setup_live(self) -> None:
        """What the admin API reads and ends of the live sessions, and how this process reads
        again what it changed in the database; with several workers, worker 0 asks the others
        (admin/live.py)."""
        from .admin.live import LiveSessions
        from .modules.approved_clients import ApprovedClients
        self.live = live = LiveSessions(self.sessions, self.revocations,
                                        approved_clients=self.ctx.services.get(ApprovedClients),
                                        stanzas_received=self._stanzas_received())
        live.rereaders = {"accounts": self._read_account_changes, "groups": self.directory.refresh_all,
                          "permissions": self.permissions.refresh, "policy": self.policy_engine.load}
        if self.node is not None:
            live.node = self.node
            self.node.answers.update(live.answers())

    def _setup_threat_controls(self) -> None:
        """Floods and worms, unsolicited contact, impostors (policy/flood.py, contact.py,
        impostor.py): after the modules (they use the roster) and the lockouts (suspension)."""
        from .modules.roster import RosterService
        from .policy.contact import ContactControl
        from .policy.flood import AccountSuspension, FloodControl
        from .policy.impostor import SEEN_STORE, ImpostorControl
        ctx, bus = self.ctx, self.bus
        roster = ctx.services.get(RosterService)
        suspend = AccountSuspension(self.throttle, bus, self.sessions, self.clock)
        self.flood = FloodControl(self.clock, self.alerts, self.sessions, self.groups, suspend)
        self.contact = ContactControl(self.router, self.groups, roster)
        self.impostor = ImpostorControl(ctx.domains, self.accounts, roster, self.storage.map(SEEN_STORE))
        for control in (self.flood, self.contact, self.impostor):
            control.subscribe(bus)
            self.policy_engine.register(control)

    def _setup_ediscovery(self) -> None:
        """eDiscovery (compliance/ediscovery.py): the search index follows the journal in the
        background; a search first commits what the journal has queued and catches up."""
        from .compliance.ediscovery import EDiscovery, upload_reader
        from .compliance.search_index import SearchIndex
        storage = self.storage
        assert storage is not None
        journal = getattr(self, "journal", None)
        self.search_index = SearchIndex(storage, batch=self.config.ediscovery.index_batch)
        self.ediscovery = self.ctx.services[EDiscovery] = EDiscovery(
            storage, self.audit, self.clock, index=self.search_index,
            before_search=journal.flush if journal is not None else None,
            files=upload_reader(self.data_dir, storage.cipher))

    def _tls_files(self) -> tuple[Path, Path]:
        tls = self.config.tls
        if tls.cert_path:
            return resolve_path(self.config, tls.cert_path), resolve_path(self.config, tls.key_path)
        return ensure_self_signed(self.data_dir / "certs", [*self.config.domains, "localhost"])

    async def _start_listeners(self) -> None:
        config = self.config
        cert, key = self._tls_files()
        self.cert_path = cert
        starttls_ctx = server_context(cert, key, min_version=config.tls.min_version, ciphers=config.tls.ciphers)
        direct_ctx = server_context(cert, key, min_version=config.tls.min_version, ciphers=config.tls.ciphers,
                                    alpn=[ALPN_CLIENT])
        c2s = config.c2s
        domains = self.ctx.domains

        # Stream features offered after authentication (RFC 6121 2.6 and 3.4).
        extra = [Element("ver", ns.ROSTER_VERSIONING), Element("sub", ns.PRE_APPROVAL), *self.ctx.stream_features]

        # Called once per kind of connection: C2SContext.options_for shares the result.
        def stream_options(direct: bool) -> StreamOptions:
            return StreamOptions(is_host_served=domains.__contains__, tls_available=True,
                                 tls_required=c2s.require_tls, is_secure=direct,
                                 mechanisms=tuple(config.auth.mechanisms), max_stanza_size=c2s.max_stanza_size,
                                 max_depth=c2s.max_depth, max_attrs=c2s.max_attributes, extra_features=extra)

        self.c2s_ctx = c2s_ctx = C2SContext(hub=self.hub, auth=self.auth, stream_options=stream_options,
                                            tls_context=starttls_ctx, negotiation_timeout=c2s.negotiation_timeout,
                                            max_per_address=c2s.max_connections_per_address,
                                            max_write_buffer=c2s.max_write_buffer)
        c2s_ctx.nonza_handlers = self.ctx.nonza_handlers
        c2s_ctx.writes = self.storage.backlog      # pause client input while the writers catch up
        if c2s.new_connections_per_minute:     # new connections per minute from one address (net/c2s.py)
            from .policy.flood import ConnectionRate
            c2s_ctx.limits.rate = ConnectionRate(self.clock, c2s.new_connections_per_minute).admit
        if self.node is not None:              # one worker counts each address (net/address_gate.py)
            from .net.address_gate import AddressGate
            c2s_ctx.address_gate = self.node.address_gate = AddressGate(
                self.node.index, self.node.count, self.node.mesh, c2s_ctx.limits)
        # Several workers share each port (SO_REUSEPORT); the ones worker 0 started take the
        # ports it bound (chosen by the system when the configuration says 0).
        shared = self.node is not None
        given = self.worker_spec.ports if self.worker_spec is not None else {}
        servers, port = await listen(lambda: C2SConnection(c2s_ctx, False), c2s.interfaces, given.get("c2s", c2s.port),
                                     name="c2s", reuse_port=shared)
        self._servers += servers
        self.ports["c2s"] = port
        if c2s.direct_tls:
            servers, port = await listen(lambda: C2SConnection(c2s_ctx, True), c2s.interfaces,
                                         given.get("c2s_direct_tls", c2s.direct_tls_port),
                                         ssl_context=direct_ctx, name="c2s direct TLS", reuse_port=shared)
            self._servers += servers
            self.ports["c2s_direct_tls"] = port
        comp = config.component_listener
        # With several workers, worker 0 alone accepts components: stanzas for their domains go
        # there like those for the other services (core/partition.py).
        if (comp.enabled or config.components) and self.ctx.runs_services:
            self.component_ctx = cctx = ComponentContext(
                router=self.router, secrets={c.domain: c.secret for c in config.components},
                negotiation_timeout=c2s.negotiation_timeout, max_stanza_size=c2s.max_stanza_size)
            cctx.journal = self.ctx.journal
            cctx.writes = self.storage.backlog     # pause component input while the writers catch up
            cctx.tenant_of = self._component_tenant
            servers, port = await listen(lambda: ComponentConnection(cctx), comp.interfaces, comp.port,
                                         name="components")
            self._servers += servers
            self.ports["component"] = port
        # With several workers, worker 0 alone serves HTTPS: WebSocket clients move on to their
        # account's worker after SASL (net/handoff.py); the admin API asks the other workers
        # about their sessions (admin/live.py).
        if config.http.enabled and self.ctx.runs_services:
            http = self.http
            setup_web(http, c2s_ctx, public_url=config.http.public_url, websocket_path=config.http.websocket_path,
                      allowed_origins=config.http.websocket_origins)
            if config.http.web_client:
                dist = resolve_path(config, config.http.web_client_path) if config.http.web_client_path else None
                setup_client(http, dist=dist, domain=config.domains[0], websocket_path=config.http.websocket_path,
                             public_url=config.http.public_url)
            if config.http.metrics:
                self._setup_metrics()
            self._setup_admin()
            https_ctx = server_context(cert, key, min_version=config.tls.min_version, ciphers=config.tls.ciphers,
                                       alpn=["http/1.1"])
            self.ports["https"] = await http.start(config.http.interfaces, config.http.port, https_ctx,
                                                   max_message_size=c2s.max_stanza_size)
        elif config.http.enabled and config.http.metrics and self.node is not None:
            self.node.answers["metrics"] = self._metrics_collector().figures     # worker 0 asks
        for name, port in self.ports.items():
            log.info("listening for %s on port %d", name, port)

    def _component_tenant(self, component: str, to: str | None) -> str:
        """The host a component's stanza is journaled under: the recipient's, when this server
        serves it; else the host the component's domain is a subdomain of; else the component's."""
        from .protocol.jid import try_jid
        domains = self.ctx.domains
        target = try_jid(to) if to else None
        if target is not None and target.domain in domains:
            return target.domain
        return next((d for d in sorted(domains, key=len, reverse=True) if component.endswith("." + d)), component)

    def _stanzas_received(self) -> StanzasReceived:
        """The one received-stanza total, read by the metrics and the admin dashboard."""
        if not hasattr(self, "stanzas_received"):
            self.stanzas_received = StanzasReceived(self.sessions)
            subscribe_stanza_count(self.bus, self.stanzas_received)
        return self.stanzas_received

    def _setup_metrics(self) -> None:
        node = self.node
        elsewhere = None if node is None else lambda: node.ask_others("metrics")
        self.metrics = setup_metrics(self.http, self._metrics_collector(), token=self.config.http.metrics_token,
                                     elsewhere=elsewhere)

    def _metrics_collector(self) -> ServerCollector:
        stanzas = self._stanzas_received()
        components = self.component_ctx.connections if hasattr(self, "component_ctx") else ()
        storage = self.storage
        assert storage is not None
        collector = ServerCollector(
            connections=lambda: count_connections(self.c2s_ctx.connections, components),
            sessions=lambda: len(self.sessions), stanzas_received=stanzas,
            auth_failures=lambda: self.auth.failures_total,
            archive_batches_committed=lambda: storage.archive_batches_committed,
            audit_write_failures=lambda: self.audit.failed_writes,
            input_paused=lambda: (storage.backlog.pauses, storage.backlog.paused_seconds),
            **self._security_metrics())
        return collector

    def _security_metrics(self) -> dict[str, Any]:
        """The ServerCollector's sources of the malware scanner, alerts, verdicts and journal."""
        from .net.metrics import VerdictCounts, subscribe_verdict_count
        verdicts = VerdictCounts()
        subscribe_verdict_count(self.bus, verdicts)
        scanner = getattr(self, "malware", None)
        journal = getattr(self, "journal", None)
        return {"verdicts": verdicts, "alerts": lambda: dict(self.alerts.counts),
                "malware": None if scanner is None else lambda: (scanner.scanned, scanner.infected,
                                                                 scanner.unavailable),
                "journal": None if journal is None else lambda: (journal.records_committed, journal.is_failing)}

    def _setup_admin(self) -> None:
        """The admin API at /api/v1 and the web console at /admin (admin/, docs/admin.md)."""
        from .admin.actions import AdminActions, StanzaRate
        from .admin.api import build_api, mount
        from .admin.console import build_console
        from .admin.identities import AdminDirectory
        from .modules.approved_clients import ApprovedClients
        storage = self.storage
        assert storage is not None
        live = self.live
        self.admin = AdminActions(
            directory=AdminDirectory(storage, self.clock, self.ctx.domains), accounts=self.accounts,
            live=live, groups=self.groups, audit=self.audit, lockouts=self.lockouts,
            clock=self.clock, domains=self.ctx.domains,
            approved_clients=self.ctx.services.get(ApprovedClients), permissions=self.permissions,
            stanza_rate=StanzaRate(self._stanzas_received() if self.node is None else live.stanzas, self.clock),
            ediscovery=getattr(self, "ediscovery", None))
        from .admin.retention import RetentionAdmin
        self.admin.retention = RetentionAdmin(self.admin, self.holds, self.retention)
        from .admin.policy import PolicyAdmin
        # Review of quarantined uploads (policy/file_quarantine.py): needs the upload catalog.
        from .modules.upload.catalog import Catalog
        from .policy.file_quarantine import FileQuarantine
        catalog = self.ctx.services.get(Catalog)
        self.file_quarantine = None if catalog is None else FileQuarantine(
            storage, catalog, audit=self.audit, scanner=getattr(self, "malware", None), journal=self.ctx.journal,
            holds=getattr(self, "holds", None))
        if self.file_quarantine is not None:
            self.file_quarantine.subscribe(self.bus)
        self.admin.policy = PolicyAdmin(self.admin, self.policy_engine, self.quarantine, self.file_quarantine)
        mount(self.http, "/api/v1", build_api(self.admin, __version__))
        mount(self.http, "/admin", build_console(self.admin))

    async def _check_accounts(self) -> None:
        interval = self.config.server.account_check_interval
        while True:
            await asyncio.sleep(interval)
            await self._read_account_changes()

    async def _read_account_changes(self) -> None:
        """Accounts removed and sessions revoked by another process (the CLI, worker 0)."""
        try:
            for host, username in await self.accounts.reconcile():
                log.info("account %s@%s was removed outside the server; its sessions were ended", username, host)
            await self.revocations.poll()        # `stockade user revoke`
        except Exception:
            log.exception("checking accounts failed")

    async def _sweep_idle(self) -> None:
        """Idle connections give back their XML parsers (most of their memory), and the memory
        freed goes back to the operating system."""
        while True:
            await asyncio.sleep(IDLE_SWEEP_INTERVAL)
            compacted = 0
            for conn in list(self.c2s_ctx.connections):
                compacted += conn.compact_if_idle()
            if compacted:
                release_free_memory()

    def _directory_synced_elsewhere(self) -> None:
        """Worker 0 synced the company directory: read the accounts, users and groups it changed."""
        async def refresh() -> None:
            await self._read_account_changes()
            await self.directory.refresh_all()
        task = asyncio.ensure_future(refresh())
        self._background.append(task)
        task.add_done_callback(self._background.remove)

    def _node_failed(self, reason: str) -> None:
        """A worker process of this node is gone: stop the node (see worker_node.py)."""
        if self._stopping:
            return
        log.error("%s: stopping every worker of this node", reason)
        self.failure = reason
        asyncio.ensure_future(self.stop(f"the server is restarting ({reason})"))

    async def _account_removed(self, host: str, username: str) -> None:
        from .protocol.jid import JID
        for session in self.sessions.of_user(JID(username, host, None)):
            session.close(StreamError("not-authorized", "your account was removed"))
        await self.bus.fire_async(AccountRemoved(host, username))

    # -- stop -----------------------------------------------------------------------------------
    async def stop(self, reason: str = "the server is shutting down") -> None:
        """Graceful shutdown: stop listening, tell every client, let modules and storage flush."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        for task in getattr(self, "_background", []):
            task.cancel()
        if self.node is not None:
            self.node.terminate()
        if hasattr(self, "directory"):
            await self.directory.stop()
        for server in self._servers:
            server.close()
        error = StreamError("system-shutdown", reason)
        if hasattr(self, "http"):
            self._http_stop = asyncio.ensure_future(self.http.stop())
        for conn in list(self.c2s_ctx.connections) if hasattr(self, "c2s_ctx") else []:
            conn.close(error)
        if hasattr(self, "component_ctx"):
            for conn in list(self.component_ctx.connections):
                conn.close(error)
        grace = self.config.server.shutdown_grace
        try:
            await asyncio.wait_for(self._drain(), grace)
        except asyncio.TimeoutError:
            log.warning("sessions did not finish within %.1f s", grace)
        if hasattr(self, "_http_stop"):
            await self._http_stop
        if self.node is not None:
            await self.node.stop(grace)
        if hasattr(self, "bus"):
            await self.bus.fire_async(ServerStopping())
        if self.storage is not None:
            await self.storage.close()
        self._stopped.set()
        log.info("stopped")

    async def _drain(self) -> None:
        # Let SessionClosed handlers run (unavailable presence, offline storage of queued stanzas)
        # and any stanza still being processed finish.
        for session in list(self.sessions):
            if session.channel.connection is None:      # hibernating (XEP-0198): nobody to tell
                self.c2s_ctx.spawn(self.hub.close_session(session, "server shutdown"))
        while True:
            tasks = set(self.c2s_ctx.tasks) if hasattr(self, "c2s_ctx") else set()
            if not tasks and not len(self.sessions):
                return
            if tasks:
                await asyncio.wait(tasks)
            else:
                await asyncio.sleep(0.01)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def info(self) -> dict[str, Any]:
        return {"ports": dict(self.ports), "domains": sorted(self.ctx.domains), "sessions": len(self.sessions)}
