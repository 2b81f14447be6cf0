"""The hub refuses anyone it cannot identify and anything outside an agreement.

In-process (ASGI) tests of the hub's HTTP layer with real keys and certificates:
signed requests, replays, forged and revoked members, task checks and pooling.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from healthmesh.api.hub_app import create_hub_app
from healthmesh.audit import load_or_create_node_key
from healthmesh.network.agreements import Agreement
from healthmesh.network.hub import open_hub
from healthmesh.network.hub_state import HubState
from healthmesh.network.members import Identity, result_digest, sign_agreement
from healthmesh.security import NetworkAuthority, generate_key, make_csr, verify_membership


class Net:
    """An authority, a hub folder and members with keys, as 'network up' makes them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.authority = NetworkAuthority.create(root / "authority", "test network")
        self.hub = root / "hub"
        key = load_or_create_node_key(self.hub)
        (self.hub / "hub-cert.pem").write_bytes(
            self.authority.sign_membership(make_csr(key, "hub", "Hub", ["hub"]), ["hub"]))
        (self.hub / "ca-cert.pem").write_bytes(self.authority.cert_pem)
        self.state = HubState(self.hub / "hub.sqlite")
        self.members: dict[str, Identity] = {}

    def member(self, org_id: str, roles: list[str], *, register: bool = True,
               authority: NetworkAuthority | None = None) -> Identity:
        key = generate_key(self.root / f"{org_id}-{uuid.uuid4().hex[:6]}.pem")
        signer = authority or self.authority
        cert = signer.sign_membership(make_csr(key, org_id, org_id.title(), roles), roles)
        identity = Identity(f"Organization/{org_id}", key, cert.decode(),
                            self.authority.cert_pem, "http://hub")
        if register:
            self.state.put_member(identity.org, org_id, roles, cert.decode())
        self.members[org_id] = identity
        return identity

    def revoke(self, identity: Identity) -> None:
        serial = verify_membership(identity.cert_pem, self.authority.cert_pem).serial
        self.authority.revoke(serial, "key_compromise")
        (self.hub / "crl.pem").write_bytes(self.authority.crl_pem())

    def agreement(self, **changes: Any) -> Agreement:
        body = {"id": "study", "title": "Study", "requester": "Organization/analyst",
                "providers": ["Organization/north", "Organization/south"],
                "purposes": ["HRESCH"], "algorithms": ["count"], "tables": ["patient"],
                "strata": ["sex"], "valid_from": "2020-01-01", "valid_to": "2099-12-31",
                "deadline_seconds": 5, **changes}
        agreement = Agreement.from_json(body)
        for party in agreement.parties():
            agreement = sign_agreement(agreement, self.members[party.split("/")[1]])
        self.state.put_agreement(agreement.to_json())
        return agreement


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    net = Net(tmp_path)
    net.member("analyst", ["research"])
    net.member("north", ["provider"])
    net.member("south", ["lab"])
    net.agreement()
    yield net


def call(net: Net, steps: Any) -> Any:
    hub = open_hub(net.hub)

    async def go() -> Any:
        transport = httpx.ASGITransport(app=create_hub_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await steps(client)

    try:
        return anyio.run(go)
    finally:
        hub.close()


async def signed(client: httpx.AsyncClient, who: Identity, method: str, path: str,
                 body: Any = None, *, headers: dict[str, str] | None = None) -> httpx.Response:
    raw = b"" if body is None else orjson.dumps(body)
    sig = headers if headers is not None else who.headers(method, path, raw)
    return await client.request(method, path, content=raw, headers=sig)


def task_for(who: Identity, **changes: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "agreement": "study", "requester": who.org,
            "purpose": "HRESCH", "algorithm": "count",
            "params": {"cohort": {"name": "all", "include": []}, "strata": ["sex"]},
            "created": time.time(), "deadline": time.time() + 5, **changes}


def test_unsigned_forged_replayed_and_foreign_requests_are_refused(net: Net) -> None:
    analyst = net.members["analyst"]
    outsider = net.member("mallory", ["research"], register=False)
    other_ca = NetworkAuthority.create(net.root / "other", "other network")
    impostor = net.member("impostor", ["research"], authority=other_ca)

    async def steps(client: httpx.AsyncClient) -> list[int]:
        statuses = [(await client.get("/members")).status_code]  # no signature
        ok_headers = analyst.headers("GET", "/members", b"")
        statuses.append((await signed(client, analyst, "GET", "/members",
                                      headers=ok_headers)).status_code)
        statuses.append((await signed(client, analyst, "GET", "/members",
                                      headers=ok_headers)).status_code)  # replay
        forged = dict(analyst.headers("GET", "/agreements", b""))  # signed for another path
        statuses.append((await signed(client, analyst, "GET", "/members",
                                      headers=forged)).status_code)
        statuses.append((await signed(client, outsider, "GET", "/members")).status_code)
        statuses.append((await signed(client, impostor, "GET", "/members")).status_code)
        return statuses

    assert call(net, steps) == [401, 200, 401, 401, 401, 401]


def test_revoked_member_is_refused_and_every_accepted_request_is_audited(net: Net) -> None:
    north = net.members["north"]

    async def before(client: httpx.AsyncClient) -> int:
        return (await signed(client, north, "GET", "/agent/tasks")).status_code

    assert call(net, before) == 200
    net.revoke(north)

    async def after(client: httpx.AsyncClient) -> httpx.Response:
        return await signed(client, north, "GET", "/agent/tasks")

    refused = call(net, after)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]
    from healthmesh.audit import AuditLog

    with AuditLog(net.hub) as log:
        actions = [(e.record.actor, e.record.action) for e in log.entries()]
    assert ("Organization/north", "hub-request") in actions


