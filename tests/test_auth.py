"""Authentication and authorisation: SMART scopes, access tokens, the OAuth grants, and
refusals for every way a caller may be wrong (each refused with the right status and
audited)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import orjson
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from healthmesh.api.app import create_app
from healthmesh.auth import (
    Client,
    InvalidScope,
    TokenService,
    parse_scopes,
    pkce_challenge,
)
from healthmesh.node import Node
from tests.conftest import bearer, patient_bearer, run_asgi
from tests.test_gate import node as gate_node  # noqa: F401  (patients p1..p4 with consents)

TOKEN_URL = "http://node/auth/token"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM = {"content-type": "application/x-www-form-urlencoded"}


# -- scopes -----------------------------------------------------------------------------


def test_scope_grammar() -> None:
    scopes = parse_scopes("patient/Observation.rs?category=laboratory user/*.cruds openid "
                          "system/Patient.read")
    assert [str(s) for s in scopes.resource] == [
        "patient/Observation.rs?category=laboratory", "user/*.cruds", "system/Patient.rs"]
    assert scopes.other == ("openid",)
    assert scopes.constraints("Observation", "r") == []  # user/*.cruds is unconstrained
    only_labs = parse_scopes("patient/Observation.rs?category=laboratory "
                             "patient/Observation.rs?category=vital-signs")
    assert only_labs.constraints("Observation", "s") == [
        (("category", "laboratory"),), (("category", "vital-signs"),)]
    assert only_labs.constraints("Observation", "c") is None
    assert only_labs.constraints("Condition", "r") is None


@pytest.mark.parametrize("bad", [
    "patient/Observation.sr",  # out of order
    "patient/Observation.rr",  # repeated
    "patient/Observation.x",
    "nobody/Observation.rs",
    "patient/observation.rs",
    "patient/Observation.rs?category",  # a constraint must be name=value
    "system/*.rs " * 65,  # too many
])
def test_bad_scopes_are_refused(bad: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scopes(bad)


def test_granting_keeps_only_what_the_client_may_have() -> None:
    allowed = parse_scopes("system/Observation.rs system/Patient.r")
    asked = parse_scopes("system/Observation.r system/Patient.rs system/Condition.rs")
    assert str(asked.within(allowed)) == "system/Observation.r"


# -- tokens at the API --------------------------------------------------------------------


def get(node: Node, url: str, headers: dict[str, str] | None = None,
        app_kwargs: dict[str, Any] | None = None) -> httpx.Response:
    app = create_app(node, **(app_kwargs or {}))

    async def call(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(url, headers=headers or {})

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return await call(client)

    import anyio

    return anyio.run(go)


def _token(node: Node, **claims: Any) -> str:
    values: dict[str, Any] = {"subject": "svc", "client_id": "svc",
                              "scopes": parse_scopes("system/*.rs"), "purpose": "TREAT",
                              "org": "Organization/city-clinic", "ttl": 60}
    values.update(claims)
    return TokenService(node.folder).issue(**values)[0]


def _audited_denials(node: Node) -> list[Any]:
    return [e.record for e in node.audit.entries(limit=200) if e.record.decision == "deny"]


def test_every_kind_of_bad_token_is_refused(gate_node: Node, tmp_path: Any) -> None:  # noqa: F811
    from healthmesh.node import init_node, open_node

    other = open_node(init_node(tmp_path / "other-node"))
    try:
        foreign = _token(other)  # signed by another node's key
    finally:
        other.close()
    good = _token(gate_node)
    header, payload, signature = good.split(".")
    forged_claims = orjson.loads(jwt.utils.base64url_decode(payload))
    forged_claims["scope"] = "system/*.cruds"
    forged = ".".join([header, jwt.utils.base64url_encode(orjson.dumps(forged_claims)).decode(),
                       signature])
    cases = {
        "none": ({}, 401),
        "not bearer": ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        "garbage": ({"Authorization": "Bearer not-a-jwt"}, 401),
        "expired": ({"Authorization": "Bearer " + _expired(gate_node)}, 401),
        "another audience": ({"Authorization": "Bearer " + _token(
            gate_node, audience="urn:healthmesh:node:elsewhere")}, 401),
        "another node": ({"Authorization": "Bearer " + foreign}, 401),
        "forged": ({"Authorization": "Bearer " + forged}, 401),
        "alg none": ({"Authorization": "Bearer " + jwt.encode(
            {**forged_claims}, key=None, algorithm="none")}, 401),
        "wrong scope": ({"Authorization": "Bearer " + _token(
            gate_node, scopes=parse_scopes("system/Condition.rs"))}, 403),
        "purpose not in token": ({"Authorization": "Bearer " + good,
                                  "X-Purpose-Of-Use": "HRESCH"}, 403),
    }
    for name, (headers, status) in cases.items():
        before = len(_audited_denials(gate_node))
        response = get(gate_node, "/fhir/Observation/o-p1", headers)
        assert response.status_code == status, (name, response.text)
        assert response.json()["resourceType"] == "OperationOutcome", name
        denials = _audited_denials(gate_node)
        assert len(denials) > before, f"{name}: refusal not audited"
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer"), name
            newest = max(denials, key=lambda r: r.time)
            assert newest.action == "authenticate" and newest.outcome == 401, name
            assert newest.detail == {"method": "GET", "path": "/fhir/Observation/o-p1"}
    assert get(gate_node, "/fhir/Observation/o-p1",
               {"Authorization": "Bearer " + good}).status_code == 200


def _expired(node: Node) -> str:
    service = TokenService(node.folder)
    now = int(time.time())
    payload = {"iss": service.audience, "aud": service.audience, "sub": "svc", "jti": "x",
               "iat": now - 600, "exp": now - 120, "scope": "system/*.rs", "purpose": "TREAT"}
    return jwt.encode(payload, service._key, algorithm="EdDSA")


def test_discovery_and_metadata_need_no_token(gate_node: Node) -> None:  # noqa: F811
    config = get(gate_node, "/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == "http://node/auth/token"
    assert "S256" in config["code_challenge_methods_supported"]
    assert get(gate_node, "/fhir/metadata").status_code == 200
    keys = get(gate_node, "/auth/jwks").json()["keys"]
    assert keys[0]["kty"] == "OKP" and "d" not in keys[0]  # public half only


def test_scope_constraints_narrow_searches_and_reads(gate_node: Node) -> None:  # noqa: F811
    gate_node.store.put_many([
        {"resourceType": "Observation", "id": "lab-1", "status": "final",
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                   "observation-category", "code": "laboratory"}]}],
         "code": {"text": "HbA1c"}, "subject": {"reference": "Patient/p1"}},
    ])
    labs = bearer(gate_node, "Organization/city-clinic", "TREAT",
                  "system/Observation.rs?category=laboratory")
    found = get(gate_node, "/fhir/Observation", labs).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["lab-1"]
    assert get(gate_node, "/fhir/Observation/lab-1", labs).status_code == 200
    assert get(gate_node, "/fhir/Observation/o-p1", labs).status_code == 403  # not a lab
    assert get(gate_node, "/fhir/Condition", labs).status_code == 403


def test_a_token_bound_to_one_patient_sees_that_patient_only(gate_node: Node) -> None:  # noqa: F811
    one = bearer(gate_node, "Organization/city-clinic", "TREAT", "system/*.rs", patient="p1")
    found = get(gate_node, "/fhir/Observation", one).json()
    subjects = {e["resource"]["subject"]["reference"] for e in found.get("entry", [])}
    assert subjects == {"Patient/p1"}
    assert get(gate_node, "/fhir/Observation/o-p2", one).status_code == 403
    assert get(gate_node, "/fhir/Patient/p2/$everything", one).status_code == 403


def test_writes_need_write_scopes(gate_node: Node) -> None:  # noqa: F811
    read_only = bearer(gate_node, "Organization/city-clinic", "TREAT", "system/*.rs")
    writer = bearer(gate_node, "Organization/city-clinic", "TREAT", "system/Patient.cu")

    async def calls(client: httpx.AsyncClient) -> list[int]:
        body = {"resourceType": "Patient", "gender": "female"}
        refused = await client.post("/fhir/Patient", json=body, headers=read_only)
        created = await client.post("/fhir/Patient", json=body, headers=writer)
        deleted = await client.delete(f"/fhir/Patient/{created.json()['id']}", headers=writer)
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": body, "request": {"method": "POST", "url": "Patient"}}]}
        in_bundle = await client.post("/fhir", json=bundle, headers=read_only)
        return [refused.status_code, created.status_code, deleted.status_code,
                int(in_bundle.json()["entry"][0]["response"]["status"][:3])]

    assert run_asgi(gate_node, calls) == [403, 201, 403, 403]
    reasons = [r.reason or "" for r in _audited_denials(gate_node) if r.rule == "scope"]
    assert any("create of Patient" in r for r in reasons)


# -- SMART Backend Services (client credentials with a signed assertion) ------------------


@pytest.fixture
def backend(gate_node: Node) -> tuple[Node, Any]:  # noqa: F811
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "k1", "alg": "ES384"})
    gate_node.auth.store.add_client(Client(
        "lab-system", "Lab system", "Organization/city-clinic", "system/*.rs",
        ("TREAT",), {"keys": [jwk]}, ()))
    return gate_node, key


def _assertion(key: Any, client: str = "lab-system", **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": client, "sub": client, "aud": TOKEN_URL, "exp": now + 240,
              "jti": uuid.uuid4().hex}
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"})


def post_form(node: Node, url: str, form: dict[str, str]) -> httpx.Response:
    async def call(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(url, data=form, headers=FORM)

    return run_asgi(node, call)


def test_backend_service_gets_a_token_and_reads(backend: tuple[Node, Any]) -> None:
    node, key = backend
    answer = post_form(node, "/auth/token", {
        "grant_type": "client_credentials", "scope": "system/Observation.rs",
        "client_assertion_type": ASSERTION, "client_assertion": _assertion(key)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/Observation.rs"
    assert 0 < body["expires_in"] <= 300 and answer.headers["cache-control"] == "no-store"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert get(node, "/fhir/Observation/o-p1", auth).status_code == 200
    assert get(node, "/fhir/Patient/p1", auth).status_code == 403  # not granted
    issued = [e.record for e in node.audit.entries(action="token", limit=10)]
    assert issued and issued[0].actor == "client:lab-system" and issued[0].purpose == "TREAT"


def test_bad_client_assertions_are_refused(backend: tuple[Node, Any]) -> None:
    node, key = backend
    stranger = ec.generate_private_key(ec.SECP384R1())
    used = _assertion(key)
    cases = {
        "unknown client": _assertion(key, client="nobody"),
        "wrong audience": _assertion(key, aud="http://elsewhere/token"),
        "too long-lived": _assertion(key, exp=int(time.time()) + 3600),
        "expired": _assertion(key, exp=int(time.time()) - 120),
        "another key": _assertion(stranger),
        "sub differs": _assertion(key, sub="someone-else"),
        "replayed": used,
    }
    first = post_form(node, "/auth/token", {"grant_type": "client_credentials",
                                            "scope": "system/*.rs",
                                            "client_assertion_type": ASSERTION,
                                            "client_assertion": used})
    assert first.status_code == 200
    for name, assertion in cases.items():
        answer = post_form(node, "/auth/token", {
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": ASSERTION, "client_assertion": assertion})
        assert answer.status_code == 401, name
        assert answer.json()["error"] == "invalid_client", name
    over = post_form(node, "/auth/token", {
        "grant_type": "client_credentials", "scope": "system/*.cruds",  # more than allowed
        "client_assertion_type": ASSERTION, "client_assertion": _assertion(key)})
    assert over.status_code == 200 and over.json()["scope"] == "system/*.rs" or \
        over.json()["error"] == "invalid_scope"
    nothing = post_form(node, "/auth/token", {
        "grant_type": "client_credentials", "scope": "system/Patient.c",
        "client_assertion_type": ASSERTION, "client_assertion": _assertion(key)})
    assert nothing.status_code == 400 and nothing.json()["error"] == "invalid_scope"
    refused = [r for r in _audited_denials(node) if r.action == "token"]
    assert len(refused) >= len(cases) + 1


@pytest.mark.parametrize(("form", "error"), [
    ({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type"),
    ({"grant_type": "client_credentials"}, "invalid_client"),
    ({"grant_type": "authorization_code", "code": "made-up", "client_id": "x"}, "invalid_grant"),
    ({"grant_type": "refresh_token", "refresh_token": "made-up"}, "invalid_grant"),
])
def test_token_endpoint_errors(gate_node: Node, form: dict[str, str], error: str) -> None:  # noqa: F811
    answer = post_form(gate_node, "/auth/token", form)
    assert answer.status_code in (400, 401) and answer.json()["error"] == error


def test_token_endpoint_refuses_hostile_forms(gate_node: Node) -> None:  # noqa: F811
    async def calls(client: httpx.AsyncClient) -> list[int]:
        json_body = await client.post("/auth/token", json={"grant_type": "client_credentials"})
        huge = await client.post("/auth/token", content=b"a=" + b"x" * 40_000, headers=FORM)
        repeated = await client.post("/auth/token", content=b"grant_type=a&grant_type=b",
                                     headers=FORM)
        binary = await client.post("/auth/token", content=b"\xff\xfe=\x00", headers=FORM)
        return [r.status_code for r in (json_body, huge, repeated, binary)]

    assert run_asgi(gate_node, calls) == [400, 400, 400, 400]


# -- users: authorization code with PKCE, refresh rotation, TOTP, lockout -----------------

REDIRECT = "http://127.0.0.1:9999/callback"
VERIFIER = "v" * 20 + uuid.uuid4().hex + "w" * 10


def _portal(node: Node) -> None:
    node.auth.store.add_client(Client(
        "portal", "Patient portal", None, "patient/*.rs patient/Consent.cruds user/*.rs",
        ("PATRQT", "TREAT"), None, (REDIRECT,)))


def _authorize_params(scope: str = "patient/*.rs") -> dict[str, str]:
    return {"response_type": "code", "client_id": "portal", "redirect_uri": REDIRECT,
            "scope": scope, "state": "s-123", "code_challenge": pkce_challenge(VERIFIER),
            "code_challenge_method": "S256"}


def _sign_in(node: Node, username: str, password: str, otp: str | None = None,
             scope: str = "patient/*.rs") -> httpx.Response:
    form = {**_authorize_params(scope), "username": username, "password": password}
    if otp:
        form["otp"] = otp
    return post_form(node, "/auth/authorize", form)


def test_a_patient_signs_in_with_pkce_and_refreshes(gate_node: Node) -> None:  # noqa: F811
    _portal(gate_node)
    gate_node.auth.store.add_user("ada", "correct horse battery", "patient", patient="p3")
    page = get(gate_node, "/auth/authorize?" + httpx.QueryParams(_authorize_params()).__str__())
    assert page.status_code == 200 and 'name="password"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    redirect = _sign_in(gate_node, "ada", "correct horse battery")
    assert redirect.status_code == 303
    location = urlparse(redirect.headers["location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert query["state"] == ["s-123"]
    code = query["code"][0]
    wrong_verifier = post_form(gate_node, "/auth/token", {
        "grant_type": "authorization_code", "code": code, "client_id": "portal",
        "redirect_uri": REDIRECT, "code_verifier": "x" * 50})
    assert wrong_verifier.json()["error"] == "invalid_grant"
    again = _sign_in(gate_node, "ada", "correct horse battery")
    code = parse_qs(urlparse(again.headers["location"]).query)["code"][0]
    tokens = post_form(gate_node, "/auth/token", {
        "grant_type": "authorization_code", "code": code, "client_id": "portal",
        "redirect_uri": REDIRECT, "code_verifier": VERIFIER}).json()
    assert tokens["patient"] == "p3" and tokens["purpose"] == "PATRQT"
    reused = post_form(gate_node, "/auth/token", {
        "grant_type": "authorization_code", "code": code, "client_id": "portal",
        "redirect_uri": REDIRECT, "code_verifier": VERIFIER})
    assert reused.json()["error"] == "invalid_grant"  # a code is single-use
    me = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert get(gate_node, "/patient/consents", me).json()["patient"] == "p3"
    assert get(gate_node, "/fhir/Observation/o-p3", me).status_code == 200
    assert get(gate_node, "/fhir/Observation/o-p1", me).status_code in (403, 404)
    # refresh tokens rotate; replaying a spent one revokes the whole family
    first = tokens["refresh_token"]
    second = post_form(gate_node, "/auth/token", {
        "grant_type": "refresh_token", "refresh_token": first, "client_id": "portal"}).json()
    assert second["access_token"] and second["refresh_token"] != first
    replay = post_form(gate_node, "/auth/token", {
        "grant_type": "refresh_token", "refresh_token": first, "client_id": "portal"})
    assert replay.json()["error"] == "invalid_grant"
    after_theft = post_form(gate_node, "/auth/token", {
        "grant_type": "refresh_token", "refresh_token": second["refresh_token"],
        "client_id": "portal"})
    assert after_theft.json()["error"] == "invalid_grant"


def test_sign_in_checks_password_totp_and_locks_out(gate_node: Node) -> None:  # noqa: F811
    _portal(gate_node)
    secret = gate_node.auth.store.add_user("dr-who", "a long clinician pass", "clinician",
                                           org="Organization/city-clinic", totp=True)
    assert secret
    assert _sign_in(gate_node, "dr-who", "a long clinician pass", scope="user/*.rs"
                    ).status_code == 401  # no one-time code
    ok = _sign_in(gate_node, "dr-who", "a long clinician pass", pyotp.TOTP(secret).now(),
                  scope="user/*.rs")
    assert ok.status_code == 303 and "code=" in ok.headers["location"]
    for _ in range(5):
        assert _sign_in(gate_node, "dr-who", "wrong password!!", scope="user/*.rs"
                        ).status_code == 401
    locked = _sign_in(gate_node, "dr-who", "a long clinician pass", pyotp.TOTP(secret).now(),
                      scope="user/*.rs")
    assert locked.status_code == 401  # locked for a while after five failures
    assert _sign_in(gate_node, "nobody", "whatever password").status_code == 401


def test_authorize_never_redirects_to_an_unregistered_uri(gate_node: Node) -> None:  # noqa: F811
    _portal(gate_node)
    params = {**_authorize_params(), "redirect_uri": "https://evil.example/cb"}
    answer = get(gate_node, "/auth/authorize?" + str(httpx.QueryParams(params)))
    assert answer.status_code == 400 and "location" not in answer.headers
    no_pkce = {k: v for k, v in _authorize_params().items() if not k.startswith("code_")}
    assert get(gate_node, "/auth/authorize?" + str(httpx.QueryParams(no_pkce))
               ).status_code == 400


def test_passwords_are_hashed_and_short_ones_refused(gate_node: Node) -> None:  # noqa: F811
    from healthmesh.errors import ConfigError

    with pytest.raises(ConfigError):
        gate_node.auth.store.add_user("x", "short", "clinician")
    gate_node.auth.store.add_user("y", "a sufficiently long one", "researcher")
    raw = b"".join(p.read_bytes() for p in gate_node.folder.glob("auth.sqlite*"))
    assert b"a sufficiently long one" not in raw and b"$argon2id$" in raw


# -- hardening ----------------------------------------------------------------------------


def test_security_headers_and_no_cors(gate_node: Node) -> None:  # noqa: F811
    response = get(gate_node, "/fhir/metadata", {"Origin": "https://evil.example"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "access-control-allow-origin" not in response.headers


def test_rate_limits_per_client_and_address(make_node: Any) -> None:
    node = make_node(rate_limit_per_minute=5)
    headers = bearer(node)
    statuses = [get(node, "/fhir/Patient", headers).status_code for _ in range(7)]
    # each call is a fresh app (fresh counters): count within one app instead
    app = create_app(node)

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return [await client.get("/fhir/Patient", headers=headers) for _ in range(7)]

    import anyio

    answers = anyio.run(go)
    assert statuses == [200] * 7
    assert [a.status_code for a in answers][:5] == [200] * 5
    assert answers[-1].status_code == 429 and int(answers[-1].headers["retry-after"]) >= 1


def test_insecure_dev_mode_takes_headers_and_says_so(
    gate_node: Node, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    headers = {"X-Requester": "Organization/city-clinic", "X-Purpose-Of-Use": "TREAT"}
    assert get(gate_node, "/fhir/Observation/o-p1", headers).status_code == 401
    with caplog.at_level("WARNING", logger="healthmesh.api"):
        dev = get(gate_node, "/fhir/Observation/o-p1", headers, {"insecure_dev": True})
    assert dev.status_code == 200
    assert "INSECURE DEV MODE" in caplog.text


def test_patient_tokens_act_for_the_patient_only(gate_node: Node) -> None:  # noqa: F811
    mine = patient_bearer(gate_node, "p3")
    assert get(gate_node, "/patient/consents", mine).json()["patient"] == "p3"
    clinician = bearer(gate_node, "Organization/city-clinic", "TREAT")
    assert get(gate_node, "/patient/consents", clinician).status_code == 403
