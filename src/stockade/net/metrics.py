"""Prometheus metrics at `GET /metrics` on the HTTPS listener.

Nothing is counted for the metrics' sake on the message path: at scrape time a collector reads
the figures the server keeps anyway (open connections, registered sessions, each session's
XEP-0198 handled count, the authenticator's failure count, the archive writer's batch count, the
storage writers' backpressure (how often and how long client input was paused),
the malware scanner's counters, the administrator alerts per kind, the compliance journal's
committed records and whether it is failing). The one figure kept for the metrics is the number
of policy verdicts per kind (`VerdictCounts`): an integer increment when a policy gives a verdict
other than Allow, nothing on a message that passes.
Each server has its own CollectorRegistry, so several servers in one process (the tests) never
mix their figures. With several worker processes, worker 0 serves /metrics and asks every other
worker for its figures at each scrape (`ServerCollector.figures`, admin/live.py's way of asking):
the node's figures are the sums of the workers'.

Who may scrape: clients on a loopback address, and anyone presenting the bearer token set in
`http.metrics_token` (`Authorization: Bearer <token>`). Everyone else gets 403. A reverse proxy on
the same machine makes every request look like loopback: do not route /metrics through one.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..core.hooks import POLICY, SessionClosed, VerdictGiven

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


class VerdictCounts:
    """Policy verdicts given since the server started, by kind (flag, deny, redact, quarantine)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def verdict_given(self, event: VerdictGiven) -> None:
        kind = type(event.verdict).__name__.lower()
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def __call__(self) -> dict[str, int]:
        return dict(self.counts)


class ServerCollector(Collector):
    """Reads the live figures at each scrape; every source is a function returning a number
    (or figures by label). The optional sources are None when their feature is off (no malware
    scanner, no journal): their metrics are then left out rather than reported as zero."""

    def __init__(self, *, connections: Callable[[], dict[str, int]], sessions: Callable[[], int],
                 stanzas_received: Callable[[], int], auth_failures: Callable[[], int],
                 archive_batches_committed: Callable[[], int],
                 audit_write_failures: Callable[[], int],
                 input_paused: Callable[[], tuple[int, float]] | None = None,
                 malware: Callable[[], tuple[int, int, int]] | None = None,
                 alerts: Callable[[], dict[str, int]] | None = None,
                 verdicts: Callable[[], dict[str, int]] | None = None,
                 journal: Callable[[], tuple[int, bool]] | None = None) -> None:
        self._connections = connections
        self._sessions = sessions
        self._stanzas_received = stanzas_received
        self._auth_failures = auth_failures
        self._archive_batches = archive_batches_committed
        self._audit_failures = audit_write_failures
        self._input_paused = input_paused  # (pauses, seconds paused) from storage/backlog.py
        self._malware = malware          # (scanned, infected, unavailable)
        self._alerts = alerts
        self._verdicts = verdicts
        self._journal = journal          # (records committed, is failing)

        self.node_figures: dict[str, Any] | None = None     # set for one scrape with several workers

    def figures(self) -> dict[str, Any]:
        """Every figure of this process, read now (JSON: another worker may ask for them)."""
        def read(source: Callable[[], Any] | None) -> Any:
            return None if source is None else source()
        return {"connections": self._connections(), "sessions": self._sessions(),
                "stanzas_received": self._stanzas_received(), "auth_failures": self._auth_failures(),
                "archive_batches": self._archive_batches(), "audit_failures": self._audit_failures(),
                "input_paused": read(self._input_paused), "malware": read(self._malware),
                "alerts": read(self._alerts), "verdicts": read(self._verdicts), "journal": read(self._journal)}

    def collect(self) -> Iterable[Metric]:
        f = self.node_figures or self.figures()
        connections = GaugeMetricFamily("stockade_connections", "Open connections, by kind.",
                                        labels=["kind"])
        for kind, count in sorted(f["connections"].items()):
            connections.add_metric([kind], count)
        yield connections
        yield GaugeMetricFamily("stockade_sessions", "Authenticated client sessions (bound resources).",
                                value=f["sessions"])
        yield CounterMetricFamily("stockade_stanzas_received", "Stanzas received from clients and handled.",
                                  value=f["stanzas_received"])
        yield CounterMetricFamily("stockade_auth_failures", "Failed logins (wrong password or unknown user).",
                                  value=f["auth_failures"])
        yield CounterMetricFamily("stockade_archive_batches_committed",
                                  "Group-commit transactions of archive appends committed.",
                                  value=f["archive_batches"])
        yield CounterMetricFamily("stockade_audit_write_failures",
                                  "Audit log entries that could not be written (see the error log).",
                                  value=f["audit_failures"])
        if f["input_paused"] is not None:
            pauses, seconds = f["input_paused"]
            yield CounterMetricFamily("stockade_input_pauses", "Times client input was paused because the "
                                      "storage writers were two batches behind (storage/backlog.py).", value=pauses)
            yield CounterMetricFamily("stockade_input_paused_seconds", "Seconds client input was paused "
                                      "while the storage writers caught up.", value=seconds)
        yield from self._security(f)

    def _security(self, f: dict[str, Any]) -> Iterable[Metric]:
        if f["malware"] is not None:
            scanned, infected, unavailable = f["malware"]
            yield CounterMetricFamily("stockade_files_scanned", "Uploaded files the malware scanner gave a "
                                      "verdict on (clean or infected).", value=scanned)
            yield CounterMetricFamily("stockade_files_infected", "Uploaded files in which the malware scanner "
                                      "found something (quarantined).", value=infected)
            yield CounterMetricFamily("stockade_scanner_unavailable", "Scans that got no verdict: clamd down, "
                                      "too slow, or it answered with an error.", value=unavailable)
        for by_kind, name, text in ((f["alerts"], "stockade_admin_alerts", "Administrator alerts raised, by kind."),
                                    (f["verdicts"], "stockade_policy_verdicts",
                                     "Policy verdicts other than allow, by kind.")):
            if by_kind is not None:
                family = CounterMetricFamily(name, text, labels=["kind"])
                for kind, count in sorted(by_kind.items()):
                    family.add_metric([kind], count)
                yield family
        if f["journal"] is not None:
            committed, is_failing = f["journal"]
            yield CounterMetricFamily("stockade_journal_records_committed",
                                      "Compliance journal records committed.", value=committed)
            yield GaugeMetricFamily("stockade_journal_failing", "1 while the compliance journal cannot write "
                                    "(see the error log), else 0.", value=1 if is_failing else 0)