def test_task_checks_at_the_hub(net: Net) -> None:
    analyst, north = net.members["analyst"], net.members["north"]

    async def steps(client: httpx.AsyncClient) -> list[tuple[int, str]]:
        out = []
        for who, task, signer in [
            (north, task_for(north), north),  # a provider is not the requester
            (analyst, task_for(analyst, agreement="nope"), analyst),
            (analyst, task_for(analyst, algorithm="exfiltrate"), analyst),
            (analyst, task_for(analyst, sites=["Organization/west"]), analyst),
            (analyst, task_for(analyst), north),  # task signed by someone else
            (analyst, task_for(analyst, deadline=time.time() - 1), analyst),
            (analyst, task_for(analyst, params={"cohort": {"include": "x"}}), analyst),
        ]:
            response = await signed(client, who, "POST", "/tasks",
                                    {"token": signer.sign(task)})
            out.append((response.status_code, response.json()["error"]))
        return out

    results = call(net, steps)
    assert [s for s, _ in results] == [403, 404, 422, 422, 401, 422, 422]
    assert "cohort" in results[6][1]  # bad parameters are named before any node sees them
    assert "not the requester" in results[0][1]
    assert "west" in results[3][1]


def test_task_round_trip_pools_signed_answers_and_marks_silent_sites(net: Net) -> None:
    analyst, north = net.members["analyst"], net.members["north"]
    task = task_for(analyst, deadline=time.time() + 2)
    result = {"algorithm": "count", "version": "1", "columns": [["sex", "stratum"],
              ["count", "count"]], "rows": [{"sex": "female", "count": 12, "suppressed": False},
                                            {"sex": "male", "count": None, "suppressed": True}],
              "epsilon_spent": 0.0, "notes": []}

    async def steps(client: httpx.AsyncClient) -> dict[str, Any]:
        submitted = await signed(client, analyst, "POST", "/tasks", {"token": analyst.sign(task)})
        assert submitted.status_code == 201
        polled = (await signed(client, north, "GET", "/agent/tasks?wait=1")).json()["tasks"]
        assert [t["id"] for t in polled] == [task["id"]]
        assert (await signed(client, north, "GET", "/agent/tasks")).json()["tasks"] == []
        forged = {"status": "ok", "result": {**result, "rows": []},
                  "signature": north.sign({"task": task["id"], "digest": result_digest(result)})}
        bad = await signed(client, north, "POST", f"/agent/tasks/{task['id']}/result", forged)
        assert bad.status_code == 422
        answer = {"status": "ok", "result": result,
                  "signature": north.sign({"task": task["id"], "digest": result_digest(result)})}
        ok = await signed(client, north, "POST", f"/agent/tasks/{task['id']}/result", answer)
        assert ok.status_code == 200
        again = await signed(client, north, "POST", f"/agent/tasks/{task['id']}/result", answer)
        assert again.status_code == 409  # an answer is final
        stranger = await signed(client, north, "GET", f"/tasks/{task['id']}")
        assert stranger.status_code == 403  # only the requester reads results
        return (await signed(client, analyst, "GET", f"/tasks/{task['id']}?wait=5")).json()

    status = call(net, steps)
    assert status["done"]
    by_site = {t["site"]: t for t in status["sites"]}
    assert by_site["Organization/north"]["status"] == "ok"
    assert by_site["Organization/south"]["status"] in ("unreachable", "timeout")
    pooled = status["pooled"]
    assert pooled["sites_covered"] == ["Organization/north"]
    rows = {r["sex"]: r for r in pooled["rows"]}
    assert rows["female"]["count"] == 12
    assert rows["male"]["count"] is None  # suppressed at a site: not guessed

    # the agreement's retention duty: results older than the period are deleted at the hub
    assert net.state.purge_results("study", time.time() - 3600) == 0  # not old enough
    assert net.state.purge_results("study", time.time() + 1) == 1
    (kept,) = [t for t in net.state.targets(task["id"]) if t["site"] == "Organization/north"]
    assert kept["status"] == "ok" and kept["result"] is None
    assert "retention" in kept["reason"]


def test_agreement_terms_cannot_change_and_non_parties_cannot_post(net: Net) -> None:
    analyst, south = net.members["analyst"], net.members["south"]
    stored = net.state.agreement("study")
    outsider = net.member("clinic", ["provider"])

    async def steps(client: httpx.AsyncClient) -> list[int]:
        changed = {**stored, "strata": ["sex", "postal_code"]}
        first = await signed(client, analyst, "POST", "/agreements", changed)
        second = await signed(client, outsider, "POST", "/agreements", stored)
        forged_sig = {**stored, "signatures": {**stored["signatures"],
                                               "Organization/south": analyst.sign(
                                                   {"agreement": "study", "digest": "x"})}}
        third = await signed(client, south, "POST", "/agreements", forged_sig)
        return [first.status_code, second.status_code, third.status_code]

    assert call(net, steps) == [409, 403, 422]


def test_oversized_and_malformed_bodies_are_refused(net: Net) -> None:
    analyst = net.members["analyst"]

    async def steps(client: httpx.AsyncClient) -> list[int]:
        huge = b"x" * (4 * 1024 * 1024 + 1)
        too_big = await client.post("/tasks", content=huge,
                                    headers=analyst.headers("POST", "/tasks", huge))
        garbage = b"{not json"
        bad = await client.post("/tasks", content=garbage,
                                headers=analyst.headers("POST", "/tasks", garbage))
        shapeless = await signed(client, analyst, "POST", "/tasks", {"token": 5})
        return [too_big.status_code, bad.status_code, shapeless.status_code]

    assert call(net, steps) == [413, 400, 422]
