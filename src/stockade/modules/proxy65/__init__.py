"""XEP-0065: SOCKS5 Bytestreams, the proxy (a streamhost on proxy.<domain>).

Two users who cannot reach each other directly (both behind the company's firewall rules, or
the policy forbids peer-to-peer connections) both connect to this proxy, and it joins the two
TCP connections once the initiator activates the bytestream over XMPP. The proxy only ever
pairs connections made to it; it never connects anywhere itself.

Where things are:
    socks5.py    the SOCKS5 handshake XEP-0065 uses (sans-IO)
    relay.py     the TCP connections: pairing by address, activation, relaying, limits, timeouts
    service.py   the in-process service on proxy.<domain>: disco, streamhost, activation

Off by default: it opens another port, and what goes through it is not scanned the way HTTP
uploads (XEP-0363) are.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ...config.options import ConfigError, option
from ...core.hooks import ServerStarted, ServerStopping
from ...core.module_api import ModuleAPI
from ...net.listener import listen
from ...protocol.jid import InvalidJid, normalise_domain
from .relay import Limits, Relay
from .service import ProxyService

WILDCARDS = ("*", "0.0.0.0", "::")


def _check_subdomain(value: str) -> str | None:
    if not value or "." in value:
        return "give one DNS label, like proxy (the service is <label>.<domain>)"
    try:
        normalise_domain(value + ".example.com")
    except InvalidJid as exc:
        return str(exc)
    return None if value == value.lower() else "write the label in lower case"


def _check_interfaces(value: list[str]) -> str | None:
    for addr in value:
        if addr in WILDCARDS or addr == "localhost":
            continue
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            return f"{addr!r} is not an IP address (use 0.0.0.0 or :: for every interface)"
    return None if value else "give at least one address"


@dataclass(frozen=True)
class Options:
    enabled: bool = option(False, help="Run the SOCKS5 bytestream proxy (XEP-0065) on proxy.<domain> for file "
                                       "transfers between clients that cannot connect to each other.")
    subdomain: str = option("proxy", help="The proxy of each served domain is <subdomain>.<domain>.",
                            check=_check_subdomain)
    interfaces: list[str] = option(help="Addresses the SOCKS5 listener binds to.", factory=lambda: ["127.0.0.1"],
                                   check=_check_interfaces)
    port: int = option(7777, help="SOCKS5 port. 0 lets the system choose (tests).", min=0, max=65535)
    public_host: str = option("", help="Host name or address clients connect to (behind NAT, or when listening "
                                       "on every interface). Empty: the first interface.")
    activation_timeout: float = option(60.0, help="Seconds a connection may wait to be paired and activated "
                                                  "before it is closed.", min=0.1, max=3600.0)
    max_connections: int = option(1000, help="SOCKS5 connections open at once, paired or not; more are refused.",
                                  min=2, max=1_000_000)
    max_transfers_per_user: int = option(5, help="Activated transfers one user may have at once; activating "
                                                 "another is refused with <resource-constraint/>.", min=1, max=1000)
    max_bytes_per_transfer: int = option(1 << 30, help="Bytes one transfer may relay (both directions together) "
                                                       "before both connections are closed. 0: no limit.",
                                         min=0, max=1 << 50)

    def __post_init__(self) -> None:
        # A rule across options, checked while the file is read (see extdisco.Options).
        if self.enabled and not self.public_host and self.interfaces and self.interfaces[0] in WILDCARDS:
            raise ConfigError("(configuration)", "modules.proxy65.public_host",
                              "the proxy listens on every interface: say which address clients connect to")


def setup(module: ModuleAPI) -> None:
    options: Options = module.options
    if not options.enabled:
        return
    interface = options.interfaces[0]
    public_host = options.public_host or ("127.0.0.1" if interface == "localhost" else interface)
    relay = Relay(Limits(options.activation_timeout, options.max_connections, options.max_transfers_per_user,
                         options.max_bytes_per_transfer))
    bound = {"port": options.port}
    servers: list = []

    def streamhost() -> tuple[str, int]:
        return public_host, bound["port"]

    for host in sorted(module.ctx.domains):
        domain = f"{options.subdomain}.{host}"
        module.router.components[domain] = ProxyService(module, domain, relay, streamhost, "SOCKS5 Bytestreams Proxy")
        module.add_disco_item(host, domain, "SOCKS5 proxy")

    async def started(event: ServerStarted) -> None:
        if not module.ctx.runs_services:
            return          # worker 0 runs the proxy; this worker forwards its stanzas there
        opened, port = await listen(relay.protocol, options.interfaces, options.port, name="SOCKS5 proxy")
        servers.extend(opened)
        bound["port"] = port
        # debug: a later listener that fails to open must remain the only line of a failed start
        module.log.debug("SOCKS5 proxy listening on port %d (streamhost %s:%d)", port, public_host, port)

    async def stopping(event: ServerStopping) -> None:
        for server in servers:
            server.close()
        relay.close_all()

    module.on(ServerStarted, started)
    module.on(ServerStopping, stopping)
