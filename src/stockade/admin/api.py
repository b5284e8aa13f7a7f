"""The admin HTTP API under /api/v1 on the HTTPS listener (FastAPI; the OpenAPI document is at
/api/v1/openapi.json).

Every request carries `Authorization: Bearer <token>` (tokens: `stockade admin token`, or
POST /tokens). A route checks the token's scope, its admin's role and tenant scope (actions.py,
with the table in roles.py) and answers errors as JSON `{"error": "...what to fix", "field": ...}`:
401 no or bad token, 403 not allowed (the reason says which permission or host), 404 unknown
host/account/session/group/feature, 409 conflict, 413 body over 64 KiB, 422 invalid input (unknown
fields are refused and named).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Callable, Literal

from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .actions import ActionRefused, AdminActions
from .identities import MAX_TOKEN_DAYS, Principal, TokenRejected
from .roles import ALL_PERMISSIONS

log = logging.getLogger("stockade.admin")

MAX_BODY = 64 * 1024
Scope = Literal[ALL_PERMISSIONS]  # type: ignore[valid-type]

# -- models ----------------------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    error: str
    field: str | None = None


class Done(BaseModel):
    done: str


class Hosts(BaseModel):
    hosts: list[str]


class User(BaseModel):
    username: str
    online: bool


class Users(BaseModel):
    users: list[User]


class NewUser(Strict):
    username: str = Field(min_length=1, max_length=1023)
    password: str = Field(min_length=1, max_length=1024)


class NewPassword(Strict):
    password: str = Field(min_length=1, max_length=1024)


class Unlocked(BaseModel):
    username: str
    was_locked: bool


class Revoked(BaseModel):
    username: str
    ended: int


class Session(BaseModel):
    jid: str
    user: str
    resource: str
    address: str
    client: str
    version: str
    since: float


class Sessions(BaseModel):
    sessions: list[Session]


class Group(BaseModel):
    id: str
    name: str
    source: str
    shared: bool
    members: list[str]


class Groups(BaseModel):
    groups: list[Group]


class NewGroup(Strict):
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(default="", max_length=256)
    shared: bool = False


class Members(Strict):
    members: list[str] = Field(max_length=10000)


GroupName = Annotated[str, Field(min_length=1, max_length=256)]


class RuleOut(BaseModel):
    deny: list[str]
    allow_only: list[str] | None


class FeaturePermission(BaseModel):
    feature: str
    label: str = Field(description="how the feature is named in refusal texts")
    configured: RuleOut = Field(description="the rule from the configuration (hosts.permissions)")
    override: RuleOut | None = Field(description="the rule set at runtime, which replaces the configured one; "
                                                 "null when there is none")
    effective: RuleOut = Field(description="the rule in force")
    source: Literal["override", "configuration", "open"]


class HostPermissions(BaseModel):
    host: str
    features: list[FeaturePermission]


class NewRule(Strict):
    deny: list[GroupName] = Field(default_factory=list, max_length=1000,
                                  description="members of these groups may not use the feature")
    allow_only: list[GroupName] | None = Field(default=None, max_length=1000,
                                               description="when set, only members of these groups may "
                                                           "([]: nobody); deny wins")


class FeatureRule(BaseModel):
    feature: str
    deny: list[str]
    allow_only: list[str] | None


class ClientPolicy(BaseModel):
    loaded: bool = Field(description="whether the approved_clients module is loaded")
    enforcing: bool = Field(description="whether clients are checked against the lists at all")
    allow: list[str] = Field(description="approved XEP-0092 software names, with their minimum versions")
    caps_nodes: list[str] = Field(description="approved XEP-0115 caps nodes")
    refuse_unanswered: bool
    record_software: bool


class AuditEntry(BaseModel):
    id: int
    ts: float
    host: str
    actor: str
    action: str
    target: str
    detail: Any = None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before: int | None = Field(description="pass as ?before= for the next (older) page; null at the end")


class Verified(BaseModel):
    intact: bool
    count: int
    last_id: int | None
    last_hash: str
    bad_id: int | None
    reason: str


class NewToken(Strict):
    scopes: list[Scope] = Field(min_length=1, max_length=len(ALL_PERMISSIONS))   # type: ignore[valid-type]
    expires_days: float = Field(gt=0, le=MAX_TOKEN_DAYS)
    note: str = Field(default="", max_length=200)


class Token(BaseModel):
    id: str
    admin: str
    scopes: list[str]
    expires: float
    created: float
    note: str


class CreatedToken(Token):
    token: str = Field(description="the bearer token; shown only in this answer")


class Tokens(BaseModel):
    tokens: list[Token]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "the body could not be read (not UTF-8 JSON)"),
        (401, "no token, or one that is unknown, expired or revoked"),
        (403, "the token's scopes, the admin's role or its hosts do not allow this"),
        (404, "unknown host, account, session, group or feature"),
        (409, "conflicts with what exists"),
        (413, f"request body over {MAX_BODY} bytes"),
        (422, "invalid input; `field` names what to fix"))}

# -- application -------------------------------------------------------------------------------------

HostParam = Path(min_length=1, max_length=1023, description="a served domain (tenant)")
UserParam = Path(min_length=1, max_length=1023, description="the user name (local part)")
FeatureParam = Path(min_length=1, max_length=64, description="a feature with permissions: upload, muc_create, ...")


def build_api(actions: AdminActions, version: str) -> Any:
    """The FastAPI application (mount it at /api/v1), wrapped in the body-size limit."""
    bearer = HTTPBearer(auto_error=False, description="an API token: stk_...")

    async def principal(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Principal:
        if credentials is None:
            raise ActionRefused(401, "no API token: send Authorization: Bearer <token> "
                                     "(create one with `stockade admin token`)")
        try:
            return await actions.directory.authenticate_token(credentials.credentials)
        except TokenRejected as exc:
            raise ActionRefused(401, str(exc)) from None

    Who = Depends(principal)
    app = FastAPI(title="Stockade admin API", version=version, openapi_url="/openapi.json", docs_url=None,
                  redoc_url=None, responses=ERRORS,
                  description="Manage the accounts, sessions, groups and feature permissions of the served "
                              "hosts, read the audit log. See docs/admin.md.")

    @app.exception_handler(ActionRefused)
    async def refused(_request: Request, exc: ActionRefused) -> JSONResponse:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.message, "field": exc.field}, exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems, first_field = [], None
        for error in exc.errors()[:10]:
            loc = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
            where = ".".join(loc) or "body"
            first_field = first_field or where
            if error.get("type") == "extra_forbidden":
                problems.append(f"unknown field {where!r}: remove it")
            else:
                problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(problems) or "invalid request", "field": first_field}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        text = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 400:
            text = "the request body could not be read: send a JSON object in UTF-8"
        elif exc.status_code == 404:
            text = "no such API route; see /api/v1/openapi.json"
        elif exc.status_code == 405:
            text = "this route does not take that method; see /api/v1/openapi.json"
        return JSONResponse({"error": text, "field": None}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("admin API request failed")
        return JSONResponse({"error": "internal error; the server log has the details", "field": None}, 500)

    # -- hosts and users --------------------------------------------------------------------------
    @app.get("/hosts", response_model=Hosts, summary="The hosts (tenants) the caller manages")
    async def hosts(who: Principal = Who) -> Any:
        return {"hosts": actions.hosts(who)}

    @app.get("/hosts/{host}/users", response_model=Users, summary="Accounts of a host")
    async def list_users(host: str = HostParam, who: Principal = Who) -> Any:
        return {"users": await actions.list_users(who, host)}

    @app.post("/hosts/{host}/users", response_model=User, status_code=201, summary="Create an account")
    async def create_user(body: NewUser, host: str = HostParam, who: Principal = Who) -> Any:
        username = await actions.create_user(who, host, body.username, body.password)
        return {"username": username, "online": False}

    @app.delete("/hosts/{host}/users/{user}", response_model=Done, summary="Delete an account and its data")
    async def delete_user(host: str = HostParam, user: str = UserParam, who: Principal = Who) -> Any:
        await actions.delete_user(who, host, user)
        return {"done": f"removed {user}@{host}"}

    @app.post("/hosts/{host}/users/{user}/password", response_model=Done, summary="Set a new password")
    async def set_password(body: NewPassword, host: str = HostParam, user: str = UserParam,
                           who: Principal = Who) -> Any:
        await actions.set_password(who, host, user, body.password)
        return {"done": f"password changed for {user}@{host}"}

    @app.post("/hosts/{host}/users/{user}/unlock", response_model=Unlocked, summary="End a login lockout")
    async def unlock(host: str = HostParam, user: str = UserParam, who: Principal = Who) -> Any:
        return {"username": user, "was_locked": await actions.unlock(who, host, user)}

    @app.post("/hosts/{host}/users/{user}/revoke", response_model=Revoked,
              summary="End every session of an account, resumable ones too")
    async def revoke(host: str = HostParam, user: str = UserParam, who: Principal = Who) -> Any:
        return {"username": user, "ended": await actions.revoke(who, host, user)}

    # -- sessions ---------------------------------------------------------------------------------
    @app.get("/hosts/{host}/sessions", response_model=Sessions, summary="Live sessions with their client software")
    async def list_sessions(host: str = HostParam, who: Principal = Who) -> Any:
        return {"sessions": await actions.list_sessions(who, host)}

    @app.delete("/hosts/{host}/sessions/{user}/{resource}", response_model=Done,
                summary="End one session (the client gets a stream error)")
    async def end_session(host: str = HostParam, user: str = UserParam,
                          resource: str = Path(min_length=1, max_length=1023), who: Principal = Who) -> Any:
        ended = await actions.end_session(who, host, user, resource)
        return {"done": f"ended {ended['jid']}"}

    # -- groups -----------------------------------------------------------------------------------
    @app.get("/hosts/{host}/groups", response_model=Groups, summary="Groups of a host")
    async def list_groups(host: str = HostParam, who: Principal = Who) -> Any:
        return {"groups": actions.list_groups(who, host)}

    @app.post("/hosts/{host}/groups", response_model=Group, status_code=201, summary="Create a local group")
    async def create_group(body: NewGroup, host: str = HostParam, who: Principal = Who) -> Any:
        return await actions.create_group(who, host, body.id, body.name, body.shared)

    @app.put("/hosts/{host}/groups/{group}/members", response_model=Members, summary="Set a group's members")
    async def set_members(body: Members, host: str = HostParam, group: str = Path(min_length=1, max_length=256),
                          who: Principal = Who) -> Any:
        return {"members": await actions.set_members(who, host, group, body.members)}

    @app.delete("/hosts/{host}/groups/{group}", response_model=Done, summary="Delete a local group")
    async def delete_group(host: str = HostParam, group: str = Path(min_length=1, max_length=256),
                           who: Principal = Who) -> Any:
        await actions.delete_group(who, host, group)
        return {"done": f"deleted the group {group}"}

    # -- feature permissions and approved clients -------------------------------------------------
    @app.get("/hosts/{host}/permissions", response_model=HostPermissions,
             summary="Per feature: the configured rule, the runtime override and the rule in force")
    async def list_permissions(host: str = HostParam, who: Principal = Who) -> Any:
        return {"host": host, "features": actions.list_permissions(who, host)}

    @app.put("/hosts/{host}/permissions/{feature}", response_model=FeatureRule,
             summary="Replace a feature's rule at runtime (until DELETE)")
    async def set_permission(body: NewRule, host: str = HostParam, feature: str = FeatureParam,
                             who: Principal = Who) -> Any:
        return await actions.set_permission(who, host, feature, list(body.deny),
                                            None if body.allow_only is None else list(body.allow_only))

    @app.delete("/hosts/{host}/permissions/{feature}", response_model=FeatureRule,
                summary="Drop a feature's runtime rule: the configured rule (returned) applies again")
    async def reset_permission(host: str = HostParam, feature: str = FeatureParam, who: Principal = Who) -> Any:
        return await actions.reset_permission(who, host, feature)

    @app.get("/hosts/{host}/clients", response_model=ClientPolicy,
             summary="The approved-client policy in force (from the configuration, read-only)")
    async def client_policy(host: str = HostParam, who: Principal = Who) -> Any:
        return actions.client_policy(who, host)

    # -- audit ------------------------------------------------------------------------------------
    @app.get("/hosts/{host}/audit", response_model=AuditPage, summary="Audit entries of a host, newest first")
    async def audit(host: str = HostParam, limit: int = Query(50, ge=1, le=500),
                    before: int | None = Query(None, ge=1, le=2**62, description="only entries older than this id"),
                    action: str | None = Query(None, max_length=100), who: Principal = Who) -> Any:
        entries = await actions.audit_entries(who, host, limit=limit, before_id=before, action=action)
        return {"entries": entries, "next_before": entries[-1]["id"] if len(entries) == limit else None}

    @app.get("/audit/verify", response_model=Verified, summary="Check the audit log's hash chain")
    async def verify(who: Principal = Who) -> Any:
        return await actions.verify_audit(who)

    # -- legal holds and retention (admin/retention.py) --------------------------------------------
    from .retention import add_routes as add_retention_routes
    add_retention_routes(app, actions, Who)

    # -- threat-protection policy and quarantine review (admin/policy.py) ---------------------------
    from .policy import add_routes as add_policy_routes
    add_policy_routes(app, actions, Who)

    # -- eDiscovery (admin/compliance.py) ---------------------------------------------------------
    from .compliance import add_api_routes
    add_api_routes(app, actions, Who, HostParam)

    # -- tokens -----------------------------------------------------------------------------------
    @app.get("/tokens", response_model=Tokens, summary="The caller's API tokens (never the secrets)")
    async def list_tokens(who: Principal = Who) -> Any:
        return {"tokens": [t.to_json() for t in await actions.list_tokens(who)]}

    @app.post("/tokens", response_model=CreatedToken, status_code=201,
              summary="Create an API token with some of the caller's permissions")
    async def create_token(body: NewToken, who: Principal = Who) -> Any:
        token, info = await actions.create_token(who, list(body.scopes), body.expires_days, body.note)
        return {**info.to_json(), "token": token}

    @app.delete("/tokens/{token_id}", response_model=Done, summary="Revoke one of the caller's tokens")
    async def revoke_token(token_id: str = Path(min_length=1, max_length=64), who: Principal = Who) -> Any:
        await actions.revoke_token(who, token_id)
        return {"done": f"revoked token {token_id}"}

    return BodyLimit(app)


class BodyLimit:
    """ASGI middleware: refuse request bodies over MAX_BODY bytes with 413 before the app reads them."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(scope, receive, send, self.limit)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await _too_large(scope, receive, send, self.limit)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()
        await self.app(scope, replay, send)


async def _too_large(scope: dict, receive: Callable, send: Callable, limit: int) -> None:
    response = JSONResponse({"error": f"the request body is over {limit} bytes; send less", "field": None}, 413,
                            headers={"connection": "close"})
    await response(scope, receive, send)


def mount(http: Any, path: str, app: Any) -> None:
    """Mount `app` at `path` on the HTTPS listener so that it sees every path below, including
    ones with an encoded newline (Starlette's own Mount pattern stops at one, and the request
    would fall through to a plain-text 404 outside the API's JSON errors)."""
    from starlette.routing import Mount
    route = Mount(path, app=app)
    route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
    http.routes.append(route)
