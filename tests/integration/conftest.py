"""Integration tests drive the real server over real sockets with real clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade.testing.server import RunningServer

DOMAIN = "example.com"
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-3", "dave": "dave-pw-44"}


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A fresh server serving example.com and other.org, with four accounts on example.com."""
    with RunningServer(domains=[DOMAIN, "other.org"]) as srv:
        for user, password in USERS.items():
            srv.add_user(f"{user}@{DOMAIN}", password)
        yield srv


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"
