"""The web admin console at /admin: server-rendered pages (Jinja2), no scripts.

Login is the admin's password, then (for every admin with a TOTP secret) a 6-digit code from its
authenticator app. The session lives on the server (`ConsoleSessions`: an unguessable id in a
cookie that is HttpOnly, Secure and SameSite=Strict, limited to /admin), ends after 30 minutes
idle or 8 hours in all, and gets a new id at each login step so that an id planted before login
is worth nothing. Every form that changes something carries the session's CSRF token; a POST
without the right one is refused with 403 and changes nothing.

Pages call the same AdminActions as the API, so the roles table in roles.py decides here too;
a page hides what the admin may not do, and the action refuses it anyway if posted.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from . import roles
from .actions import ActionRefused, AdminActions
from .api import BodyLimit
from .compliance import console_page as compliance_page
from .identities import AdminAccount, Principal, principal_of

HERE = Path(__file__).parent
COOKIE = "stockade_console"
IDLE_TIMEOUT = 30 * 60
MAX_AGE = 8 * 3600
LOGIN_STEP_TIMEOUT = 5 * 60         # between the password and the code
MAX_FAILURES = 5                    # per admin name in FAILURE_WINDOW, then refused for the window
FAILURE_WINDOW = 15 * 60
AUDIT_PAGE = 25
MAX_SESSIONS = 10000                 # console sessions kept at most (logged in or not)
CODE_LIFETIME = 120                  # seconds a TOTP code stays accepted (the window is 3 x 30 s)
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
FORM_REFUSED = ("this form expired or did not come from this console (its security token is missing or wrong); "
                "reload the page and try again")


@dataclass
class ConsoleSession:
    id: str
    csrf: str
    created: float
    seen: float
    admin: str = ""
    stage: str = "anonymous"            # anonymous -> mfa -> in (logged in)
    flash: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class ConsoleSessions:
    """Server-side console sessions, in memory (a restart logs everyone out)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._by_id: dict[str, ConsoleSession] = {}

    def new(self, admin: str = "", stage: str = "anonymous") -> ConsoleSession:
        self._expire()
        if len(self._by_id) >= MAX_SESSIONS:          # a flood of login pages: drop the oldest
            for sid in sorted(self._by_id, key=lambda i: self._by_id[i].seen)[:len(self._by_id) // 10 + 1]:
                del self._by_id[sid]
        now = self.clock.time()
        session = ConsoleSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, admin, stage)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self.clock.time()
        limit = LOGIN_STEP_TIMEOUT if session.stage == "mfa" else IDLE_TIMEOUT
        if now - session.seen > limit or now - session.created > MAX_AGE:
            self.end(session)
            return None
        session.seen = now
        return session

    def end(self, session: ConsoleSession) -> None:
        self._by_id.pop(session.id, None)

    def _expire(self) -> None:
        now = self.clock.time()
        for sid, s in list(self._by_id.items()):
            if now - s.seen > IDLE_TIMEOUT or now - s.created > MAX_AGE:
                del self._by_id[sid]


