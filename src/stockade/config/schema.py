"""The sections of the Stockade configuration file, one frozen dataclass each."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from .options import option


def _is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _check_domain(value: str) -> str | None:
    from ..protocol.jid import InvalidJid, normalise_domain
    try:
        if normalise_domain(value) != value:
            return f"write the domain in its normalised form: {normalise_domain(value)!r}"
    except InvalidJid as exc:
        return str(exc)
    return None


def _check_interfaces(value: list[str]) -> str | None:
    for addr in value:
        if addr in ("*", "::", "0.0.0.0", "localhost"):
            continue
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            return f"{addr!r} is not an IP address (use 0.0.0.0 or :: for every interface)"
    return None if value else "give at least one address"


@dataclass(frozen=True)
class ServerSection:
    data_dir: str = option("var", help="Folder for the database, certificates and uploads; relative paths are relative to the configuration file (or the current folder without one).")
    log_level: str = option("info", help="Least severe log level written.", choices=("debug", "info", "warning", "error"))
    hide_version: bool = option(False, help="Answer XEP-0092 software version queries without the version and operating system.")
    shutdown_grace: float = option(5.0, help="Seconds to wait for clients and storage on shutdown (SIGTERM).", min=0.0, max=300.0)
    use_uvloop: bool = option(True, help="Run on uvloop when it is installed (faster event loop).")
    disabled_modules: list[str] = option(help="Feature modules not to load (e.g. [\"mam\", \"carbons\"] for a routing-only benchmark). The core modules roster, presence and disco cannot be disabled.", factory=list,
                                         check=lambda v: next((f"{m!r} cannot be disabled: other modules need it" for m in v if m in ("roster", "presence", "disco")), None))
    account_check_interval: float = option(10.0, help="Seconds between checks for accounts added or removed outside the server (by `stockade user` on the same database); a removed account loses its sessions at the next check.", min=1.0, max=3600.0)


def _check_storage_url(value: str) -> str | None:
    if not value:
        return None
    from ..storage import StorageError
    from ..storage.engine import parse_url
    try:
        parse_url(value)
    except StorageError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class StorageSection:
    url: str = option("", help="Database URL: sqlite:///path/to/file.db or postgresql://user:password@host:port/db. Empty: SQLite in data_dir/stockade.db.", check=_check_storage_url)


@dataclass(frozen=True)
class TlsSection:
    cert_path: str = option("", help="PEM certificate chain served to clients. Empty: a self-signed certificate for every host, generated in data_dir/certs on first start.")
    key_path: str = option("", help="PEM private key for cert_path.")
    min_version: str = option("1.2", help="Oldest TLS version accepted.", choices=("1.2", "1.3"))
    ciphers: str = option("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS",
                          help="OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are all modern AEAD suites).")


@dataclass(frozen=True)
class C2SSection:
    interfaces: list[str] = option(help="Addresses the client listeners bind to.", factory=lambda: ["127.0.0.1"], check=_check_interfaces)
    port: int = option(5222, help="Client port with STARTTLS (RFC 6120). 0 lets the system choose (tests).", min=0, max=65535)
    direct_tls: bool = option(True, help="Also listen for direct TLS (XEP-0368).")
    direct_tls_port: int = option(5223, help="Client port with direct TLS (XEP-0368).", min=0, max=65535)
    require_tls: bool = option(True, help="Refuse authentication before TLS. May be false only when every interface is a loopback address (tests, benchmarks).")
    max_stanza_size: int = option(262144, help="Largest stanza accepted, in bytes; a larger one ends the stream with <policy-violation/>.", min=4096, max=16 * 1024 * 1024)
    max_depth: int = option(32, help="Deepest element nesting accepted in a stanza.", min=8, max=256)
    max_attributes: int = option(64, help="Most attributes accepted on one element.", min=8, max=1024)
    negotiation_timeout: float = option(30.0, help="Seconds a connection may take to authenticate and bind before it is closed (slow-loris protection).", min=1.0, max=600.0)
    max_connections_per_address: int = option(50, help="Open client connections allowed from one IP address.", min=1, max=100000)
    max_write_buffer: int = option(4 * 1024 * 1024, help="Bytes queued for a client that does not read before its connection is closed.", min=65536, max=1 << 30)


@dataclass(frozen=True)
class HttpSection:
    enabled: bool = option(True, help="Serve HTTPS: XMPP over WebSocket (RFC 7395), XEP-0156 discovery, file upload and the web client.")
    interfaces: list[str] = option(help="Addresses the HTTPS listener binds to.", factory=lambda: ["127.0.0.1"], check=_check_interfaces)
    port: int = option(5443, help="HTTPS port. 0 lets the system choose (tests).", min=0, max=65535)
    public_url: str = option("", help="The base URL clients reach this listener at, e.g. https://chat.example.com:5443 (behind a proxy or NAT). Empty: https://<the requested host>:<port>.",
                             check=lambda v: None if not v or v.startswith("https://") else "must start with https://")
    websocket_path: str = option("/xmpp-websocket", help="Path of the XMPP WebSocket endpoint.", check=lambda v: None if v.startswith("/") else "must start with /")
    websocket_origins: list[str] = option(help="Web origins allowed to open XMPP WebSockets (e.g. https://chat.example.com). Empty: any origin (clients still have to log in).", factory=list)
    web_client: bool = option(True, help="Serve the web client (Converse.js) at https://<host>:<port>/.")
    web_client_path: str = option("", help="Folder holding Converse.js's dist/ files. Empty: node_modules/converse.js/dist of the source tree (installed by make run).")
    metrics: bool = option(True, help="Serve Prometheus metrics at https://<host>:<port>/metrics (to loopback addresses, and to others with metrics_token).")
    metrics_token: str = option("", help="Bearer token that lets a scraper on another machine read /metrics (Authorization: Bearer <token>). Empty: loopback addresses only.",
                                check=lambda v: None if not v or len(v) >= 16 else "use at least 16 characters (or leave it empty: loopback only)")


@dataclass(frozen=True)
class AuthSection:
    mechanisms: list[str] = option(help="SASL mechanisms offered, in order. PLAIN is only ever offered inside TLS.",
                                   factory=lambda: ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"],
                                   choices=("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"))
    scram_iterations: int = option(4096, help="PBKDF2 rounds for newly set passwords.", min=4096, max=1_000_000)
    max_failures_per_account: int = option(5, help="Failed logins for one account within failure_window before it is locked.", min=1, max=1000)
    max_failures_per_address: int = option(20, help="Failed logins from one IP address within failure_window before the address is locked.", min=1, max=100000)
    failure_window: float = option(300.0, help="Seconds over which failed logins are counted.", min=1.0, max=86400.0)
    lockout: float = option(900.0, help="Seconds an account or address stays locked after too many failures.", min=1.0, max=86400.0 * 30)
    min_password_length: int = option(8, help="Shortest password accepted when a password is set.", min=1, max=1024)
    reject_common_passwords: bool = option(True, help="Refuse passwords on the shipped list of the most used passwords, also with digits or symbols added at the end or letters swapped for look-alikes (p@ssw0rd). See docs/account-security.md.")
    reject_username_in_password: bool = option(False, help="Refuse passwords that contain the user name (names of 3 characters or more).")
    password_history: int = option(5, help="A new password may not be any of the account's last N passwords, the current one included (kept as SCRAM verifiers, never in clear). 0 turns the check off.", min=0, max=100)


def _check_ldap_url(value: str) -> str | None:
    if not value.startswith(("ldap://", "ldaps://")):
        return "use ldap://host:port or ldaps://host:port"
    return None


def _check_ldap_filter(value: str) -> str | None:
    if value and not (value.startswith("(") and value.endswith(")")):
        return f"{value!r} is not an LDAP filter: write it in parentheses, e.g. (objectClass=person)"
    return None


@dataclass(frozen=True)
class DirectorySection:
    """One host's corporate directory (LDAP): see docs/directory.md."""
    url: str = option(help="The LDAP server, e.g. ldaps://ldap.example.com or ldap://127.0.0.1:389.", check=_check_ldap_url)
    base_dn: str = option(help="Where users and groups are searched, e.g. dc=example,dc=com.")
    bind_dn: str = option("", help="The service account that searches the directory. Empty: anonymous searches.")
    bind_password: str = option("", help="The service account's password.")
    user_filter: str = option("(objectClass=inetOrgPerson)", help="Which entries are user accounts.", check=_check_ldap_filter)
    group_filter: str = option("(objectClass=groupOfNames)", help="Which entries are groups.", check=_check_ldap_filter)
    disabled_filter: str = option("", help="Users matching this filter are disabled: they lose their sessions and cannot log in, e.g. (employeeType=disabled) or (shadowExpire=1). Empty: nobody is disabled.", check=_check_ldap_filter)
    username_attribute: str = option("uid", help="Attribute holding the user name (the part before @ in the address).")
    display_name_attribute: str = option("cn", help="Attribute holding the person's display name (e.g. cn or displayName).")
    mail_attribute: str = option("mail", help="Attribute holding the e-mail address.")
    group_name_attribute: str = option("cn", help="Attribute holding a group's name.")
    member_attribute: str = option("member", help="Group attribute listing members: DNs (member, uniqueMember) or user names (memberUid).")
    shared_groups: list[str] = option(help="Directory groups (by name) whose members see each other in their rosters (shared rosters).", factory=list)
    authentication: bool = option(True, help="Check the passwords of directory users by an LDAP bind as the user (SASL PLAIN, only inside TLS).")
    sync_interval: float = option(900.0, help="Seconds between automatic synchronisations; 0: only on demand (`stockade directory sync`).", min=0.0, max=86400.0 * 7)
    timeout: float = option(10.0, help="Seconds to wait for the LDAP server to connect or answer.", min=0.5, max=300.0)
    start_tls: bool = option(False, help="Upgrade ldap:// connections with StartTLS (the server certificate is verified).")
    ca_file: str = option("", help="PEM file of the CA that signed the LDAP server's certificate (ldaps:// or start_tls). Empty: the system's CAs.")


