"""The corporate directory over LDAP (ldap3): read users and groups, check a password by binding.

ldap3 is synchronous. Everything here is plain blocking code, and callers run it in a worker
thread (`asyncio.to_thread`) so the event loop never waits on the directory. Every LDAP or
network failure becomes `DirectoryUnavailable`, which names the server and the reason; a caller
that gets it changes nothing (a sync never removes accounts because the directory was
unreachable).

Users are the entries under `base_dn` matching `user_filter`; those also matching
`disabled_filter` are disabled. Groups are the entries matching `group_filter`; their members are
DNs of users (member, uniqueMember) or plain user names (memberUid). Nested groups are not
expanded.
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field

import ldap3
from ldap3.core.exceptions import LDAPBindError, LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import safe_dn

from ..config.schema import DirectorySection

PAGE_SIZE = 500


class DirectoryUnavailable(Exception):
    """The directory could not be searched; the text names the server and says why."""


@dataclass(frozen=True, slots=True)
class DirectoryUser:
    username: str                  # as written in the directory (not yet normalised)
    dn: str
    display_name: str = ""
    mail: str = ""
    is_disabled: bool = False


@dataclass(frozen=True, slots=True)
class DirectoryGroup:
    name: str
    dn: str
    members: tuple[str, ...]       # user names (the username attribute of each member)


@dataclass
class Snapshot:
    """Everything one sync reads: users by username, groups by name."""
    users: dict[str, DirectoryUser] = field(default_factory=dict)
    groups: dict[str, DirectoryGroup] = field(default_factory=dict)


def normalise_dn(dn: str) -> str:
    """A DN in a form that compares equal however it was spelt (spaces, case)."""
    try:
        return safe_dn(dn).lower()
    except LDAPException:
        return dn.strip().lower()


def _first(entry: dict, attribute: str) -> str:
    value = entry.get("attributes", {}).get(attribute)
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def _all(entry: dict, attribute: str) -> list[str]:
    value = entry.get("attributes", {}).get(attribute)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


class LdapDirectory:
    """One host's directory, as configured in its [hosts.directory] table."""

    def __init__(self, settings: DirectorySection) -> None:
        self.settings = settings

    # -- connections ----------------------------------------------------------------------------
    def _server(self) -> ldap3.Server:
        s = self.settings
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=s.ca_file or None)
        return ldap3.Server(s.url, connect_timeout=s.timeout, tls=tls, get_info=ldap3.NONE)

    def _connect(self, dn: str, password: str) -> ldap3.Connection:
        """A bound connection; LDAPBindError for refused credentials, other LDAPException otherwise."""
        s = self.settings
        # ldap3 packs receive_timeout into a socket option as an integer.
        conn = ldap3.Connection(self._server(), dn or None, password or None, receive_timeout=math.ceil(s.timeout),
                                raise_exceptions=False, read_only=True)
        conn.open()
        if s.start_tls and not s.url.startswith("ldaps://"):
            conn.start_tls()
        if not conn.bind():
            result = conn.result or {}
            conn.unbind()
            raise LDAPBindError(f"{result.get('description', 'bind refused')}"
                                f"{': ' + result['message'] if result.get('message') else ''}")
        return conn

    def _service(self) -> ldap3.Connection:
        s = self.settings
        try:
            return self._connect(s.bind_dn, s.bind_password)
        except LDAPBindError as exc:
            raise DirectoryUnavailable(f"{s.url}: the service account {s.bind_dn or '(anonymous)'} was "
                                       f"refused ({exc}); check bind_dn and bind_password") from None
        except LDAPException as exc:
            raise DirectoryUnavailable(f"{s.url}: cannot reach the directory ({exc})") from None

    def _search(self, conn: ldap3.Connection, search_filter: str, attributes: list[str],
                base: str | None = None, scope: str = ldap3.SUBTREE) -> list[dict]:
        s = self.settings
        try:
            entries = conn.extend.standard.paged_search(base or s.base_dn, search_filter, scope,
                                                        attributes=attributes, paged_size=PAGE_SIZE,
                                                        generator=False)
        except LDAPException as exc:
            raise DirectoryUnavailable(f"{s.url}: searching {search_filter} under {s.base_dn} failed ({exc})") from None
        result = conn.result or {}
        if result.get("result", 0) not in (0,):
            raise DirectoryUnavailable(f"{s.url}: searching {search_filter} under {base or s.base_dn} failed "
                                       f"({result.get('description')}: {result.get('message') or 'no message'})")
        return [e for e in entries or [] if e.get("type") == "searchResEntry"]

    # -- reading --------------------------------------------------------------------------------
    def fetch(self) -> Snapshot:
        """Read every user and group. Raises DirectoryUnavailable; never returns a partial result."""
        s = self.settings
        conn = self._service()
        try:
            user_attrs = [s.username_attribute, s.display_name_attribute, s.mail_attribute]
            users = self._search(conn, s.user_filter, user_attrs)
            disabled: set[str] = set()
            if s.disabled_filter:
                disabled = {normalise_dn(e["dn"]) for e in
                            self._search(conn, f"(&{s.user_filter}{s.disabled_filter})", ["1.1"])}
            groups = self._search(conn, s.group_filter, [s.group_name_attribute, s.member_attribute])
        finally:
            conn.unbind()
        snapshot = Snapshot()
        by_dn: dict[str, str] = {}
        for entry in users:
            username = _first(entry, s.username_attribute)
            if not username:
                continue
            key = normalise_dn(entry["dn"])
            by_dn[key] = username
            snapshot.users[username] = DirectoryUser(username, entry["dn"], _first(entry, s.display_name_attribute),
                                                     _first(entry, s.mail_attribute), key in disabled)
        for entry in groups:
            name = _first(entry, s.group_name_attribute)
            if not name:
                continue
            members = []
            for value in _all(entry, s.member_attribute):
                # memberUid holds user names; member and uniqueMember hold DNs.
                username = by_dn.get(normalise_dn(value)) if "=" in value else value
                if username is not None and username in snapshot.users:
                    members.append(username)
            snapshot.groups[name] = DirectoryGroup(name, entry["dn"], tuple(sorted(set(members))))
        return snapshot

    # -- passwords ------------------------------------------------------------------------------
    def find_user(self, username: str) -> DirectoryUser | None:
        """The user's entry now (None when the directory does not know them)."""
        s = self.settings
        conn = self._service()
        try:
            name = escape_filter_chars(username)
            found = self._search(conn, f"(&{s.user_filter}({s.username_attribute}={name}))",
                                 [s.username_attribute, s.display_name_attribute, s.mail_attribute])
            if len(found) != 1:
                return None
            entry = found[0]
            is_disabled = bool(s.disabled_filter) and bool(
                self._search(conn, s.disabled_filter, ["1.1"], base=entry["dn"], scope=ldap3.BASE))
        finally:
            conn.unbind()
        return DirectoryUser(_first(entry, s.username_attribute), entry["dn"],
                             _first(entry, s.display_name_attribute), _first(entry, s.mail_attribute), is_disabled)

    def check_password(self, dn: str, password: str) -> bool:
        """Bind as `dn`. False for wrong credentials; DirectoryUnavailable when the directory
        could not say."""
        if not password:
            return False      # an empty password would be an unauthenticated bind, which "succeeds"
        try:
            self._connect(dn, password).unbind()
            return True
        except LDAPBindError:
            return False
        except LDAPException as exc:
            raise DirectoryUnavailable(f"{self.settings.url}: cannot reach the directory ({exc})") from None
