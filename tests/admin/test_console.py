"""The web console over plain HTTPS requests: login with password then TOTP code, cookie flags,
CSRF refusal, and the role table hiding and refusing what an admin may not do."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pyotp
import pytest
import requests

from stockade.testing.server import RunningServer

from .conftest import A, ADMIN_PASSWORD, B, make_admins


_used: set[tuple[str, str]] = set()


def fresh_code(secret: str) -> str:
    """A code the server accepts now and that was not used yet: a used code is refused (no
    replay), and the server also accepts the codes of the 30-second steps before and after."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    for at in (now, now + 30, now - 30):
        code = totp.at(at)
        if (secret, code) not in _used:
            _used.add((secret, code))
            return code
    raise AssertionError("more than three logins of one admin within 30 seconds")


class Browser:
    """A cookie-keeping HTTPS client for /admin (ignores the environment's CA bundle: trusts the server's cert)."""

    def __init__(self, server: RunningServer) -> None:
        self.base = f"https://localhost:{server.https_port}/admin"
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = str(server.cert_path)
        self.csrf = ""

    def get(self, path: str) -> requests.Response:
        response = self.http.get(self.base + path, timeout=30)
        self._remember(response)
        return response

    def post(self, path: str, data: dict, *, csrf: bool = True) -> requests.Response:
        response = self.http.post(self.base + path, data={**data, **({"csrf": self.csrf} if csrf else {})}, timeout=30)
        self._remember(response)
        return response

    def _remember(self, response: requests.Response) -> None:
        found = re.search(r'name="csrf" value="([^"]+)"', response.text)
        if found:
            self.csrf = found.group(1)

    def login(self, name: str, secret: str | None) -> requests.Response:
        self.get("/login")
        response = self.post("/login", {"username": name, "password": ADMIN_PASSWORD})
        if secret:
            response = self.post("/mfa", {"code": fresh_code(secret)})
        return response

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def console_server() -> Iterator[tuple[RunningServer, dict]]:
    with RunningServer(domains=[A, B]) as srv:
        admins = make_admins(srv, totp=True)
        srv.add_user(f"alice@{B}", "alice-pw-1234")
        yield srv, {name: account.totp_secret for name, (account, _uri) in admins.items()}


@pytest.fixture
def browser(console_server) -> Iterator[Browser]:
    b = Browser(console_server[0])
    yield b
    b.close()


def test_login_needs_the_password_and_then_the_authenticator_code(console_server, browser):
    _, secrets = console_server
    browser.get("/login")
    first_cookie = browser.http.cookies.get("stockade_console")
    response = browser.post("/login", {"username": "ops", "password": ADMIN_PASSWORD})
    assert response.url.endswith("/admin/mfa")
    assert browser.http.cookies.get("stockade_console") != first_cookie        # a new id after the password
    assert browser.get("/").url.endswith("/admin/login")                        # not in yet without the code
    browser.post("/login", {"username": "ops", "password": ADMIN_PASSWORD})
    wrong = f"{(int(pyotp.TOTP(secrets['ops']).now()) + 1) % 1000000:06d}"
    response = browser.post("/mfa", {"code": wrong})
    assert response.status_code == 401 and "wrong or already used code" in response.text
    response = browser.post("/mfa", {"code": fresh_code(secrets["ops"])})
    assert response.status_code == 200 and response.url.endswith("/admin/")
    assert "<h1>Dashboard</h1>" in response.text


def test_a_wrong_password_is_refused_and_audited(console_server, browser):
    srv, _ = console_server
    browser.get("/login")
    response = browser.post("/login", {"username": "ops", "password": "not the password"})
    assert response.status_code == 401 and "wrong admin name or password" in response.text
    entry = srv.call(srv.server.audit.entries("", action="admin.login.failure", limit=1))[0]
    assert entry["target"] == "ops"


def test_the_session_cookie_is_httponly_secure_samesite_strict(console_server, browser):
    _, secrets = console_server
    browser.get("/login")
    response = browser.http.post(browser.base + "/login", timeout=30, allow_redirects=False,
                                 data={"csrf": browser.csrf, "username": "ops", "password": ADMIN_PASSWORD})
    cookie = response.headers["set-cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/admin"):
        assert flag.lower() in cookie.lower(), cookie
    csp = response.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp


