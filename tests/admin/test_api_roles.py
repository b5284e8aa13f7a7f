"""Every admin API route for every role: allowed roles get 2xx and the change is audited as
admin:NAME; the others get 403 with the reason and nothing changes. A tenant admin of
example.com cannot reach other.org. Tokens: expired -> 401, wrong scope -> 403."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from stockade.admin.identities import TOKENS_STORE, token_hash
from stockade.testing.xmpp import client

from .conftest import A, B, ROLES, AdminApi, token_for

ALL = set(ROLES)
_n = itertools.count()

# (route, method, path, body, roles allowed, audit action recorded when allowed)
ROUTES = [
    ("list hosts", "GET", "/hosts", None, ALL, None),
    ("list users", "GET", "/hosts/{host}/users", None, {"ops", "tadmin", "desk", "comp"}, None),
    ("create user", "POST", "/hosts/{host}/users", {"username": "{new}", "password": "fresh-pw-9281"},
     {"ops", "tadmin"}, "user.create"),
    ("delete user", "DELETE", "/hosts/{host}/users/{user}", None, {"ops", "tadmin"}, "user.remove"),
    ("set password", "POST", "/hosts/{host}/users/{user}/password", {"password": "another-pw-5512"},
     {"ops", "tadmin", "desk"}, "user.password"),
    ("unlock", "POST", "/hosts/{host}/users/{user}/unlock", None, {"ops", "tadmin", "desk"}, "user.unlock"),
    ("revoke", "POST", "/hosts/{host}/users/{user}/revoke", None, {"ops", "tadmin", "desk"}, "session.revoke"),
    ("list sessions", "GET", "/hosts/{host}/sessions", None, {"ops", "tadmin", "desk"}, None),
    ("end session", "DELETE", "/hosts/{host}/sessions/{user}/matrix", None, {"ops", "tadmin", "desk"}, "session.end"),
    ("list groups", "GET", "/hosts/{host}/groups", None, {"ops", "tadmin"}, None),
    ("create group", "POST", "/hosts/{host}/groups", {"id": "{new}", "shared": True}, {"ops", "tadmin"},
     "group.create"),
    ("set members", "PUT", "/hosts/{host}/groups/{group}/members", {"members": ["{user}"]}, {"ops", "tadmin"},
     "group.members"),
    ("delete group", "DELETE", "/hosts/{host}/groups/{group}", None, {"ops", "tadmin"}, "group.delete"),
    ("list permissions", "GET", "/hosts/{host}/permissions", None, {"ops", "tadmin"}, None),
    ("set permission", "PUT", "/hosts/{host}/permissions/upload", {"deny": ["{group}"], "allow_only": None},
     {"ops", "tadmin"}, "permission.change"),
    ("reset permission", "DELETE", "/hosts/{host}/permissions/upload", None, {"ops", "tadmin"}, "permission.change"),
    ("approved clients", "GET", "/hosts/{host}/clients", None, {"ops", "tadmin"}, None),
    ("read audit", "GET", "/hosts/{host}/audit?limit=5", None, {"ops", "tadmin", "comp", "aud"}, None),
    ("verify audit", "GET", "/audit/verify", None, {"ops", "aud"}, None),
    ("quarantined files", "GET", "/hosts/{host}/quarantine/files", None, {"comp"}, None),
]
USER_PASSWORD = "user-pw-31337"


def _fill(value, names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def snapshot(server, host: str, user: str) -> dict:
    """Everything a route could change on `host`."""
    srv = server.server
    async def read():
        creds = await srv.accounts.credentials(host, user)
        entries = await srv.audit.entries(host, limit=1)
        return {"accounts": sorted(await srv.accounts.list(host)),
                "password": {k: (v.stored_key, v.salt) for k, v in (creds or {}).items()},
                "groups": [(g.id, sorted(g.members)) for g in srv.groups.list(host)],
                "sessions": sorted(s.full for s in srv.sessions if s.host == host),
                "lockouts": sorted(lk.key for lk in await srv.lockouts.listed()),
                "permissions": {f: r.to_json() for f, r in srv.permissions.overrides(host).items()},
                "audit_last": entries[0]["id"] if entries else 0}
    return server.call(read())


def prepare(server, host: str) -> dict:
    """A fresh account and group for one case."""
    n = next(_n)
    names = {"host": host, "user": f"u{n}", "group": f"g{n}", "new": f"n{n}"}
    server.call(server.server.accounts.create(host, names["user"], USER_PASSWORD))
    server.call(server.server.groups.create(host, names["group"]))
    return names


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
async def test_each_route_is_allowed_exactly_to_its_roles(admin_server, apis, route, role):
    name, method, path, body, allowed, action = route
    names = prepare(admin_server, A)
    api: AdminApi = apis[role]
    async with client(admin_server, f"{names['user']}@{A}/matrix", USER_PASSWORD) as user:
        before = snapshot(admin_server, A, names["user"])
        reply = await asyncio.to_thread(api, method, _fill(path, names), _fill(body, names))
        after = snapshot(admin_server, A, names["user"])
        if role not in allowed:
            assert reply.status == 403, (name, role, reply)
            assert reply.error.startswith("forbidden: the role"), reply.error
            assert after == before, "a refused request changed something"
            await user.roundtrip()                      # the session is still there
            return
        assert 200 <= reply.status < 300, (name, role, reply)
        if action is None:
            assert after == before
            return
        assert after != before
        entry = admin_server.call(admin_server.server.audit.entries(A, limit=1))[0]
        assert (entry["action"], entry["actor"]) == (action, f"admin:{role}")
        if action == "session.end":
            error = await user.next_of(user.stream_errors)
            assert error["condition"] == "policy-violation"
            assert error["text"] == "this session was ended by an administrator"
            assert entry["detail"]["before"]["jid"] == f"{names['user']}@{A}/matrix"


@pytest.mark.parametrize("role", ["tadmin", "desk", "comp", "aud"])
@pytest.mark.parametrize("route", [r for r in ROUTES if "{host}" in r[2]], ids=[r[0] for r in ROUTES if "{host}" in r[2]])
def test_an_admin_of_one_tenant_cannot_reach_another(admin_server, apis, route, role):
    name, method, path, body, allowed, _ = route
    names = prepare(admin_server, B)
    before = snapshot(admin_server, B, names["user"])
    reply = apis[role](method, _fill(path, names), _fill(body, names))
    assert reply.status == 403, (name, role, reply)
    if role in allowed:        # the role would allow it: the tenant is what refuses
        assert reply.error == f"forbidden: the admin {role} does not manage the host {B}"
    assert snapshot(admin_server, B, names["user"]) == before


def test_the_hosts_list_shows_only_the_tenants_of_the_caller(apis):
    assert apis["ops"]("GET", "/hosts").body == {"hosts": [A, B]}
    assert apis["tadmin"]("GET", "/hosts").body == {"hosts": [A]}


def test_requests_without_a_valid_token_are_refused(admin_server, apis):
    assert AdminApi(admin_server, None)("GET", "/hosts").status == 401
    reply = AdminApi(admin_server, "stk_not-a-token")("GET", "/hosts")
    assert reply.status == 401 and "unknown or revoked" in reply.error


def test_an_expired_token_is_refused(admin_server):
    token = token_for(admin_server, "ops", days=1)
    api = AdminApi(admin_server, token)
    assert api("GET", "/hosts").status == 200
    store = admin_server.server.storage.map(TOKENS_STORE)
    record = admin_server.call(store.get("", "", token_hash(token)))
    admin_server.call(store.set("", "", token_hash(token), {**record, "expires": time.time() - 1}))
    reply = api("GET", "/hosts")
    assert reply.status == 401 and "expired" in reply.error


def test_a_token_without_the_scope_is_refused_even_for_an_operator(admin_server):
    api = AdminApi(admin_server, token_for(admin_server, "ops", ["users.read"]))
    assert api("GET", f"/hosts/{A}/users").status == 200
    reply = api("POST", f"/hosts/{A}/users", {"username": "scoped", "password": "scoped-pw-1234"})
    assert reply.status == 403 and "scopes do not include users.create" in reply.error
    assert not admin_server.call(admin_server.server.accounts.exists(A, "scoped"))


def test_tokens_are_created_within_the_creators_permissions_and_revocable(admin_server, apis):
    desk = apis["desk"]
    reply = desk("POST", "/tokens", {"scopes": ["users.create"], "expires_days": 1})
    assert reply.status == 403 and "users.create" in reply.error
    reply = desk("POST", "/tokens", {"scopes": ["users.read"], "expires_days": 1, "note": "script"})
    assert reply.status == 201 and reply.body["token"].startswith("stk_")
    new = AdminApi(admin_server, reply.body["token"])
    assert new("GET", f"/hosts/{A}/users").status == 200
    assert new("GET", f"/hosts/{A}/sessions").status == 403           # outside the token's scopes
    listed = desk("GET", "/tokens").body["tokens"]
    assert reply.body["id"] in [t["id"] for t in listed] and all("token" not in t for t in listed)
    assert desk("DELETE", f"/tokens/{reply.body['id']}").status == 200
    assert new("GET", f"/hosts/{A}/users").status == 401


def test_bad_input_is_refused_with_what_to_fix(admin_server, apis):
    ops = apis["ops"]
    reply = ops("POST", f"/hosts/{A}/users", {"username": "x1", "password": "long-enough-1", "admin": True})
    assert reply.status == 422 and reply.body == {"error": "unknown field 'admin': remove it", "field": "admin"}
    reply = ops("POST", f"/hosts/{A}/users", {"username": "x2", "password": "short"})
    assert reply.status == 422 and reply.body["field"] == "password" and "too short" in reply.error
    reply = ops("POST", f"/hosts/{A}/users", raw=b"{not json")
    assert reply.status == 422
    reply = ops("POST", f"/hosts/{A}/users", {"username": "x3", "password": "p" * 70000})
    assert reply.status == 413 and "65536" in reply.error
    assert ops("GET", "/hosts/nowhere.example/users").status == 404
    assert ops("DELETE", f"/hosts/{A}/users/nobody").status == 404
    assert not admin_server.call(admin_server.server.accounts.exists(A, "x1"))
