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

ALL_PERMISSIONS = (USERS_READ, USERS_CREATE, USERS_DELETE, USERS_PASSWORD, USERS_UNLOCK, USERS_REVOKE,
                   SESSIONS_READ, SESSIONS_END, GROUPS_READ, GROUPS_WRITE, AUDIT_READ, AUDIT_VERIFY,
                   PERMISSIONS_READ, PERMISSIONS_WRITE, TOKENS)

# -- roles -----------------------------------------------------------------------------------------
OPERATOR = "operator"
TENANT_ADMIN = "tenant_admin"
HELPDESK = "helpdesk"
COMPLIANCE = "compliance"
AUDITOR = "auditor"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    # everything, on every host
    OPERATOR: frozenset(ALL_PERMISSIONS),
    # everything within its hosts, except checking the server-wide audit chain
    TENANT_ADMIN: frozenset({USERS_READ, USERS_CREATE, USERS_DELETE, USERS_PASSWORD, USERS_UNLOCK, USERS_REVOKE,
                             SESSIONS_READ, SESSIONS_END, GROUPS_READ, GROUPS_WRITE, AUDIT_READ,
                             PERMISSIONS_READ, PERMISSIONS_WRITE, TOKENS}),
    # day-to-day support: passwords, lockouts, sessions. Not the feature permissions: their rules
    # name groups, which this role does not read either (a refusal's text already names the group).
    HELPDESK: frozenset({USERS_READ, USERS_PASSWORD, USERS_UNLOCK, USERS_REVOKE, SESSIONS_READ, SESSIONS_END,
                         TOKENS}),
    # read-only: who has an account, and the audit trail
    COMPLIANCE: frozenset({USERS_READ, AUDIT_READ, TOKENS}),
    # read-only audit trail, and the chain check (permission changes are in the trail: no
    # permissions.read needed to follow them)
    AUDITOR: frozenset({AUDIT_READ, AUDIT_VERIFY, TOKENS}),
}

ROLES = tuple(ROLE_PERMISSIONS)

# Permissions that are not about one host: checked without a tenant.
SERVER_WIDE = frozenset({AUDIT_VERIFY, TOKENS})


def permissions_of(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role, frozenset())