def _check_groups(value: list[str] | None) -> str | None:
    for name in value or ():
        if not name.strip():
            return "a group name cannot be empty"
    return None


@dataclass(frozen=True)
class FeatureGroupsSection:
    """Groups per feature, in [hosts.permissions.deny] or [hosts.permissions.allow_only]: see
    docs/permissions.md. The keys are the feature names of policy/permissions.py."""
    upload: list[str] | None = option(None, help="File upload (XEP-0363 slot requests).", check=_check_groups)
    muc_create: list[str] | None = option(None, help="Creating chat rooms (XEP-0045); entering existing rooms stays allowed.", check=_check_groups)
    federation: list[str] | None = option(None, help="Messages, presence and IQs to domains this server does not serve.", check=_check_groups)
    web_client: list[str] | None = option(None, help="Signing in over WebSocket (the web client, RFC 7395); refused with the stream error <policy-violation/>.", check=_check_groups)
    history: list[str] | None = option(None, help="Reading message archives (XEP-0313 queries on one's own archive and on rooms'); messages are still archived.", check=_check_groups)
    presence_outside_group: list[str] | None = option(None, help="Showing one's presence to contacts who share no group with one: their availability is withheld.", check=_check_groups)


@dataclass(frozen=True)
class PermissionsSection:
    """One host's feature permissions ([hosts.permissions]): see docs/permissions.md."""
    deny: FeatureGroupsSection | None = option(None, help="Per feature, the groups whose members may not use it ([hosts.permissions.deny], see below).")
    allow_only: FeatureGroupsSection | None = option(None, help="Per feature, the only groups whose members may use it; everyone else may not (an empty list: nobody). Deny wins over allow_only.")


