"""Schemathesis against the live OpenAPI document of a running server, as an operator: whatever
it sends, the API never answers 5xx and every answer matches the documented schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, \
    status_code_conformance

from stockade.testing.server import RunningServer

from .conftest import A, B, make_admins, token_for

EXAMPLES = 6            # per operation and mode: the whole run stays well under a minute
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[RunningServer, str]]:
    with RunningServer(domains=[A, B]) as srv:
        make_admins(srv)
        srv.add_user(f"alice@{A}", "alice-pw-1234")
        yield srv, token_for(srv, "ops")


@pytest.fixture(scope="module")
def api_schema(live):
    srv, _ = live
    return schemathesis.openapi.from_url(f"https://localhost:{srv.https_port}/api/v1/openapi.json",
                                         verify=str(srv.cert_path), timeout=30)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_the_api_never_fails_and_matches_its_schema(api_schema, live, mode):
    srv, token = live
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 18
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers={"authorization": f"Bearer {token}"}, verify=str(srv.cert_path),
                                   checks=CHECKS, timeout=30)
        check()


def test_the_openapi_document_is_served_and_lists_the_routes(api_schema):
    paths = set(api_schema.raw_schema["paths"])
    assert {"/hosts", "/hosts/{host}/users", "/hosts/{host}/users/{user}", "/hosts/{host}/sessions",
            "/hosts/{host}/sessions/{user}/{resource}", "/hosts/{host}/groups/{group}/members",
            "/hosts/{host}/audit", "/audit/verify", "/tokens"} <= paths
    assert api_schema.raw_schema["servers"] == [{"url": "/api/v1"}]
