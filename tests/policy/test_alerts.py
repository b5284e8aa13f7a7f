"""Administrator alerts (policy/alerts.py): an audit entry, and a headline message from the host
to each of the host's alert_jids, and to nobody else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade.policy.alerts import AdminAlerts
from stockade.testing.server import RunningServer

from .threats import add_users, login

A, B = "example.com", "other.org"
ADMIN, ALICE, ADMIN_B = f"admin@{A}", f"alice@{A}", f"admin@{B}"


@pytest.fixture
def server() -> Iterator[RunningServer]:
    config = {"hosts": [{"domain": A, "policy": {"alert_jids": [ADMIN]}}, {"domain": B}]}
    with RunningServer(config=config) as srv:
        add_users(srv, ADMIN, ALICE, ADMIN_B)
        yield srv


async def test_an_alert_reaches_the_alert_accounts_and_the_audit_log(server):
    alerts = server.server.ctx.services[AdminAlerts]
    async with login(server, ADMIN) as admin, login(server, ALICE) as alice, login(server, ADMIN_B) as admin_b:
        await server.acall(_alert(alerts, A, "malware", "report.pdf from alice@example.com is infected (Eicar-Test-Signature).",
                                  target=ALICE, file="report.pdf"))
        headline = await admin.next_of(admin.messages, lambda m: m["type"] == "headline")
        assert headline["from"] == A
        assert headline["subject"] == "Stockade alert: malware"
        assert "Eicar-Test-Signature" in headline["body"]
        # nobody else hears of it: not an ordinary user, not another tenant's administrator
        await alice.roundtrip()
        await admin_b.roundtrip()
        assert alice.pending(alice.messages) == [] and admin_b.pending(admin_b.messages) == []
    await server.acall(server.server.audit.flush())
    [entry] = await server.acall(server.server.audit.entries(A, action="alert.malware"))
    assert entry["actor"] == "system" and entry["target"] == ALICE
    assert entry["detail"]["file"] == "report.pdf" and "infected" in entry["detail"]["text"]


async def test_a_host_without_alert_accounts_still_records_its_alerts(server):
    alerts = server.server.ctx.services[AdminAlerts]
    await server.acall(_alert(alerts, B, "worm", "a test alert"))
    await server.acall(server.server.audit.flush())
    [entry] = await server.acall(server.server.audit.entries(B, action="alert.worm"))
    assert entry["target"] == B


async def _alert(alerts: AdminAlerts, host: str, kind: str, text: str, **detail: object) -> None:
    alerts.alert(host, kind, text, **detail)       # sync, on the server's loop
