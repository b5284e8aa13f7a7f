"""A real slapd (stockade.testing.ldap) and a server whose example.com host syncs from it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stockade.testing.ldap import ThrowawayLdap
from stockade.testing.server import RunningServer

DOMAIN = "example.com"
PEOPLE = {"alice": "alice-ldap-pw", "bob": "bob-ldap-pw", "carol": "carol-ldap-pw", "dave": "dave-ldap-pw"}
GROUPS = {"staff": ["alice", "bob"], "admins": ["alice"]}


@pytest.fixture
def ldap() -> Iterator[ThrowawayLdap]:
    with ThrowawayLdap(users=PEOPLE, groups=GROUPS) as directory:
        yield directory


def directory_settings(ldap: ThrowawayLdap, **overrides: Any) -> dict[str, Any]:
    return {"url": ldap.url, "base_dn": ldap.suffix, "bind_dn": ldap.admin_dn, "bind_password": ldap.admin_password,
            "disabled_filter": "(employeeType=disabled)", "shared_groups": ["staff"], "sync_interval": 0.0,
            **overrides}


def directory_server(ldap: ThrowawayLdap, server: dict[str, Any] | None = None, **overrides: Any) -> RunningServer:
    return RunningServer([DOMAIN], config={"hosts": [{"domain": DOMAIN, "directory": directory_settings(ldap, **overrides)}],
                                           **(server or {})})


@pytest.fixture
def server(ldap) -> Iterator[RunningServer]:
    """A server for example.com whose accounts come from `ldap`, synced once."""
    with directory_server(ldap) as srv:
        sync(srv)
        yield srv


def sync(srv: RunningServer):
    """One on-demand sync of example.com, run in the server."""
    return srv.call(srv.server.directory.sync(DOMAIN))


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"