class Console:
    def __init__(self, actions: AdminActions) -> None:
        self.actions = actions
        self.clock = actions.clock
        self.sessions = ConsoleSessions(actions.clock)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self._failures: dict[str, list[float]] = {}
        self._used_codes: dict[str, dict[str, float]] = {}   # admin -> TOTP codes used lately (no replay)

    # -- plumbing -------------------------------------------------------------------------------
    def render(self, request: Request, template: str, status: int = 200, session: ConsoleSession | None = None,
               who: Principal | None = None, **context: Any) -> Response:
        flash = ""
        if session is not None and session.flash:
            flash, session.flash = session.flash, ""
        context.update(session=session, who=who, flash=flash, roles=roles, when=_when,
                       may=(lambda p, h=None: who is not None and who.may(p, h)),
                       hosts=self.actions.hosts(who) if who is not None else [])
        response = self.templates.TemplateResponse(request, template, context, status_code=status)
        return self._secure(response, session)

    @staticmethod
    def _secure(response: Response, session: ConsoleSession | None) -> Response:
        response.headers["content-security-policy"] = CSP
        response.headers["cache-control"] = "no-store"
        if session is not None:
            response.set_cookie(COOKIE, session.id, max_age=MAX_AGE, path="/admin", secure=True, httponly=True,
                                samesite="strict")
        return response

    def redirect(self, url: str, session: ConsoleSession | None = None) -> Response:
        return self._secure(RedirectResponse(url, status_code=303), session)

    async def current(self, request: Request) -> tuple[ConsoleSession | None, Principal | None]:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None or session.stage != "in":
            return session, None
        account = await self.actions.directory.get(session.admin)
        if account is None:                          # removed since it logged in
            self.sessions.end(session)
            return None, None
        return session, principal_of(account)

    async def form(self, request: Request, session: ConsoleSession | None) -> dict[str, str] | None:
        """The posted form, or None when its CSRF token is not this session's."""
        data = await request.form()
        token = data.get("csrf")
        if session is None or not isinstance(token, str) or not hmac.compare_digest(token, session.csrf):
            return None
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def refused_form(self, request: Request, session: ConsoleSession | None, who: Principal | None) -> Response:
        return self.render(request, "error.html", 403, session, who, message=FORM_REFUSED)

    def host_of(self, request: Request, who: Principal, value: str | None = None) -> str:
        hosts = self.actions.hosts(who)
        host = value if value is not None else request.query_params.get("host", "")
        return host if host else (hosts[0] if hosts else "")

    async def page(self, request: Request, build: Any) -> Response:
        """A logged-in page: `build(session, who)` renders it; refusals become an error page."""
        session, who = await self.current(request)
        if who is None:
            return self.redirect("/admin/login")
        try:
            return await build(session, who)
        except ActionRefused as exc:
            return self.render(request, "error.html", exc.status, session, who, message=exc.message)

    # -- login ----------------------------------------------------------------------------------
    def _throttled(self, name: str) -> bool:
        now = self.clock.time()
        recent = [t for t in self._failures.get(name, []) if now - t < FAILURE_WINDOW]
        if recent:
            self._failures[name] = recent
        else:
            self._failures.pop(name, None)
        return len(recent) >= MAX_FAILURES

    async def _failed(self, name: str, request: Request, reason: str) -> None:
        name = name[:64]
        if len(self._failures) >= MAX_SESSIONS:       # many made-up names: forget the oldest
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(name, []).append(self.clock.time())
        address = request.client.host if request.client else ""
        await self.actions.audit.record("", f"admin:{name}", "admin.login.failure", name, address=address,
                                        reason=reason)

    async def login_page(self, request: Request) -> Response:
        session, who = await self.current(request)
        if who is not None:
            return self.redirect("/admin/")
        if session is None or session.stage != "anonymous":
            session = self.sessions.new()
        return self.render(request, "login.html", session=session)

    async def login(self, request: Request) -> Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        data = await self.form(request, session)
        if data is None or session is None:
            return self.refused_form(request, session, None)
        name, password = data.get("username", "").strip().lower()[:64], data.get("password", "")
        if self._throttled(name):
            return self.render(request, "login.html", 429, session, error=(
                f"too many failed logins for {name}; wait {FAILURE_WINDOW // 60} minutes or ask an operator"))
        account = await self.actions.directory.check_password(name, password)
        if account is None:
            await self._failed(name, request, "wrong name or password")
            return self.render(request, "login.html", 401, session, error="wrong admin name or password")
        self.sessions.end(session)                   # a fresh id at each step: no session fixation
        if account.has_mfa:
            fresh = self.sessions.new(account.name, "mfa")
            return self.redirect("/admin/mfa", fresh)
        return await self._logged_in(request, account)

    async def mfa_page(self, request: Request) -> Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None or session.stage != "mfa":
            return self.redirect("/admin/login")
        return self.render(request, "mfa.html", session=session)

    async def mfa(self, request: Request) -> Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        data = await self.form(request, session)
        if data is None or session is None:
            return self.refused_form(request, session, None)
        if session.stage != "mfa":
            return self.redirect("/admin/login")
        account = await self.actions.directory.get(session.admin)
        code = data.get("code", "").strip()
        if account is None or self._throttled(session.admin):
            self.sessions.end(session)
            return self.redirect("/admin/login")
        now = self.clock.time()
        used = {c: t for c, t in self._used_codes.get(account.name, {}).items() if now - t < CODE_LIFETIME}
        self._used_codes[account.name] = used
        if not self.actions.directory.check_totp(account, code) or code in used:
            await self._failed(account.name, request, "wrong authenticator code")
            return self.render(request, "mfa.html", 401, session,
                               error="wrong or already used code; enter the current code from your authenticator app")
        used[code] = now
        self.sessions.end(session)
        return await self._logged_in(request, account)

    async def _logged_in(self, request: Request, account: AdminAccount) -> Response:
        session = self.sessions.new(account.name, "in")
        address = request.client.host if request.client else ""
        await self.actions.audit.record("", f"admin:{account.name}", "admin.login", account.name, address=address,
                                        mfa=account.has_mfa)
        return self.redirect("/admin/", session)

    async def logout(self, request: Request) -> Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if await self.form(request, session) is None:
            return self.refused_form(request, session, None)
        if session is not None:
            self.sessions.end(session)
        response = self.redirect("/admin/login")
        response.delete_cookie(COOKIE, path="/admin", secure=True, httponly=True, samesite="strict")
        return response

    # -- pages ----------------------------------------------------------------------------------
    async def dashboard(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            stats = await self.actions.dashboard(who)
            return self.render(request, "dashboard.html", session=session, who=who, hosts_stats=stats["hosts"],
                               failures=stats["failures"], stanzas_per_minute=stats["stanzas_per_minute"],
                               shows_rate=set(self.actions.hosts(who)) >= self.actions.domains)
        return await self.page(request, build)

    async def users(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            host = self.host_of(request, who)
            return self.render(request, "users.html", session=session, who=who, host=host,
                               users=await self.actions.list_users(who, host), errors={}, values={})
        return await self.page(request, build)

    async def users_post(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            data = await self.form(request, session)
            if data is None:
                return self.refused_form(request, session, who)
            host, op = self.host_of(request, who, data.get("host", "")), data.get("op", "")
            user = data.get("user", "")
            back = "/admin/users?" + urlencode({"host": host})
            try:
                if op == "create":
                    name = await self.actions.create_user(who, host, data.get("username", ""), data.get("password", ""))
                    session.flash = f"created {name}@{host}"
                elif op == "delete":
                    if data.get("confirmed") != "yes":
                        return self.render(request, "confirm.html", session=session, who=who,
                                           title=f"Delete {user}@{host}?",
                                           text="The account and all its data (roster, archive, offline messages) "
                                                "are removed, and its sessions end. This cannot be undone.",
                                           action="/admin/users", fields={"op": "delete", "host": host, "user": user},
                                           button="Delete the account", back=back)
                    await self.actions.delete_user(who, host, user)
                    session.flash = f"deleted {user}@{host}"
                elif op == "password":
                    await self.actions.set_password(who, host, user, data.get("password", ""))
                    session.flash = f"password changed for {user}@{host}"
                elif op == "unlock":
                    was = await self.actions.unlock(who, host, user)
                    session.flash = f"unlocked {user}@{host}" if was else f"{user}@{host} was not locked"
                else:
                    return self.render(request, "error.html", 400, session, who, message=f"unknown action {op!r}")
            except ActionRefused as exc:
                if exc.status == 403 or op != "create":
                    return self.render(request, "error.html", exc.status, session, who, message=exc.message)
                users = await self.actions.list_users(who, host)
                return self.render(request, "users.html", exc.status, session, who, host=host, users=users,
                                   errors={exc.field or "username": exc.message},
                                   values={"username": data.get("username", "")})
            return self.redirect(back)
        return await self.page(request, build)

    async def sessions_page(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            host = self.host_of(request, who)
            return self.render(request, "sessions.html", session=session, who=who, host=host,
                               sessions=await self.actions.list_sessions(who, host))
        return await self.page(request, build)

    async def sessions_post(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            data = await self.form(request, session)
            if data is None:
                return self.refused_form(request, session, who)
            host, user, resource = self.host_of(request, who, data.get("host", "")), data.get("user", ""), \
                data.get("resource", "")
            back = "/admin/sessions?" + urlencode({"host": host})
            self.actions.check(who, roles.SESSIONS_END, host)
            if data.get("confirmed") != "yes":
                return self.render(request, "confirm.html", session=session, who=who,
                                   title=f"End the session {user}@{host}/{resource}?",
                                   text="The client is disconnected with a message that an administrator ended "
                                        "its session. The user can log in again.",
                                   action="/admin/sessions", fields={"host": host, "user": user, "resource": resource},
                                   button="End the session", back=back)
            ended = await self.actions.end_session(who, host, user, resource)
            session.flash = f"ended the session {ended['jid']}"
            return self.redirect(back)
        return await self.page(request, build)

    async def groups_page(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            host = self.host_of(request, who)
            return self.render(request, "groups.html", session=session, who=who, host=host,
                               groups=self.actions.list_groups(who, host), error="")
        return await self.page(request, build)

    async def groups_post(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            data = await self.form(request, session)
            if data is None:
                return self.refused_form(request, session, who)
            host, op, group = self.host_of(request, who, data.get("host", "")), data.get("op", ""), data.get("group", "")
            back = "/admin/groups?" + urlencode({"host": host})
            try:
                if op == "create":
                    made = await self.actions.create_group(who, host, data.get("group", ""), data.get("name", ""),
                                                           data.get("shared") == "on")
                    session.flash = f"created the group {made['id']}"
                elif op == "members":
                    members = [m for m in data.get("members", "").replace(",", " ").split() if m]
                    await self.actions.set_members(who, host, group, members)
                    session.flash = f"members of {group} saved"
                elif op == "delete":
                    if data.get("confirmed") != "yes":
                        return self.render(request, "confirm.html", session=session, who=who,
                                           title=f"Delete the group {group}?",
                                           text="Its members stop seeing each other through it.",
                                           action="/admin/groups", fields={"op": "delete", "host": host, "group": group},
                                           button="Delete the group", back=back)
                    await self.actions.delete_group(who, host, group)
                    session.flash = f"deleted the group {group}"
                else:
                    return self.render(request, "error.html", 400, session, who, message=f"unknown action {op!r}")
            except ActionRefused as exc:
                if exc.status == 403:
                    raise
                return self.render(request, "groups.html", exc.status, session, who, host=host,
                                   groups=self.actions.list_groups(who, host), error=exc.message)
            return self.redirect(back)
        return await self.page(request, build)

    async def permissions_page(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            host = self.host_of(request, who)
            return self.render(request, "permissions.html", session=session, who=who, host=host,
                               features=self.actions.list_permissions(who, host),
                               clients=self.actions.client_policy(who, host), error="")
        return await self.page(request, build)

    async def permissions_post(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            data = await self.form(request, session)
            if data is None:
                return self.refused_form(request, session, who)
            host, op, feature = self.host_of(request, who, data.get("host", "")), data.get("op", ""), \
                data.get("feature", "")
            back = "/admin/permissions?" + urlencode({"host": host})
            try:
                if op == "deny":
                    # The form edits the denied groups only: the allow_only part in force is kept.
                    current = {f["feature"]: f for f in self.actions.list_permissions(who, host)}
                    allow_only = current[feature]["effective"]["allow_only"] if feature in current else None
                    deny = [g for g in data.get("deny", "").replace(",", " ").split() if g]
                    await self.actions.set_permission(who, host, feature, deny, allow_only)
                    session.flash = (f"{feature}: denied to {', '.join(deny)}" if deny
                                     else f"{feature}: denied to no group")
                elif op == "reset":
                    await self.actions.reset_permission(who, host, feature)
                    session.flash = f"{feature}: back to the configured rule"
                else:
                    return self.render(request, "error.html", 400, session, who, message=f"unknown action {op!r}")
            except ActionRefused as exc:
                if exc.status == 403:
                    raise
                return self.render(request, "permissions.html", exc.status, session, who, host=host,
                                   features=self.actions.list_permissions(who, host),
                                   clients=self.actions.client_policy(who, host), error=exc.message)
            return self.redirect(back)
        return await self.page(request, build)

    async def audit_page(self, request: Request) -> Response:
        async def build(session: ConsoleSession, who: Principal) -> Response:
            host = self.host_of(request, who)
            before_text = request.query_params.get("before", "")
            before = int(before_text) if before_text.isdigit() and 0 < int(before_text) < 2**62 else None
            entries = await self.actions.audit_entries(who, host, limit=AUDIT_PAGE, before_id=before)
            older = entries[-1]["id"] if len(entries) == AUDIT_PAGE else None
            return self.render(request, "audit.html", session=session, who=who, host=host, entries=entries,
                               older=older)
        return await self.page(request, build)

    async def stylesheet(self, _request: Request) -> Response:
        return FileResponse(HERE / "static" / "console.css", media_type="text/css",
                            headers={"cache-control": "max-age=3600"})


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def build_console(actions: AdminActions) -> Any:
    """The console's ASGI application (mount it at /admin), with the 64 KiB body limit."""
    console = Console(actions)
    app = Starlette(routes=[
        Route("/", console.dashboard, methods=["GET"]),
        Route("/login", console.login_page, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/mfa", console.mfa_page, methods=["GET"]),
        Route("/mfa", console.mfa, methods=["POST"]),
        Route("/logout", console.logout, methods=["POST"]),
        Route("/users", console.users, methods=["GET"]),
        Route("/users", console.users_post, methods=["POST"]),
        Route("/sessions", console.sessions_page, methods=["GET"]),
        Route("/sessions", console.sessions_post, methods=["POST"]),
        Route("/groups", console.groups_page, methods=["GET"]),
        Route("/groups", console.groups_post, methods=["POST"]),
        Route("/permissions", console.permissions_page, methods=["GET"]),
        Route("/permissions", console.permissions_post, methods=["POST"]),
        Route("/audit", console.audit_page, methods=["GET"]),
        Route("/compliance", functools.partial(compliance_page, console), methods=["GET", "POST"]),
        Route("/static/console.css", console.stylesheet, methods=["GET"]),
    ])
    app.state.console = console
    return BodyLimit(app)