def test_a_form_without_the_csrf_token_is_refused(console_server, browser):
    srv, secrets = console_server
    browser.login("ops", secrets["ops"])
    form = {"op": "create", "host": A, "username": "csrfvictim", "password": "victim-pw-1234"}
    response = browser.post("/users", form, csrf=False)
    assert response.status_code == 403 and "security token is missing or wrong" in response.text
    response = browser.post("/users", {**form, "csrf": "forged"}, csrf=False)
    assert response.status_code == 403
    assert not srv.call(srv.server.accounts.exists(A, "csrfvictim"))
    response = browser.post("/users", form)                                     # with the token it works
    assert response.status_code == 200 and "created csrfvictim@example.com" in response.text
    assert srv.call(srv.server.accounts.exists(A, "csrfvictim"))


def test_a_helpdesk_admin_sees_no_create_form_and_cannot_post_it(console_server, browser):
    srv, secrets = console_server
    browser.login("desk", secrets["desk"])
    page = browser.get(f"/users?host={A}")
    assert page.status_code == 200 and 'id="users"' in page.text
    assert 'id="create-user"' not in page.text and "Delete…" not in page.text
    assert "Set password" in page.text                                          # what helpdesk may do
    response = browser.post("/users", {"op": "create", "host": A, "username": "deskmade", "password": "desk-pw-12345"})
    assert response.status_code == 403 and "does not include the permission users.create" in response.text
    assert not srv.call(srv.server.accounts.exists(A, "deskmade"))
    assert 'id="nav-groups"' not in page.text


def test_a_tenant_admin_cannot_open_another_tenants_pages(console_server, browser):
    _, secrets = console_server
    browser.login("tadmin", secrets["tadmin"])
    response = browser.get(f"/users?host={B}")
    assert response.status_code == 403 and f"does not manage the host {B}" in response.text
    assert "alice" not in response.text


def test_a_password_policy_error_is_shown_next_to_the_field(console_server, browser):
    srv, secrets = console_server
    browser.login("tadmin", secrets["tadmin"])
    browser.get(f"/users?host={A}")
    response = browser.post("/users", {"op": "create", "host": A, "username": "weak", "password": "short"})
    assert response.status_code == 422
    assert re.search(r'id="password-error">the password is too short', response.text)
    assert 'value="weak"' in response.text                                      # what was typed is kept
    assert not srv.call(srv.server.accounts.exists(A, "weak"))


def test_repeated_failed_logins_refuse_that_admin_name_for_a_while(console_server, browser):
    browser.get("/login")
    for _ in range(5):
        assert browser.post("/login", {"username": "comp", "password": "guess"}).status_code == 401
    response = browser.post("/login", {"username": "comp", "password": ADMIN_PASSWORD})
    assert response.status_code == 429 and "too many failed logins for comp" in response.text
    assert browser.get("/").url.endswith("/admin/login")


def test_logging_out_ends_the_session_on_the_server(console_server, browser):
    _, secrets = console_server
    browser.login("aud", secrets["aud"])
    old_cookie = browser.http.cookies.get("stockade_console")
    assert browser.get(f"/audit?host={A}").status_code == 200
    browser.post("/logout", {})
    replay = requests.get(f"{browser.base}/audit?host={A}", cookies={"stockade_console": old_cookie},
                          verify=str(console_server[0].cert_path), timeout=30, allow_redirects=False)
    assert replay.status_code == 303 and replay.headers["location"] == "/admin/login"


def test_groups_are_created_and_given_members_in_the_console(console_server, browser):
    srv, secrets = console_server
    browser.login("ops", secrets["ops"])
    browser.get(f"/groups?host={B}")
    response = browser.post("/groups", {"op": "create", "host": B, "group": "sales", "name": "Sales", "shared": "on"})
    assert "created the group sales" in response.text
    response = browser.post("/groups", {"op": "members", "host": B, "group": "sales", "members": "alice nobody"})
    assert response.status_code == 422 and "no such account on other.org: nobody" in response.text
    response = browser.post("/groups", {"op": "members", "host": B, "group": "sales", "members": "alice"})
    assert "members of sales saved" in response.text
    group = srv.run(lambda: srv.server.groups.get(B, "sales"))
    assert group.shared and group.members == {"alice"}
