"""A throwaway OpenLDAP server (slapd) for tests (see shared/recipes/ldap.md).

    ldap = ThrowawayLdap(users={"alice": "alicepw"}, groups={"staff": ["alice"]}).start()
    ldap.url                               # ldap://127.0.0.1:PORT
    ldap.set_attribute(ldap.user_dn("alice"), "employeeType", ["disabled"])
    ldap.stop()                            # SIGTERM, temp directory removed

slapd runs from a slapd.conf in a temp directory (`slapd -f`): nothing under /etc is changed, the
schema files are only read. The base entries and the initial users and groups are bulk-loaded
offline with slapadd before the server starts; later changes go through ldap3 as the rootdn.
`-d 0` keeps slapd in the foreground, so the child PID is slapd itself and stopping it by PID
works. As root it simply runs as root (a disposable instance on 127.0.0.1 only).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .process import start_on_a_free_port, terminate

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
DEBIAN_PACKAGES = ("slapd", "ldap-utils")
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 10
PORT_ATTEMPTS = 10


class ThrowawayLdap:
    """One disposable slapd with people under ou=people and groups (groupOfNames) under ou=groups."""

    def __init__(self, users: dict[str, str] | None = None, groups: dict[str, list[str]] | None = None, *,
                 suffix: str = "dc=example,dc=com") -> None:
        self.suffix = suffix
        self.admin_dn = f"cn=admin,{suffix}"
        self.admin_password = secrets.token_hex(12)
        self.initial_users = dict(users or {})
        self.initial_groups = {name: list(members) for name, members in (groups or {}).items()}
        self.port: int | None = None
        self.url = ""
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ThrowawayLdap:
        _ensure_binaries()
        self._dir = Path(tempfile.mkdtemp(prefix="stockade-ldap-"))
        atexit.register(self.stop)
        try:
            self._configure()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        terminate(proc, signal.SIGTERM, STOP_TIMEOUT_S)
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> ThrowawayLdap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- names ----------------------------------------------------------------------------------
    def user_dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.suffix}"

    def group_dn(self, name: str) -> str:
        return f"cn={name},ou=groups,{self.suffix}"

    # -- changes (through ldap3, as the rootdn) -------------------------------------------------
    def admin(self):
        """An ldap3 connection bound as the rootdn (the caller unbinds it)."""
        import ldap3
        return ldap3.Connection(ldap3.Server(self.url, connect_timeout=5), self.admin_dn, self.admin_password,
                                auto_bind=True, receive_timeout=10)

    def _do(self, what: str, op) -> None:
        conn = self.admin()
        try:
            if not op(conn):
                raise RuntimeError(f"LDAP {what} failed: {conn.result.get('description')} "
                                   f"({conn.result.get('message') or 'no message'})")
        finally:
            conn.unbind()

    def add_user(self, uid: str, password: str, *, cn: str | None = None, mail: str | None = None,
                 **attributes: list[str]) -> str:
        from ldap3.utils.hashed import hashed
        from ldap3 import HASHED_SALTED_SHA
        dn = self.user_dn(uid)
        attrs = {"uid": uid, "cn": cn or f"{uid.capitalize()} Example", "sn": "Example",
                 "mail": mail or f"{uid}@example.com", "userPassword": hashed(HASHED_SALTED_SHA, password),
                 **attributes}
        self._do(f"add {dn}", lambda c: c.add(dn, ["inetOrgPerson"], attrs))
        return dn

    def set_attribute(self, dn: str, attribute: str, values: list[str]) -> None:
        """Replace the attribute's values ([] deletes the attribute)."""
        from ldap3 import MODIFY_REPLACE
        self._do(f"modify {dn}", lambda c: c.modify(dn, {attribute: [(MODIFY_REPLACE, values)]}))

    def delete(self, dn: str) -> None:
        self._do(f"delete {dn}", lambda c: c.delete(dn))

    def add_group(self, name: str, members: list[str]) -> str:
        dn = self.group_dn(name)
        self._do(f"add {dn}", lambda c: c.add(dn, ["groupOfNames"],
                                               {"cn": name, "member": [self.user_dn(m) for m in members]}))
        return dn

    def add_member(self, group: str, uid: str) -> None:
        from ldap3 import MODIFY_ADD
        dn = self.group_dn(group)
        self._do(f"add member to {dn}", lambda c: c.modify(dn, {"member": [(MODIFY_ADD, [self.user_dn(uid)])]}))

    def remove_member(self, group: str, uid: str) -> None:
        from ldap3 import MODIFY_DELETE
        dn = self.group_dn(group)
        self._do(f"remove member from {dn}",
                 lambda c: c.modify(dn, {"member": [(MODIFY_DELETE, [self.user_dn(uid)])]}))

    # -- internals ------------------------------------------------------------------------------
    def _configure(self) -> None:
        from ldap3 import HASHED_SALTED_SHA
        from ldap3.utils.hashed import hashed
        assert self._dir is not None
        (self._dir / "db").mkdir()
        d = self._dir
        includes = "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS)
        (d / "slapd.conf").write_text(
            f"{includes}pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"database mdb\nmaxsize 104857600\nsuffix \"{self.suffix}\"\nrootdn \"{self.admin_dn}\"\n"
            f"rootpw {hashed(HASHED_SALTED_SHA, self.admin_password)}\ndirectory {d}/db\n"
            "index objectClass eq\nindex uid,mail,member eq\n"
            "access to attrs=userPassword by self write by anonymous auth by * none\n"
            "access to * by * read\n")
        top = self.suffix.split(",")[0].split("=", 1)[1]
        entries = [
            f"dn: {self.suffix}\nobjectClass: dcObject\nobjectClass: organization\ndc: {top}\no: Example Corp\n",
            f"dn: ou=people,{self.suffix}\nobjectClass: organizationalUnit\nou: people\n",
            f"dn: ou=groups,{self.suffix}\nobjectClass: organizationalUnit\nou: groups\n",
        ]
        for uid, password in self.initial_users.items():
            entries.append(f"dn: {self.user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                           f"cn: {uid.capitalize()} Example\nsn: Example\nmail: {uid}@example.com\n"
                           f"userPassword: {hashed(HASHED_SALTED_SHA, password)}\n")
        for name, members in self.initial_groups.items():
            lines = "".join(f"member: {self.user_dn(m)}\n" for m in members)
            entries.append(f"dn: {self.group_dn(name)}\nobjectClass: groupOfNames\ncn: {name}\n{lines}")
        (d / "data.ldif").write_text("\n".join(entries))
        result = subprocess.run([str(SLAPADD), "-f", str(d / "slapd.conf"), "-l", str(d / "data.ldif")],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"slapadd failed (exit {result.returncode}): {result.stderr.strip()}")

    def _start_server(self) -> None:
        assert self._dir is not None
        import ldap3
        from ldap3.core.exceptions import LDAPException
        log_path = self._dir / "slapd.out"

        def spawn(port: int) -> subprocess.Popen[bytes]:
            with open(log_path, "wb") as log:
                # -d 0: foreground, no extra logging; the PID is slapd's own. When the port is
                # taken it prints nothing and exits with 1.
                return subprocess.Popen([str(SLAPD), "-d", "0", "-h", f"ldap://127.0.0.1:{port}/",
                                         "-f", str(self._dir / "slapd.conf")],
                                        stdout=log, stderr=subprocess.STDOUT)

        def is_ready(port: int) -> bool:
            try:
                conn = ldap3.Connection(ldap3.Server(f"ldap://127.0.0.1:{port}", connect_timeout=1), self.admin_dn,
                                        self.admin_password, auto_bind=True, receive_timeout=2)
            except LDAPException:
                return False
            conn.unbind()
            return True

        self._proc, self.port = start_on_a_free_port("slapd", spawn, is_ready, log_path,
                                                     attempts=PORT_ATTEMPTS, timeout=START_TIMEOUT_S)
        self.url = f"ldap://127.0.0.1:{self.port}"


def _ensure_binaries() -> None:
    if SLAPD.exists() and SLAPADD.exists():
        return
    packages = " ".join(DEBIAN_PACKAGES)
    if os.geteuid() != 0:
        raise RuntimeError(f"OpenLDAP is not installed ({SLAPD} is missing); install it "
                           f"(apt-get install {packages}) and retry")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)   # fresh container
        subprocess.run(install, env=env, capture_output=True, check=True)
    if not SLAPD.exists():
        raise RuntimeError(f"installed {packages} but {SLAPD} is still missing")
