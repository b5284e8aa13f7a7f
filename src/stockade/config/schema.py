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
    workers: int = option(1, help="Worker processes that serve clients (all on the same ports; each account lives in one of them, see docs/architecture.md, \"Worker processes\"). 1: one process. With SQLite, each worker's archives go to a file of their own beside the database (stockade.archive-1.db, ...); a change of this number moves them at the next start.", min=1, max=64)
    pin_workers: bool = option(False, help="With several workers, run worker N on one CPU core (the Nth of those the server may use, modulo their number), like nginx's worker_cpu_affinity: for a machine that runs little else; measured in docs/benchmarks.md (\"An archive file per worker\").")
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


def _check_env_name(value: str) -> str | None:
    if value and not value.replace("_", "a").isalnum():
        return f"{value!r} is not an environment variable name: use letters, digits and _"
    return None


@dataclass(frozen=True)
class EncryptionSection:
    """[encryption]: encryption at rest of message archives, offline messages and uploaded files (docs/encryption.md)."""
    enabled: bool = option(True, help="Encrypt message bodies (MAM, group chat archives, offline messages, PEP items) and uploaded files with AES-256-GCM before they are stored. Turning it off later leaves stored data encrypted and unreadable by the server.")
    master_key_path: str = option("", help="The master key file (mode 0600; one key per line, the last one current). Empty: data_dir/keys/master.key, generated on first start while the database holds no encrypted data. Back it up apart from the database.")
    master_key_env: str = option("", help="Name of an environment variable that holds the master key (base64) instead of a key file; `stockade keys rotate` then refuses (see docs/encryption.md).", check=_check_env_name)


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
    new_connections_per_minute: int = option(300, help="New client connections accepted from one IP address per minute (loopback included); more are closed at once with <policy-violation/>. 0: no limit (benchmarks).", min=0, max=10_000_000)
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
    history: list[str] | None = option(None, help="Reading message archives (XEP-0313 queries on one's own archive and on rooms') and the discussion history a room sends on entering; messages are still archived.", check=_check_groups)
    presence_outside_group: list[str] | None = option(None, help="Showing one's presence to contacts who share no group with one: their availability is withheld.", check=_check_groups)


@dataclass(frozen=True)
class PermissionsSection:
    """One host's feature permissions ([hosts.permissions]): see docs/permissions.md."""
    deny: FeatureGroupsSection | None = option(None, help="Per feature, the groups whose members may not use it ([hosts.permissions.deny], see below).")
    allow_only: FeatureGroupsSection | None = option(None, help="Per feature, the only groups whose members may use it; everyone else may not (an empty list: nobody). Deny wins over allow_only.")


# -- [hosts.policy.files] and [malware]: uploaded files (policy/files.py, policy/malware.py) -------
DEFAULT_FILE_TYPES = [
    "application/pdf", "text/plain", "image/png", "image/jpeg", "image/gif", "image/webp",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
]
DEFAULT_BLOCKED_EXTENSIONS = [
    "exe", "dll", "scr", "com", "pif", "cpl", "msi", "msp", "bat", "cmd", "ps1", "psm1", "vbs", "vbe", "js",
    "jse", "wsf", "wsh", "hta", "lnk", "jar", "reg", "sh", "app", "elf", "bin", "so", "dylib", "iso", "img",
]


def _check_type_patterns(value: list[str]) -> str | None:
    from ..modules.upload.checks import check_pattern
    return next((p for p in map(check_pattern, value) if p), None)


def _check_extensions(value: list[str]) -> str | None:
    for ext in value:
        if not ext or ext != ext.lower() or "." in ext or "/" in ext:
            return f"{ext!r}: write each extension in lower case without the dot, e.g. \"exe\""
    return None


