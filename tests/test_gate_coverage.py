"""No route and no command reads the store for output except through the egress gate.

Every store read method is wrapped to record whether it ran inside a
GuardedRepository method. Then every route of the app is called; a new route
that is not in ROUTE_CALLS fails the test, so it cannot be added unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.routing import APIRoute

from healthmesh.api.app import create_app
from healthmesh.gate.egress import GATE_ACTIVE
from healthmesh.node import Node
from healthmesh.store.sqlite import SQLiteStore
from tests.browser import SESSION_CSRF, session_headers
from tests.conftest import bearer, patient_bearer
from tests.test_gate import consent, obs

READS = ("read", "vread", "read_many", "by_rids", "search", "count", "stream", "history",
         "compartment")
BUNDLE = {"resourceType": "Bundle", "type": "batch", "entry": [
    {"request": {"method": "GET", "url": "Observation/o1"}}]}
# (method, route path) -> a concrete request exercising it
ROUTE_CALLS: dict[tuple[str, str], tuple[str, str, Any]] = {
    ("GET", "/fhir/metadata"): ("GET", "/fhir/metadata", None),
    ("POST", "/fhir"): ("POST", "/fhir", BUNDLE),
    ("POST", "/fhir/"): ("POST", "/fhir/", BUNDLE),
    ("GET", "/fhir/_history"): ("GET", "/fhir/_history", None),
    ("GET", "/fhir/{rtype}"): ("GET", "/fhir/Observation?_include=Observation:subject", None),
    ("POST", "/fhir/{rtype}/_search"): ("POST", "/fhir/Observation/_search", None),
    ("POST", "/fhir/{rtype}"): ("POST", "/fhir/Patient", {"resourceType": "Patient"}),
    ("GET", "/fhir/{rtype}/_history"): ("GET", "/fhir/Observation/_history", None),
    ("GET", "/fhir/{rtype}/{rid}"): ("GET", "/fhir/Observation/o1", None),
    ("PUT", "/fhir/{rtype}/{rid}"): ("PUT", "/fhir/Patient/p9",
                                     {"resourceType": "Patient", "id": "p9"}),
    ("DELETE", "/fhir/{rtype}/{rid}"): ("DELETE", "/fhir/Patient/p9", None),
    ("GET", "/fhir/{rtype}/{rid}/_history"): ("GET", "/fhir/Observation/o1/_history", None),
    ("GET", "/fhir/{rtype}/{rid}/_history/{vid}"): ("GET", "/fhir/Observation/o1/_history/1",
                                                    None),
    ("GET", "/fhir/Patient/{rid}/$everything"): ("GET", "/fhir/Patient/p1/$everything", None),
    ("PATCH", "/fhir/{path:path}"): ("PATCH", "/fhir/Patient/p1", None),
    ("HEAD", "/fhir/{path:path}"): ("HEAD", "/fhir/Patient/p1", None),
    ("OPTIONS", "/fhir/{path:path}"): ("OPTIONS", "/fhir/Patient/p1", None),
    ("GET", "/"): ("GET", "/", None),
    ("GET", "/consent-policy"): ("GET", "/consent-policy", None),
    ("GET", "/fhir/$export"): ("GET", "/fhir/$export", None),
    ("GET", "/fhir/Patient/$export"): ("GET", "/fhir/Patient/$export", None),
    ("GET", "/fhir/Group/{group_id}/$export"): ("GET", "/fhir/Group/g1/$export", None),
    ("GET", "/fhir/$export-status/{job_id}"): ("GET", "/fhir/$export-status/{job}", None),
    ("DELETE", "/fhir/$export-status/{job_id}"): ("DELETE", "/fhir/$export-status/{job}", None),
    ("GET", "/patient/consents"): ("GET", "/patient/consents", None),
    ("POST", "/patient/consents"): ("POST", "/patient/consents",
                                    {"purpose": "HRESCH", "allow": True}),
    ("POST", "/patient/consents/{consent_id}/revoke"): ("POST", "/patient/consents/c1/revoke",
                                                       None),
    ("GET", "/patient/consents/{consent_id}/receipt"): ("GET", "/patient/consents/c1/receipt",
                                                        None),
    ("GET", "/patient/access-log"): ("GET", "/patient/access-log", None),
    ("GET", "/patient/data"): ("GET", "/patient/data", None),
    ("GET", "/fhir/$export-file/{job_id}/{name}"): ("GET",
                                                     "/fhir/$export-file/{job}/Patient.ndjson",
                                                     None),
    ("GET", "/.well-known/smart-configuration"): ("GET", "/.well-known/smart-configuration",
                                                  None),
    ("GET", "/auth/jwks"): ("GET", "/auth/jwks", None),
    ("POST", "/auth/token"): ("POST", "/auth/token", None),
    ("GET", "/auth/authorize"): ("GET", "/auth/authorize", None),
    ("POST", "/auth/authorize"): ("POST", "/auth/authorize", None),
}
WEB_FORM = f"csrf={SESSION_CSRF}&purpose=HRESCH&allow=yes".encode()
PHQ9 = (f"csrf={SESSION_CSRF}&" + "&".join(f"{i}=LA6569-3" for i in (
    "44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3",
    "44260-8"))).encode()
ROUTE_CALLS.update({
    ("GET", "/web/"): ("GET", "/web/", None),
    ("GET", "/web/signin"): ("GET", "/web/signin", None),
    ("GET", "/web/callback"): ("GET", "/web/callback?code=x&state=y", None),
    ("POST", "/web/signout"): ("POST", "/web/signout", WEB_FORM),
    ("GET", "/web/lang"): ("GET", "/web/lang?l=fr", None),
    ("GET", "/web/me"): ("GET", "/web/me", None),
    ("GET", "/web/me/data.json"): ("GET", "/web/me/data.json", None),
    ("GET", "/web/me/consents"): ("GET", "/web/me/consents", None),
    ("POST", "/web/me/consents"): ("POST", "/web/me/consents", WEB_FORM),
    ("POST", "/web/me/consents/{consent_id}/revoke"): ("POST", "/web/me/consents/c1/revoke",
                                                      WEB_FORM),
    ("GET", "/web/me/consents/{consent_id}/receipt"): ("GET", "/web/me/consents/c1/receipt",
                                                       None),
    ("GET", "/web/me/access-log"): ("GET", "/web/me/access-log", None),
    ("GET", "/web/me/questionnaires"): ("GET", "/web/me/questionnaires", None),
    ("GET", "/web/me/questionnaires/{name}"): ("GET", "/web/me/questionnaires/phq-9", None),
    ("POST", "/web/me/questionnaires/{name}"): ("POST", "/web/me/questionnaires/phq-9", PHQ9),
    ("GET", "/web/steward"): ("GET", "/web/steward", None),
    ("GET", "/web/steward/releases"): ("GET", "/web/steward/releases", None),
    ("POST", "/web/steward/releases/{task_id}"): ("POST", "/web/steward/releases/t1", WEB_FORM),
    ("GET", "/web/steward/agreements"): ("GET", "/web/steward/agreements", None),
    ("GET", "/web/steward/audit"): ("GET", "/web/steward/audit?patient=p1", None),
    ("GET", "/web/steward/quality"): ("GET", "/web/steward/quality", None),
})
NOT_DATA = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/static-offline-docs"}


@pytest.fixture
def node(make_node: Any) -> Node:
    n: Node = make_node()
    n.store.put_many([{"resourceType": "Patient", "id": "p1"}, obs("o1", "p1"),
                      consent("c1", "p1", "HRESCH"),
                      {"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
                       "member": [{"entity": {"reference": "Patient/p1"}}]}])
    return n


@pytest.fixture
def unguarded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in READS:
        original = getattr(SQLiteStore, name)

        def wrapper(self: Any, *args: Any, __name: str = name, __orig: Any = original,
                    **kwargs: Any) -> Any:
            if not GATE_ACTIVE.get():
                calls.append(__name)
            return __orig(self, *args, **kwargs)

        monkeypatch.setattr(SQLiteStore, name, wrapper)
    return calls


def _routes(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in NOT_DATA:
            continue
        for method in route.methods:
            out.add((method, route.path))
    return out


def test_every_route_is_exercised_and_reads_only_through_the_gate(
    node: Node, unguarded: list[str]
) -> None:
    app = create_app(node)
    missing = _routes(app) - set(ROUTE_CALLS)
    assert not missing, f"new routes must be added to ROUTE_CALLS: {sorted(missing)}"

    async def call_all() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        statuses = []
        async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                     headers={**bearer(node), "Prefer": "respond-async"}) as client:
            kick = await client.get("/fhir/$export")
            job = kick.headers["content-location"].rsplit("/", 1)[1]
            for _ in range(100):  # let the job finish so its file exists
                if (await client.get(f"/fhir/$export-status/{job}")).status_code == 200:
                    break
                await anyio.sleep(0.05)
            calls = sorted(ROUTE_CALLS.values(), key=lambda c: c[0] == "DELETE")
            patient = patient_bearer(node, "p1")
            web = {"/web/me": session_headers(node, "patient", patient="p1"),
                   "/web/steward": session_headers(node, "steward")}
            for method, url, body in calls:
                url = url.replace("{job}", job)
                extra = patient if url.startswith("/patient") else next(
                    (h for prefix, h in web.items() if url.startswith(prefix)), {})
                content = None if body is None else body if isinstance(body, bytes) else \
                    httpx.Request("POST", "/", json=body).content
                kind = "application/x-www-form-urlencoded" if isinstance(body, bytes) \
                    else "application/fhir+json"
                response = await client.request(
                    method, url, content=content,
                    headers={**extra, **({"content-type": kind} if body else {})},
                )
                statuses.append(response.status_code)
        return statuses

    statuses = anyio.run(call_all)
    assert all(s < 500 for s in statuses), statuses
    assert unguarded == [], f"store read outside the egress gate: {unguarded}"


ALLOWED_STORE_USE = {
    # (module, function): store methods it may call directly (not egress of records)
    ("cli.py", "node_status"): {"counts"},
    ("cli.py", "_demo_guide"): {"search"},  # one Patient id, to print a demo token
    ("local.py", "_setup_node"): {"counts"},  # is the node loaded yet? nothing is printed
    ("agent.py", "_describe"): {"counts"},  # the catalogue's size, rounded to hundreds
    ("cli.py", "patient_token"): {"read"},  # existence check only; nothing is printed
    ("cli_auth.py", "mint_token"): {"read"},  # does the token's patient exist? (not printed)
    ("cli_auth.py", "user_add"): {"read"},  # does the patient user's record exist?
}


def test_commands_and_routes_do_not_touch_the_store_directly() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "healthmesh"
    files = [src / "cli.py", src / "cli_network.py", src / "cli_auth.py",
             *sorted((src / "api").glob("*.py")),
             *sorted((src / "network").glob("*.py")), *sorted((src / "web").glob("*.py"))]
    for path in files:
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            used = _store_calls(func)
            allowed = ALLOWED_STORE_USE.get((path.name, func.name), set())
            assert used <= allowed, f"{path.name}:{func.name} reads the store directly: {used}"


def _store_calls(func: ast.AST) -> set[str]:
    """Methods called as ``<x>.store.<method>(...)`` or ``<x>.fhir.<read method>(...)``
    (``<x>.auth.store`` is the OAuth store, not the FHIR store)."""
    found = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            is_owner = isinstance(owner, ast.Attribute) and owner.attr in ("store", "fhir")
            if is_owner and isinstance(owner.value, ast.Attribute) and owner.value.attr == "auth":
                continue  # node.auth.store: OAuth clients and users, not patient data
            if is_owner and (owner.attr == "store" or node.func.attr in (*READS, "everything")):
                found.add(node.func.attr)
    return found
