"""The admin API and console against a real server: one operator and one admin of each other
role on example.com (tenant A); other.org (tenant B) is managed only by the operator."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from stockade.admin.identities import principal_of
from stockade.testing.server import RunningServer

A, B = "example.com", "other.org"
ADMIN_PASSWORD = "admin-password-long-1"
ROLES = {"ops": ("operator", []), "tadmin": ("tenant_admin", [A]), "desk": ("helpdesk", [A]),
         "comp": ("compliance", [A]), "aud": ("auditor", [A])}


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def error(self) -> str:
        return self.body.get("error", "") if isinstance(self.body, dict) else ""


class AdminApi:
    """Requests to /api/v1 of a RunningServer, as one token (blocking; use from a thread in async tests)."""

    def __init__(self, server: RunningServer, token: str | None) -> None:
        self.server = server
        self.token = token
        self.tls = ssl.create_default_context(cafile=str(server.cert_path))
        self.tls.check_hostname = False

    def __call__(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> Reply:
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"https://127.0.0.1:{self.server.https_port}/api/v1{path}",
                                         method=method, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=30) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        try:
            return Reply(status, json.loads(text))
        except ValueError:
            return Reply(status, text)


def make_admins(server: RunningServer, *, totp: bool = False) -> dict[str, Any]:
    """Create the admins of ROLES; returns name -> (account, totp uri)."""
    directory = server.server.admin.directory
    out = {}
    for name, (role, hosts) in ROLES.items():
        out[name] = server.call(directory.create(name, role, hosts, ADMIN_PASSWORD, with_totp=totp))
    return out


def token_for(server: RunningServer, name: str, scopes: list[str] | None = None, days: float = 1) -> str:
    directory = server.server.admin.directory
    account = server.call(directory.get(name))
    creator = principal_of(account)
    token, _ = server.call(directory.create_token(creator, scopes or sorted(creator.permissions), days))
    return token


@pytest.fixture(scope="module")
def admin_server() -> Iterator[RunningServer]:
    with RunningServer(domains=[A, B]) as srv:
        make_admins(srv)
        yield srv


@pytest.fixture(scope="module")
def apis(admin_server: RunningServer) -> dict[str, AdminApi]:
    return {name: AdminApi(admin_server, token_for(admin_server, name)) for name in ROLES}
