"""Prometheus metrics at `GET /metrics` on the HTTPS listener.

Nothing is counted for the metrics' sake on the message path: at scrape time a collector reads
the figures the server keeps anyway (open connections, registered sessions, each session's
XEP-0198 handled count, the authenticator's failure count, the archive writer's batch count).
Each server has its own CollectorRegistry, so several servers in one process (the tests) never
mix their figures.

Who may scrape: clients on a loopback address, and anyone presenting the bearer token set in
`http.metrics_token` (`Authorization: Bearer <token>`). Everyone else gets 403. A reverse proxy on
the same machine makes every request look like loopback: do not route /metrics through one.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..core.hooks import POLICY, SessionClosed
from .websocket import WebSocketConnection

if TYPE_CHECKING:
    from ..core.bus import HookBus
    from ..core.sessions import SessionManager
    from .http import HttpService

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
REFUSED = ("metrics are served only to loopback addresses, or with the bearer token configured "
           "in http.metrics_token (Authorization: Bearer <token>)\n")


def is_scrape_allowed(client_host: str | None, authorization: str | None, token: str) -> bool:
    """May a request from `client_host` with this Authorization header read the metrics?"""
    if client_host:
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:
            address = None
        if address is not None:
            mapped = getattr(address, "ipv4_mapped", None)      # ::ffff:127.0.0.1
            if address.is_loopback or (mapped is not None and mapped.is_loopback):
                return True
    if not token or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


class StanzasReceived:
    """Stanzas received from clients and fully handled, since the server started: the live
    sessions' XEP-0198 handled counts plus those of the sessions that have ended."""

    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions
        self._ended = 0
        self._reported = 0

    def session_closed(self, event: SessionClosed) -> None:
        session = event.session
        if not session.extra.get("metrics.counted"):
            session.extra["metrics.counted"] = True
            self._ended += session.handled_count

    def __call__(self) -> int:
        live = sum(session.handled_count for session in self._sessions)
        # A replaced session is out of the registry a moment before its SessionClosed: never
        # let the counter go down (Prometheus would read a decrease as a restart).
        self._reported = max(self._reported, self._ended + live)
        return self._reported


class ServerCollector(Collector):
    """Reads the live figures at each scrape; every source is a function returning a number."""

    def __init__(self, *, connections: Callable[[], dict[str, int]], sessions: Callable[[], int],
                 stanzas_received: Callable[[], int], auth_failures: Callable[[], int],
                 archive_batches_committed: Callable[[], int],
                 audit_write_failures: Callable[[], int]) -> None:
        self._connections = connections
        self._sessions = sessions
        self._stanzas_received = stanzas_received
        self._auth_failures = auth_failures
        self._archive_batches = archive_batches_committed
        self._audit_failures = audit_write_failures

    def collect(self) -> Iterable[Metric]:
        connections = GaugeMetricFamily("stockade_connections", "Open connections, by kind.",
                                        labels=["kind"])
        for kind, count in sorted(self._connections().items()):
            connections.add_metric([kind], count)
        yield connections
        yield GaugeMetricFamily("stockade_sessions", "Authenticated client sessions (bound resources).",
                                value=self._sessions())
        yield CounterMetricFamily("stockade_stanzas_received", "Stanzas received from clients and handled.",
                                  value=self._stanzas_received())
        yield CounterMetricFamily("stockade_auth_failures", "Failed logins (wrong password or unknown user).",
                                  value=self._auth_failures())
        yield CounterMetricFamily("stockade_archive_batches_committed",
                                  "Group-commit transactions of archive appends committed.",
                                  value=self._archive_batches())
        yield CounterMetricFamily("stockade_audit_write_failures",
                                  "Audit log entries that could not be written (see the error log).",
                                  value=self._audit_failures())


def count_connections(client_connections: Iterable[Any], component_connections: Iterable[Any]) -> dict[str, int]:
    """Open connections by kind: c2s (TCP, both ports), websocket, component."""
    websocket = c2s = 0
    for conn in client_connections:
        if isinstance(conn, WebSocketConnection):
            websocket += 1
        else:
            c2s += 1
    return {"c2s": c2s, "websocket": websocket, "component": sum(1 for _ in component_connections)}


def setup_metrics(http: HttpService, collector: Collector, *, token: str) -> CollectorRegistry:
    """Serve `collector` (in a registry of its own) at GET /metrics; returns the registry."""
    registry = CollectorRegistry()
    registry.register(collector)

    async def metrics(request: Request) -> Response:
        client = request.client.host if request.client is not None else None
        if not is_scrape_allowed(client, request.headers.get("authorization"), token):
            log.info("refused a metrics request from %s", client)
            return PlainTextResponse(REFUSED, status_code=403)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    http.add_route(METRICS_PATH, metrics, methods=["GET"])
    return registry


def subscribe_stanza_count(bus: HookBus, counter: StanzasReceived) -> None:
    """Keep the handled counts of ending sessions. First in the chain: a handler that returns
    a value ends it, and counting must not depend on what other modules return."""
    bus.on(SessionClosed, counter.session_closed, POLICY + 1)


__all__ = ["METRICS_PATH", "ServerCollector", "StanzasReceived", "count_connections", "is_scrape_allowed",
           "setup_metrics", "subscribe_stanza_count"]