def _check_clamd(value: str) -> str | None:
    if value.startswith("/"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{value!r}: give the path of clamd's unix socket (/run/clamav/clamd.ctl) or host:port (127.0.0.1:3310)"
    return None


@dataclass(frozen=True)
class FilesPolicySection:
    """[hosts.policy.files]: what uploaded files may really be (by their bytes) and how large."""
    allowed_types: list[str] = option(help="Media types a file may be, judged by its content (magic bytes; text is UTF-8 without NUL bytes), like application/pdf or image/*. The type the uploader claimed and the type of the file name's extension must be allowed too.",
                                      factory=lambda: list(DEFAULT_FILE_TYPES), check=_check_type_patterns)
    blocked_extensions: list[str] = option(help="File name extensions refused whatever the content (programs and scripts a double-click would run).",
                                           factory=lambda: list(DEFAULT_BLOCKED_EXTENSIONS), check=_check_extensions)
    max_size: int = option(0, help="Largest file accepted on this host, in bytes; 0: only the upload module's max_file_size.", min=0, max=1 << 40)
    exempt_groups: list[str] = option(help="Groups (by id) whose members may upload any type and extension; their files are still size-capped and scanned, and programs disguised as documents are still refused.",
                                      factory=list, check=_check_groups)


@dataclass(frozen=True)
class MalwareSection:
    """[malware]: scanning of every uploaded file by ClamAV's daemon (clamd) before anyone can download it."""
    enabled: bool = option(False, help="Scan every uploaded file with clamd (INSTREAM) before it can be downloaded; an infected file is quarantined and administrators are alerted.")
    clamd: str = option("/run/clamav/clamd.ctl", help="Where clamd listens: the path of its unix socket (Debian: /run/clamav/clamd.ctl) or host:port of its TCP socket.", check=_check_clamd)
    timeout: float = option(60.0, help="Seconds one scan may take (connect, send, verdict) before the scanner counts as unavailable.", min=0.5, max=3600.0)
    fail_closed: bool = option(True, help="Refuse an upload when clamd cannot be reached or does not answer in time (recommended). false: accept it unscanned and record that in the audit log.")


# -- DLP and link policy ([hosts.policy.dlp], [hosts.policy.links]): policy/dlp.py, policy/links.py --
def _check_dlp_rules(value: list[Any]) -> str | None:
    from ..policy.dlp import rule_problem
    names: set[str] = set()
    for rule in value:
        problem = rule_problem(rule)
        if problem:
            return problem
        if rule.name in names:
            return f"rule {rule.name!r}: two rules have this name; give each rule its own name"
        names.add(rule.name)
    return None


def _check_link_domains(value: list[str]) -> str | None:
    from ..policy.links import domain_problem
    return next((p for p in map(domain_problem, value) if p), None)


@dataclass(frozen=True)
class DlpRuleSection:
    """One DLP rule ([[hosts.policy.dlp.rules]]): what it looks for, where, and what it does."""
    name: str = option(help="The rule's name, shown in refusals and the audit log (e.g. \"cards\").")
    kind: str = option(help="What the rule looks for: \"keywords\" (the keywords list, whole words, any case), \"regex\" (pattern, RE2 syntax), or a built-in detector: \"card\" (payment card numbers, Luhn-checked), \"ssn\" (US social security numbers), \"iban\" (mod-97 checked), \"credentials\" (private keys, cloud and API tokens).")
    keywords: list[str] = option(help="Words and phrases a keywords rule looks for.", factory=list)
    pattern: str = option("", help="The regular expression of a regex rule (RE2 syntax: linear time, no back-references or look-around).")
    direction: str = option("any", help="Which messages the rule scans: \"internal\" (to this server's domains), \"external\" (to other domains) or \"any\".")
    action: str = option("block", help="What a match does: \"block\" (the sender gets an error), \"redact\" (the match is masked in the delivered copy), \"quarantine\" (held for a compliance officer) or \"flag\" (delivered and reported).")
    groups: list[str] | None = option(None, help="Only senders in these groups (ids, as `stockade group list` shows) are checked. Unset: every sender.")
    text: str = option("", help="What the sender is told when the rule blocks a message. Empty: a text naming what was found and the rule.")


@dataclass(frozen=True)
class DlpSection:
    """Data loss prevention of one host ([hosts.policy.dlp]): see docs/policy.md."""
    rules: list[DlpRuleSection] = option(help="The DLP rules ([[hosts.policy.dlp.rules]]), checked on every message body and subject.", factory=list, check=_check_dlp_rules)


@dataclass(frozen=True)
class LinksSection:
    """Link policy of one host ([hosts.policy.links]): see docs/policy.md."""
    mode: str = option("allow", help="Links to domains on neither list: \"allow\" them, \"warn\" (the recipient's copy carries a visible warning) or \"block\" them.", choices=("allow", "warn", "block"))
    allow_domains: list[str] = option(help="Domains whose links always pass (subdomains included). The host's own domains always pass.", factory=list, check=_check_link_domains)
    deny_domains: list[str] = option(help="Domains whose links are always refused (subdomains included).", factory=list, check=_check_link_domains)
    suspicious: str = option("block", help="Links to look-alike domains (punycode or non-Latin letters, mixed scripts, confusables of an allowed or own domain such as examp1e.com): \"warn\" or \"block\".", choices=("warn", "block"))


# -- floods, unsolicited contact, impostors ([hosts.policy.flood|contact|impostor]) ----------------
# policy/flood.py, policy/contact.py, policy/impostor.py
CONTACT_MODES = ("anyone", "same_tenant", "contacts")


def _check_jids(value: list[str]) -> str | None:
    from ..protocol.jid import try_jid
    for address in value:
        jid = try_jid(address)
        if jid is None or jid.local is None or jid.resource is not None:
            return f"{address!r} is not an account address: write user@domain"
    return None


@dataclass(frozen=True)
class FloodSection:
    """Floods and worms of one host ([hosts.policy.flood]): see docs/policy.md. The defaults are on
    and generous: ordinary use never meets them."""
    enabled: bool = option(True, help="Apply the stanza rate limits, the fan-out limit and the worm detection below to this host's users.")
    session_rate: float = option(200.0, help="Stanzas per second one connection may send on average (token bucket); 0: no limit per connection.", min=0.0, max=1e6)
    session_burst: int = option(2000, help="Stanzas one connection may send at once above session_rate (the bucket's size).", min=1, max=10_000_000)
    user_rate: float = option(400.0, help="Stanzas per second one account may send on average, all its connections together; 0: no limit per account.", min=0.0, max=1e6)
    user_burst: int = option(4000, help="Stanzas one account may send at once above user_rate.", min=1, max=10_000_000)
    disconnect_after: int = option(500, help="Stanzas refused in a row for going too fast after which the stream ends with <policy-violation/>.", min=1, max=10_000_000)
    fanout_per_minute: int = option(120, help="Distinct recipients one account may start messaging within a minute; beyond it the account counts as a worm. 0: no limit.", min=0, max=1_000_000)
    identical_recipients: int = option(30, help="Distinct recipients of the same message body within identical_window that make a worm (the buddy-list worm pattern). 0: no detection.", min=0, max=1_000_000)
    identical_window: float = option(60.0, help="Seconds over which identical bodies to distinct recipients are counted.", min=1.0, max=86400.0)
    throttle_for: float = option(900.0, help="Seconds a worm-like account may not message new recipients (its existing conversations go on).", min=1.0, max=86400.0 * 7)
    suspend_on_worm: bool = option(False, help="Also suspend a worm-like account: end its sessions and lock it for suspend_for seconds (an administrator can unlock it earlier: `stockade user unlock`).")
    suspend_for: float = option(86400.0, help="Seconds a suspended account stays locked.", min=60.0, max=86400.0 * 30)
    exempt_groups: list[str] = option(help="Groups (by id) whose members have no fan-out limit and no worm detection (announcement bots); their rate limits stay.", factory=list, check=_check_groups)


@dataclass(frozen=True)
class ContactRuleSection:
    """Who may reach the members of some groups ([[hosts.policy.contact.rules]])."""
    groups: list[str] = option(help="Groups (by id) whose members this rule protects.", check=_check_groups)
    accepts: str = option(help="Who may start a conversation with them or ask for their presence: \"anyone\", \"same_tenant\" (accounts of this host) or \"contacts\" (only accounts in their roster with a subscription, or in a shared group).", choices=CONTACT_MODES)


@dataclass(frozen=True)
class ContactSection:
    """Unsolicited contact rules of one host ([hosts.policy.contact]): see docs/policy.md."""
    accepts: str = option("anyone", help="Who may start a conversation with this host's users or ask for their presence, unless a rule for one of their groups says otherwise: \"anyone\", \"same_tenant\" or \"contacts\".", choices=CONTACT_MODES)
    rules: list[ContactRuleSection] = option(help="Stricter or looser settings per group ([[hosts.policy.contact.rules]]); a user in several groups gets the strictest.", factory=list)
    refuse_external_subscriptions: bool = option(False, help="Answer subscription requests from other domains (other tenants, federated users) with \"unsubscribed\" at once; the user never sees them.")


@dataclass(frozen=True)
class ImpostorSection:
    """Impostor protection of one host ([hosts.policy.impostor]): see docs/policy.md."""
    label_external: bool = option(True, help="Mark messages from other domains (other tenants, federated users) with <external xmlns='urn:stockade:policy:0'/> for clients to show.")
    external_prefix: str = option("", help="Text put before the body of messages from other domains, e.g. \"[External] \". Empty: none.")
    lookalike_warning: bool = option(True, help="Warn the recipient when an external sender's address or nickname looks like a user of this host (examp1e.com, Cyrillic letters, c3o for ceo): a <lookalike/> element and lookalike_prefix.")
    lookalike_prefix: str = option("[Warning: this sender looks like {user} but is not] ", help="Text put before the body of a look-alike sender's message; {user} is the address it imitates. Empty: the element only.")
    first_contact: bool = option(False, help="Mark the first message from a sender the recipient has never exchanged messages with and does not have in the roster: a <first-contact/> element and first_contact_prefix.")
    first_contact_prefix: str = option("[First message from this sender] ", help="Text put before the body of a first-contact message. Empty: the element only.")


@dataclass(frozen=True)
class PolicySection:
    """One host's threat-protection policy ([hosts.policy]): each control has its own sub-table
    ([hosts.policy.dlp], [hosts.policy.links], ...). See docs/policy.md."""
    dlp: DlpSection | None = option(None, help="Data loss prevention rules ([hosts.policy.dlp], see below). None: no DLP.")
    links: LinksSection | None = option(None, help="Link policy ([hosts.policy.links], see below). None: links are not checked.")
    files: FilesPolicySection | None = option(None, help="Uploaded files: type allow-list by content, blocked extensions, size cap ([hosts.policy.files]). None: any type, but programs disguised as other files are still refused.")
    flood: FloodSection | None = option(None, help="Stanza rate limits, fan-out limit and worm detection ([hosts.policy.flood], see below). None: the defaults (on).")
    contact: ContactSection | None = option(None, help="Who may start conversations and ask for subscriptions ([hosts.policy.contact], see below). None: anyone.")
    impostor: ImpostorSection | None = option(None, help="External-sender labels, look-alike warnings, first-contact notices ([hosts.policy.impostor], see below). None: the defaults (external label and look-alike warning on).")
    alert_jids: list[str] = option(help="Accounts (user@domain) that receive administrator alerts of this host as headline messages (worms, infected files); alerts are also written to the audit log.", factory=list, check=_check_jids)


# -- retention, legal hold, archive notice, acceptable use (compliance/retention.py, modules/aup.py) --
def _check_retention_groups(value: list[Any]) -> str | None:
    seen: set[str] = set()
    for entry in value:
        if not entry.group.strip():
            return "a retention group needs the group's id (as `stockade group list` shows)"
        if entry.group in seen:
            return f"group {entry.group!r} is listed twice; give each group one retention"
        seen.add(entry.group)
    return None


@dataclass(frozen=True)
class RetentionGroupSection:
    """One group's retention ([[hosts.retention.groups]] or groups = [{group = "trading", days = 2555}])."""
    group: str = option(help="The group's id (as `stockade group list` shows).")
    days: int = option(help="Days its members' records are kept, in every store; 0: forever. A group only lengthens retention: a member keeps the longest of the store's own value and all their groups' values.", min=0, max=36500)


@dataclass(frozen=True)
class RetentionSection:
    """How long one host keeps records ([hosts.retention]): see docs/compliance.md. Legal holds
    (`stockade hold`) override every value here."""
    default_days: int = option(0, help="Days records (journal, message archives, offline messages, uploaded files) are kept; 0: forever.", min=0, max=36500)
    journal_days: int | None = option(None, help="Days compliance journal records are kept; unset: default_days. Never shorter than mam_days unless journal_may_be_shorter is true (checked per user, groups included).", min=0, max=36500)
    mam_days: int | None = option(None, help="Days users' message archives (XEP-0313) and room archives are kept; unset: default_days.", min=0, max=36500)
    offline_days: int | None = option(None, help="Days undelivered offline messages are kept; unset: default_days.", min=0, max=36500)
    files_days: int | None = option(None, help="Days uploaded files are kept; unset: default_days.", min=0, max=36500)
    groups: list[RetentionGroupSection] = option(help="Longer retention for members of groups, e.g. [{group = \"trading\", days = 2555}]. A user in several groups keeps the longest.", factory=list, check=_check_retention_groups)
    journal_may_be_shorter: bool = option(False, help="Let journal_days be shorter than a user's message archive retention (normally the journal keeps at least what users can still read).")
    purge_interval: float = option(3600.0, help="Seconds between two purges run by the server (each is recorded in the audit log as retention.purge).", min=1.0, max=86400.0 * 7)


@dataclass(frozen=True)
class ComplianceSection:
    """What one host tells its users ([hosts.compliance]): the archive notice and the acceptable-use
    policy. See docs/compliance.md."""
    notice: str = option("", help="Sent as a message from the domain to each user at every login, e.g. that their messages are archived. Empty: no notice.", check=lambda v: None if len(v) <= 4000 else "keep the notice under 4000 characters")
    aup_text: str = option("", help="The acceptable-use policy users are shown and must accept (ad-hoc command accept-aup on the domain).", check=lambda v: None if len(v) <= 20000 else "keep the policy under 20000 characters")
    aup_required: bool = option(False, help="Refuse users' messages (with <policy-violation/> and how to accept) until they accept aup_text in its current aup_version.")
    aup_version: str = option("1", help="The version of the policy; a new version has to be accepted again.", check=lambda v: None if v.strip() and len(v) <= 64 else "give a version of 1 to 64 characters, e.g. \"2025-01\"")


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
    retention: RetentionSection | None = option(None, help="How long records are kept ([hosts.retention], see below). None: everything is kept until removed by hand.")
    compliance: ComplianceSection | None = option(None, help="Archive notice and acceptable-use policy shown to users ([hosts.compliance], see below). None: neither.")
    journal_on_failure: str | None = option(None, help="This host's journal.on_failure (\"refuse\" or \"deliver\"); unset: journal.on_failure.", choices=("refuse", "deliver"))


@dataclass(frozen=True)
class JournalSection:
    """[journal]: the compliance journal of every message, upload, subscription change and policy verdict (docs/compliance.md)."""
    enabled: bool = option(True, help="Record every message, upload, subscription change and policy verdict in the tamper-evident compliance journal, before delivery.")
    signing_key_path: str = option("", help="Ed25519 private key (PEM, PKCS#8) that signs the journal's checkpoints. Empty: data_dir/keys/journal-signing.pem, generated on first start (mode 0600) with its public key beside it.")
    checkpoint_every: int = option(10000, help="Records between two signed checkpoints (one is also written at every shutdown).", min=1, max=10_000_000)
    on_failure: str = option("refuse", help="When the journal cannot write (database error, disk full): \"refuse\" new messages with <resource-constraint/> so that nothing is delivered unrecorded, or \"deliver\" them anyway (recorded once the database is back; audited as journal.bypass).", choices=("refuse", "deliver"))


@dataclass(frozen=True)
class EDiscoverySection:
    """[ediscovery]: the search index over the compliance journal (docs/compliance.md, "eDiscovery")."""
    index_interval: float = option(5.0, help="Seconds between two passes of the background indexer that adds new journal records to the eDiscovery search index (a search also brings the index up to date first).", min=0.1, max=3600)
    index_batch: int = option(500, help="Journal records read, decrypted and indexed per database transaction.", min=1, max=100_000)
    purge_sweep_interval: float = option(3600.0, help="Seconds between two sweeps that drop from the index the journal records retention purged (searches never show purged records in any case).", min=1, max=7 * 86400)


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
    malware: MalwareSection = field(default_factory=MalwareSection)
    encryption: EncryptionSection = field(default_factory=EncryptionSection)
    journal: JournalSection = field(default_factory=JournalSection)
    ediscovery: EDiscoverySection = field(default_factory=EDiscoverySection)
    modules: dict[str, Any] = field(default_factory=dict)
    source: str = "(defaults)"            # the file this came from, for messages
    base_dir: str = "."                    # relative paths are relative to this folder

    @property
    def domains(self) -> list[str]:
        return [h.domain for h in self.hosts]


SECTIONS = {
    "server": ServerSection, "storage": StorageSection, "tls": TlsSection, "c2s": C2SSection, "http": HttpSection,
    "auth": AuthSection, "component_listener": ComponentListenerSection,
    "malware": MalwareSection,
    "encryption": EncryptionSection,
    "journal": JournalSection,
    "ediscovery": EDiscoverySection,
}
LIST_SECTIONS = {"hosts": HostSection, "components": ComponentSection}

__all__ = ["ServerConfig", "SECTIONS", "LIST_SECTIONS", "_is_loopback"]
