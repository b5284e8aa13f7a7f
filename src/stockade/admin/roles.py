"""Administrator roles and what each may do: the one table every admin surface checks.

An administrator has one role and a tenant scope (the hosts it manages; the operator manages
every host). A permission is checked together with the host it is used on:

    admin.may(USERS_CREATE, "example.com")      # role grants it AND example.com is in scope

API tokens carry scopes, a subset of their creator's permissions; a token may do what both its
scopes and its admin's current role allow, on the admin's hosts.
"""

from __future__ import annotations

# -- permissions ---------------------------------------------------------------------------------
USERS_READ = "users.read"
USERS_CREATE = "users.create"
USERS_DELETE = "users.delete"
USERS_PASSWORD = "users.password"          # set a new password for an account
USERS_UNLOCK = "users.unlock"              # end a login lockout
USERS_REVOKE = "users.revoke"              # end every session of an account
SESSIONS_READ = "sessions.read"
SESSIONS_END = "sessions.end"
GROUPS_READ = "groups.read"
GROUPS_WRITE = "groups.write"
AUDIT_READ = "audit.read"
AUDIT_VERIFY = "audit.verify"              # check the whole hash chain (server-wide)
PERMISSIONS_READ = "permissions.read"      # the feature permissions and approved-client policy of a host
PERMISSIONS_WRITE = "permissions.write"    # replace or reset a feature's rule at runtime
TOKENS = "tokens"                          # create, list and revoke one's own API tokens
ARCHIVE_SEARCH = "archive.search"          # eDiscovery: search, read and export the compliance journal
RETENTION = "retention"                    # legal holds (create, list, release), retention policy and purges
POLICY_READ = "policy.read"                # a host's threat-protection policy (DLP, links, ...)
POLICY_WRITE = "policy.write"              # replace or reset a host's policy at runtime
QUARANTINE_REVIEW = "quarantine.review"    # read, release and reject messages a policy held for review

ALL_PERMISSIONS = (USERS_READ, USERS_CREATE, USERS_DELETE, USERS_PASSWORD, USERS_UNLOCK, USERS_REVOKE,
                   SESSIONS_READ, SESSIONS_END, GROUPS_READ, GROUPS_WRITE, AUDIT_READ, AUDIT_VERIFY,
                   PERMISSIONS_READ, PERMISSIONS_WRITE, TOKENS, ARCHIVE_SEARCH, RETENTION,
                   POLICY_READ, POLICY_WRITE, QUARANTINE_REVIEW)

# -- roles -----------------------------------------------------------------------------------------
OPERATOR = "operator"
TENANT_ADMIN = "tenant_admin"
HELPDESK = "helpdesk"
COMPLIANCE = "compliance"
AUDITOR = "auditor"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    # everything, on every host, except reading what people wrote (eDiscovery is the compliance
    # officer's duty alone: running the server does not entitle anyone to read its messages)
    # (held messages are read by the compliance officer alone, for the same reason)
    OPERATOR: frozenset(ALL_PERMISSIONS) - {ARCHIVE_SEARCH, QUARANTINE_REVIEW},
    # everything within its hosts, except checking the server-wide audit chain
    TENANT_ADMIN: frozenset({USERS_READ, USERS_CREATE, USERS_DELETE, USERS_PASSWORD, USERS_UNLOCK, USERS_REVOKE,
                             SESSIONS_READ, SESSIONS_END, GROUPS_READ, GROUPS_WRITE, AUDIT_READ,
                             PERMISSIONS_READ, PERMISSIONS_WRITE, TOKENS, POLICY_READ, POLICY_WRITE}),
    # day-to-day support: passwords, lockouts, sessions. Not the feature permissions: their rules
    # name groups, which this role does not read either (a refusal's text already names the group).
    HELPDESK: frozenset({USERS_READ, USERS_PASSWORD, USERS_UNLOCK, USERS_REVOKE, SESSIONS_READ, SESSIONS_END,
                         TOKENS}),
    # read-only: who has an account, the audit trail, and eDiscovery of the compliance journal
    # Legal holds and retention (RETENTION) too: the operator has them as well, nobody else.
    # The policy in force (read-only) and the review of messages a policy held (quarantine).
    COMPLIANCE: frozenset({USERS_READ, AUDIT_READ, TOKENS, ARCHIVE_SEARCH, RETENTION, POLICY_READ,
                           QUARANTINE_REVIEW}),
    # read-only audit trail, and the chain check (permission changes are in the trail: no
    # permissions.read needed to follow them)
    AUDITOR: frozenset({AUDIT_READ, AUDIT_VERIFY, TOKENS}),
}

ROLES = tuple(ROLE_PERMISSIONS)

# Permissions that are not about one host: checked without a tenant.
SERVER_WIDE = frozenset({AUDIT_VERIFY, TOKENS})


def permissions_of(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role, frozenset())
