"""Central control: administrator identities, roles and API tokens (identities.py, roles.py),
the operations they may perform (actions.py), the HTTP API under /api/v1 (api.py) and the web
console under /admin (console.py). docs/admin.md explains them to operators."""
