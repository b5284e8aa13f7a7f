"""Schemathesis against the eDiscovery routes as a compliance officer of example.com (the
operator of test_api_schema.py is refused them): whatever it sends, the search and the export
never answer 5xx and every answer matches the documented schema and content types."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import A, B, make_admins, token_for
from .test_api_schema import CHECKS, EXAMPLES


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[RunningServer, str]]:
    with RunningServer(domains=[A, B]) as srv:
        make_admins(srv)
        srv.add_user(f"alice@{A}", "alice-pw-1234")
        srv.add_user(f"bob@{A}", "bob-pw-12345")

        async def talk() -> None:
            async with client(srv, f"alice@{A}", "alice-pw-1234") as alice, \
                       client(srv, f"bob@{A}", "bob-pw-12345") as bob:
                alice.send_message(mto=f"bob@{A}", mbody="schema check <b>text</b>", mtype="chat")
                await bob.next_message()
        srv.call(talk())
        yield srv, token_for(srv, "comp")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_the_ediscovery_routes_never_fail_and_match_their_schema(live, mode):
    srv, token = live
    schema = schemathesis.openapi.from_url(f"https://localhost:{srv.https_port}/api/v1/openapi.json",
                                           verify=str(srv.cert_path), timeout=30)
    operations = [r.ok() for r in schema.get_all_operations() if "/archive/" in r.ok().path]
    assert len(operations) == 2
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            if "host" in case.path_parameters and mode == GenerationMode.POSITIVE:
                case.path_parameters["host"] = A          # mostly the officer's own host: real answers
            case.call_and_validate(headers={"authorization": f"Bearer {token}"}, verify=str(srv.cert_path),
                                   checks=CHECKS, timeout=30)
        check()
