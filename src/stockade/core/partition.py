"""Which worker process serves an account, when a node runs several ([server] workers).

Each account has a home worker, chosen from its bare JID by a hash every process computes the
same way. All of an account's sessions live in its home worker: after SASL, a connection that
landed in another worker moves there (net/handoff.py). So everything kept per account (its
sessions and their presence, carbons, stream management, the roster cache, the archive's
per-owner writes) stays in one process, and what crosses between workers is only what would
cross between two servers: a stanza from one account to another, which the router forwards to
the recipient's home worker (core/router.py), where it takes the same path as a local one.

The services that are not an account (group chat, upload, the SOCKS5 proxy) run in worker 0;
stanzas to their domains are forwarded there.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from ..protocol.jid import JID
from ..protocol.xml import Element
from ..storage.archive_files import account_slot

SERVICE_WORKER = 0


class Partition:
    """The view one worker has of the others: homes, and a way to hand a stanza over."""

    def __init__(self, index: int, count: int,
                 forward: Callable[[int, Element, bool], asyncio.Future[None] | None],
                 service_domains: set[str]) -> None:
        assert 0 <= index < count
        self.index = index
        self.count = count
        # (worker, stanza, confirm): route it there; with confirm, a future that resolves once
        # that worker has routed it and stored what it caused.
        self.forward = forward
        self.service_domains = service_domains  # domains served by worker 0 (MUC, upload, proxy)

    def home(self, host: str, username: str) -> int:
        """The worker an account lives in. Stable across processes and restarts (not hash())."""
        return account_slot(host, username, self.count)

    def is_here(self, jid: JID) -> bool:
        """Whether the account `jid` names lives in this worker (True for a domain or a service)."""
        return jid.local is None or self.home(jid.domain, jid.local) == self.index