@dataclass(frozen=True)
class PolicySection:
    """One host's threat-protection policy ([hosts.policy]): each control has its own sub-table
    ([hosts.policy.dlp], [hosts.policy.links], ...). See docs/policy.md."""


@dataclass(frozen=True)
class HostSection:
    domain: str = option(help="A domain served (a virtual host): users are user@domain.", check=_check_domain)
    # Password policy of this host; unset keys take the [auth] value (core/password_policy.py).
    min_password_length: int | None = option(None, help="This host's shortest password; unset: auth.min_password_length.", min=1, max=1024)
    reject_common_passwords: bool | None = option(None, help="This host's common-password rule; unset: auth.reject_common_passwords.")
    reject_username_in_password: bool | None = option(None, help="This host's user-name rule; unset: auth.reject_username_in_password.")
    password_history: int | None = option(None, help="This host's password history length; unset: auth.password_history.", min=0, max=100)
    directory: DirectorySection | None = option(None, help="The host's corporate directory ([hosts.directory], see below). None: accounts are managed locally only.")
    permissions: PermissionsSection | None = option(None, help="Which groups may use which features ([hosts.permissions], see below). None: every user may use every feature.")
    policy: PolicySection | None = option(None, help="Threat protection of this host: DLP, links, contacts, impostors, floods, files ([hosts.policy], see below). None: the built-in defaults of each control.")


@dataclass(frozen=True)
class ComponentSection:
    domain: str = option(help="Subdomain the external component (XEP-0114) serves, e.g. bot.example.com.", check=_check_domain)
    secret: str = option(help="Shared secret of the component handshake.", check=lambda v: None if len(v) >= 8 else "use at least 8 characters")


@dataclass(frozen=True)
class ComponentListenerSection:
    enabled: bool = option(False, help="Accept external components (XEP-0114).")
    interfaces: list[str] = option(help="Addresses the component listener binds to.", factory=lambda: ["127.0.0.1"], check=_check_interfaces)
    port: int = option(5347, help="Component port.", min=0, max=65535)


@dataclass(frozen=True)
class ServerConfig:
    """The whole configuration. `modules` holds each module's own table, validated by that module."""
    server: ServerSection = field(default_factory=ServerSection)
    storage: StorageSection = field(default_factory=StorageSection)
    tls: TlsSection = field(default_factory=TlsSection)
    c2s: C2SSection = field(default_factory=C2SSection)
    http: HttpSection = field(default_factory=HttpSection)
    auth: AuthSection = field(default_factory=AuthSection)
    hosts: list[HostSection] = field(default_factory=lambda: [HostSection("localhost")])
    components: list[ComponentSection] = field(default_factory=list)
    component_listener: ComponentListenerSection = field(default_factory=ComponentListenerSection)
    modules: dict[str, Any] = field(default_factory=dict)
    source: str = "(defaults)"            # the file this came from, for messages
    base_dir: str = "."                    # relative paths are relative to this folder

    @property
    def domains(self) -> list[str]:
        return [h.domain for h in self.hosts]


SECTIONS = {
    "server": ServerSection, "storage": StorageSection, "tls": TlsSection, "c2s": C2SSection, "http": HttpSection,
    "auth": AuthSection, "component_listener": ComponentListenerSection,
}
LIST_SECTIONS = {"hosts": HostSection, "components": ComponentSection}

__all__ = ["ServerConfig", "SECTIONS", "LIST_SECTIONS", "_is_loopback"]
