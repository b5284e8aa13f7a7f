"""XEP-0215: External Service Discovery: the STUN and TURN servers clients use for calls.

    alice  -> <iq type='get' to='example.com'><services xmlns='urn:xmpp:extdisco:2' [type='turn']/></iq>
    server -> <services><service type='turn' host='turn.example.com' port='3478' transport='udp'
                                 restricted='true' username='EXPIRY:alice@example.com'
                                 password='...' expires='2024-01-01T12:00:00Z'/>...</services>
    alice  -> <iq type='get' to='example.com'><credentials xmlns='urn:xmpp:extdisco:2'>
                <service type='turn' host='turn.example.com' [port='3478']/></credentials></iq>
    server -> <credentials><service .../> with fresh credentials</credentials>

Only users of the served domains learn the services: the list names internal relays, and the
credentials let their holder spend the company's bandwidth. Credentials for restricted services
are the time-limited "TURN REST" ones that coturn (static-auth-secret) and most TURN servers
check: username "<expiry unix time>:<bare JID>", password base64(HMAC-SHA1(secret, username)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config.options import ConfigError, option
from ..core.iq import HOST, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol.errors import StanzaError
from ..protocol.xml import Element

NS = "urn:xmpp:extdisco:2"
TYPES = ("stun", "turn", "turns")


def _check_host(value: str) -> str | None:
    if not value or len(value) > 253 or any(c.isspace() or c in "/@<>'\"" for c in value):
        return "give a host name or an IP address, like turn.example.com or 192.0.2.1"
    return None


@dataclass(frozen=True)
class Service:
    """One external service, a [[modules.extdisco.services]] table."""
    type: str = option(help="Service type (XEP-0215 registry).", choices=TYPES)
    host: str = option(help="Host name or IP address clients connect to.", check=_check_host)
    port: int = option(3478, help="Port of the service.", min=1, max=65535)
    transport: str = option("udp", help="Transport protocol.", choices=("udp", "tcp"))
    restricted: bool = option(False, help="Clients need credentials (generated from `secret`) to use it.")
    name: str = option("", help="A human-readable label shown by some clients.")


@dataclass(frozen=True)
class Options:
    services: list[Service] = option(help="The STUN/TURN services offered to users, one "
                                          "[[modules.extdisco.services]] table each: type (stun, turn or turns), "
                                          "host, port (3478), transport (udp or tcp), restricted (false; true: "
                                          "users get credentials made from `secret`), name (a label).",
                                     factory=list)
    secret: str = option("", help="Shared secret for time-limited TURN credentials (coturn static-auth-secret). "
                                  "Required when a service is restricted.",
                         check=lambda v: None if not v or len(v) >= 16 else "use at least 16 characters")
    credential_ttl: int = option(86400, help="Seconds the generated credentials stay valid.", min=60, max=30 * 86400)

    def __post_init__(self) -> None:
        # A rule across options: checked while the file is read, so that it fails like any other
        # bad value (the loader does not know which file yet; see the report on config/options.py).
        if not self.secret and any(s.restricted for s in self.services):
            raise ConfigError("(configuration)", "modules.extdisco.secret",
                              "a restricted service needs credentials: set the shared secret of the TURN server "
                              "(or make the service unrestricted)")


def turn_credentials(secret: str, bare_jid: str, now: float, ttl: int) -> tuple[str, str, int]:
    """(username, password, expiry) of the TURN REST scheme for `bare_jid`, valid for `ttl` s."""
    expiry = int(now) + ttl
    username = f"{expiry}:{bare_jid}"
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode("ascii"), expiry


def _stamp(when: int) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")    # XEP-0082


def setup(module: ModuleAPI) -> None:
    options: Options = module.options
    domains = module.ctx.domains

    def check_requester(request: IqRequest) -> None:
        sender = request.sender
        if sender.local is None or sender.domain not in domains:
            raise StanzaError("forbidden", "external services are listed only for users of this server")

    def describe(service: Service, request: IqRequest) -> Element:
        el = Element("service", NS, {"type": service.type, "host": service.host, "port": str(service.port),
                                     "transport": service.transport})
        if service.name:
            el.set("name", service.name)
        if service.restricted:
            el.set("restricted", "true")
            username, password, expiry = turn_credentials(options.secret, str(request.sender.bare),
                                                          module.clock.time(), options.credential_ttl)
            el.set("username", username)
            el.set("password", password)
            el.set("expires", _stamp(expiry))
        return el

    async def services(request: IqRequest) -> Element:
        check_requester(request)
        wanted = request.payload.get("type")
        result = Element("services", NS)
        if wanted:
            result.set("type", wanted)
        for service in options.services:
            if wanted is None or service.type == wanted:
                result.append(describe(service, request))
        return request.result(result)

    async def credentials(request: IqRequest) -> Element:
        check_requester(request)
        asked = list(request.payload.elements("service", NS))
        if len(asked) != 1:
            raise StanzaError("bad-request", "ask for the credentials of one <service/> with 'type' and 'host'")
        wanted = asked[0]
        type_, host, port = wanted.get("type"), wanted.get("host"), wanted.get("port")
        if not type_ or not host:
            raise StanzaError("bad-request", "the <service/> needs a 'type' and a 'host' attribute")
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise StanzaError("bad-request", f"{port!r} is not a port number")
        matches = [s for s in options.services
                   if s.type == type_ and s.host == host and (port is None or s.port == int(port))]
        if not matches:
            raise StanzaError("item-not-found", f"this server knows no {type_} service on {host}")
        result = Element("credentials", NS)
        for service in matches:
            result.append(describe(service, request))
        return request.result(result)

    module.add_feature(NS)
    module.on_iq("get", NS, "services", services, target=HOST)
    module.on_iq("get", NS, "credentials", credentials, target=HOST)