def add_figures(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The node's figures from its workers' (`ServerCollector.figures`): numbers add up, figures
    by kind add up per kind, pairs and triples add up member by member (a flag is set when it is
    set in any worker); a figure no worker has stays None."""
    def add(values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        if not present:
            return None
        if isinstance(present[0], dict):
            return {k: add([v.get(k) for v in present]) for k in sorted({k for v in present for k in v})}
        if isinstance(present[0], (list, tuple)):
            return [add(list(column)) for column in zip(*present)]
        if isinstance(present[0], bool):
            return any(present)
        return sum(present)
    return {key: add([f.get(key) for f in figures]) for key in figures[0]}


def count_connections(client_connections: Iterable[Any], component_connections: Iterable[Any]) -> dict[str, int]:
    """Open connections by kind: c2s (TCP, both ports), websocket (relayed from worker 0 too),
    component."""
    websocket = c2s = 0
    for conn in client_connections:
        if conn.kind == "websocket":
            websocket += 1
        else:
            c2s += 1
    return {"c2s": c2s, "websocket": websocket, "component": sum(1 for _ in component_connections)}


def setup_metrics(http: HttpService, collector: ServerCollector, *, token: str,
                  elsewhere: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None) -> CollectorRegistry:
    """Serve `collector` (in a registry of its own) at GET /metrics; returns the registry.
    `elsewhere`: with several workers, asks the others for their figures (WorkerNode)."""
    registry = CollectorRegistry()
    registry.register(collector)

    async def metrics(request: Request) -> Response:
        client = request.client.host if request.client is not None else None
        if not is_scrape_allowed(client, request.headers.get("authorization"), token):
            log.info("refused a metrics request from %s", client)
            return PlainTextResponse(REFUSED, status_code=403)
        if elsewhere is not None:
            try:
                others = await elsewhere()
            except Exception as exc:          # a worker is gone or hung: no partial figures
                log.warning("metrics not served: %s", exc)
                return PlainTextResponse(f"the metrics are not available: {exc}\n", status_code=503)
            # Set and read with no await in between: a concurrent scrape cannot see these.
            collector.node_figures = add_figures([collector.figures(), *others])
            try:
                return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
            finally:
                collector.node_figures = None
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    http.add_route(METRICS_PATH, metrics, methods=["GET"])
    return registry


def subscribe_stanza_count(bus: HookBus, counter: StanzasReceived) -> None:
    """Keep the handled counts of ending sessions. First in the chain: a handler that returns
    a value ends it, and counting must not depend on what other modules return."""
    bus.on(SessionClosed, counter.session_closed, POLICY + 1)


def subscribe_verdict_count(bus: HookBus, counter: VerdictCounts) -> None:
    """Count every verdict, first in the chain (as above)."""
    bus.on(VerdictGiven, counter.verdict_given, POLICY + 1)


__all__ = ["METRICS_PATH", "ServerCollector", "add_figures", "StanzasReceived", "VerdictCounts", "count_connections",
           "is_scrape_allowed", "setup_metrics", "subscribe_stanza_count", "subscribe_verdict_count"]
