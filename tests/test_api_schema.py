"""Property-based API testing with schemathesis against the node's own OpenAPI schema,
authentication on: generated requests to every operation must never cause a server
error or a response the schema does not describe (bounded in examples, for CI)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from healthmesh.api.app import create_app
from healthmesh.node import init_node, open_node
from tests.conftest import bearer
from tests.test_gate import consent, obs

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _served() -> tuple[Any, dict[str, str]]:
    """One node for the whole module, built at import: schemathesis' lazy fixture loader
    does not run on pytest 9.2 (it sets a node attribute pytest removed), so the schema
    is loaded eagerly from a node in a throwaway folder."""
    root = Path(tempfile.mkdtemp(prefix="hm-schema-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    node = open_node(init_node(root / "node"), overrides={"rate_limit_per_minute": 1_000_000})
    atexit.register(node.close)
    node.store.put_many([{"resourceType": "Patient", "id": "p1"}, obs("o1", "p1"),
                         consent("c1", "p1", "HRESCH")])
    return create_app(node), bearer(node, scope="system/*.cruds")


APP, AUTH = _served()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case: Any) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_without_a_token_nothing_but_discovery_answers(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500
    public = ("/fhir/metadata", "/.well-known/", "/auth/", "/consent-policy", "/docs",
              "/openapi.json", "/redoc")
    if case.path == "/" or case.path.startswith(public):
        return
    assert response.status_code in (401, 404, 405, 413, 415, 429), (case.path, response.text)
