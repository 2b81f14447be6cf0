"""End to end: a real network on loopback (a hub and three node processes).

What users rely on, checked against answers computed here, independently, from the
synthetic files each node loaded: pooled counts are the sum of what each node may
count (consented patients only); a revoked consent changes the next count; a task
outside the agreement is refused by the nodes although the hub forwards it; small
cells are suppressed; the privacy budget stops the query that would exceed it; a
killed node yields a partial answer with that site marked.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from healthmesh.errors import HealthmeshError
from healthmesh.network import local
from healthmesh.network.client import Network, connect
from healthmesh.network.local import network_down, network_up
from healthmesh.security.tls import client_context
from tests.conftest import bearer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("network")]
SITES = ["hospital", "clinic", "lab"]
HTN = {"38341003", "I10"}
EVERYONE = {"name": "everyone", "include": []}
HYPERTENSION = {"name": "hypertension", "include": [{"condition": {"codes": [
    "http://snomed.info/sct|38341003", "http://hl7.org/fhir/sid/icd-10-cm|I10"]}}]}


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("network") / "net"
    state = network_up(root, sites=SITES, patients=800, seed=11, port=0, say=lambda _: None)
    state["root"] = root
    try:
        yield state
    finally:
        network_down(root)


@pytest.fixture
def hm(network: dict[str, Any]) -> Iterator[Network]:
    with connect(credentials=network["root"]) as client:
        yield client


def ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def research_consented(data: Path, site: str) -> set[str]:
    """Patients of ``site`` with an active research opt-in and no active opt-out."""
    permit, deny = set(), set()
    for consent in ndjson(data / site / "Consent.ndjson"):
        scope = {c["code"] for c in consent["scope"]["coding"]}
        if "research" not in scope or consent["status"] != "active":
            continue
        patient = consent["patient"]["reference"].split("/")[1]
        kind = consent["provision"]["type"]
        if kind == "permit" and "end" not in consent["provision"].get("period", {}):
            permit.add(patient)
        elif kind == "deny":
            deny.add(patient)
    return permit - deny


def hypertensive(data: Path, site: str) -> set[str]:
    out = set()
    for condition in ndjson(data / site / "Condition.ndjson"):
        verification = {c["code"] for c in condition.get("verificationStatus", {})
                        .get("coding", [])}
        if verification & {"refuted", "entered-in-error"}:
            continue
        if {c["code"] for c in condition["code"]["coding"]} & HTN:
            out.add(condition["subject"]["reference"].split("/")[1])
    return out


def site_rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["site"].split("/")[1]: s for s in result["sites"]}


def test_pooled_count_is_the_sum_of_consented_patients_at_each_site(
        network: dict[str, Any], hm: Network) -> None:
    data = network["root"] / "data"
    expected = {s: len(hypertensive(data, s) & research_consented(data, s)) for s in SITES}
    assert expected["hospital"] >= 10 and expected["clinic"] >= 10  # not suppressed
    result = hm.run("count", {"cohort": HYPERTENSION}, agreement="research", purpose="HRESCH")
    sites = site_rows(result)
    assert {s: sites[s]["status"] for s in SITES} == dict.fromkeys(SITES, "ok")
    assert {s: sites[s]["rows"][0]["count"] for s in SITES} == expected
    (pooled,) = result["pooled"]["rows"]
    assert pooled["count"] == sum(expected.values())
    everyone_with_htn = sum(len(hypertensive(data, s)) for s in SITES)
    assert pooled["count"] < everyone_with_htn  # research needs an opt-in: not everyone


def test_the_catalogue_describes_every_node(hm: Network) -> None:
    datasets = {d["org"]: d for d in hm.catalogue()}
    assert sorted(datasets) == [f"Organization/{s}" for s in sorted(SITES)]
    for entry in datasets.values():
        assert "value_number" in entry["tables"]["observation"]
        assert {"research", "public-health", "research-dp"} <= set(entry["agreements"])
        assert entry["patients"].startswith(("about", "under"))


def test_small_cells_are_suppressed_and_released_cells_are_exact(
        network: dict[str, Any], hm: Network) -> None:
    data = network["root"] / "data"
    result = hm.run("count", {"cohort": EVERYONE, "strata": ["sex"]}, agreement="research",
                    purpose="HRESCH")
    for site, answer in site_rows(result).items():
        consented = research_consented(data, site)
        truth = Counter(p.get("gender") or "unknown" for p in ndjson(data / site / "Patient.ndjson")
                        if p["id"] in consented)
        for row in answer["rows"]:
            true_count = truth.get(row["sex"], 0)
            if 0 < true_count < 10:
                assert row["suppressed"] and row["count"] is None, (site, row, true_count)
            if not row["suppressed"]:
                assert row["count"] == true_count
    assert any(r["suppressed"] for s in result["sites"] for r in s["rows"])


def test_a_task_outside_the_agreement_is_refused_by_every_node(hm: Network) -> None:
    # the hub forwards it (the algorithm exists); each node checks its own agreement copy
    result = hm.run("indicator", {"indicator": "hypertension-control", "period": "2024"},
                    agreement="research", purpose="HRESCH")
    for site in result["sites"]:
        assert site["status"] == "refused"
        assert "algorithm 'indicator' is not allowed by research" in site["reason"]
    assert result["pooled"]["sites_covered"] == []


def test_a_revoked_consent_changes_the_next_count(network: dict[str, Any], hm: Network) -> None:
    data = network["root"] / "data"
    before = hm.run("count", {"cohort": HYPERTENSION}, agreement="research", purpose="HRESCH")
    counted = sorted(hypertensive(data, "hospital") & research_consented(data, "hospital"))
    patient = counted[0]
    base = network["nodes"]["hospital"]["fhir"]
    headers = bearer(network["root"] / "nodes" / "hospital", "Organization/hospital", "TREAT")
    tls = client_context(network["tls_ca"])  # every listener of the network speaks TLS
    bundle = httpx.get(f"{base}/Consent", params={"patient": patient}, headers=headers,
                       verify=tls).json()
    for entry in bundle["entry"]:
        consent = entry["resource"]
        if consent["scope"]["coding"][0]["code"] == "research" and consent["status"] == "active":
            consent["status"] = "inactive"  # the patient withdraws from research
            put = httpx.put(f"{base}/Consent/{consent['id']}", json=consent, verify=tls,
                            headers={**headers, "Content-Type": "application/fhir+json"})
            assert put.status_code == 200, put.text
    after = hm.run("count", {"cohort": HYPERTENSION}, agreement="research", purpose="HRESCH")
    assert (site_rows(after)["hospital"]["rows"][0]["count"]
            == site_rows(before)["hospital"]["rows"][0]["count"] - 1)
    assert (site_rows(after)["clinic"]["rows"][0]["count"]
            == site_rows(before)["clinic"]["rows"][0]["count"])


def test_the_privacy_budget_stops_the_query_that_would_exceed_it(
        network: dict[str, Any], hm: Network) -> None:
    data = network["root"] / "data"
    truth = len(research_consented(data, "clinic"))
    answers = [hm.run("count", {"cohort": EVERYONE}, agreement="research-dp",
                      purpose="HRESCH", sites=["clinic"]) for _ in range(4)]
    for answer in answers[:3]:  # epsilon 1 each, a budget of 3
        (site,) = answer["sites"]
        assert site["status"] == "ok" and site["epsilon_spent"] == pytest.approx(1.0)
        assert abs(site["rows"][0]["count"] - truth) < 20  # Laplace(1): |noise| >= 20 ~ 2e-9
    (refused,) = answers[3]["sites"]
    assert refused["status"] == "refused" and "budget" in refused["reason"]


def test_a_killed_node_yields_a_partial_answer_with_that_site_marked(
        network: dict[str, Any], hm: Network) -> None:
    os.kill(network["pids"]["lab"], signal.SIGKILL)
    started = time.monotonic()
    result = hm.run("count", {"cohort": HYPERTENSION}, agreement="research", purpose="HRESCH",
                    wait=60)
    sites = site_rows(result)
    assert sites["lab"]["status"] in ("unreachable", "timeout") and sites["lab"]["reason"]
    assert sites["hospital"]["status"] == sites["clinic"]["status"] == "ok"
    assert sorted(result["pooled"]["sites_covered"]) == ["Organization/clinic",
                                                         "Organization/hospital"]
    assert time.monotonic() - started < 40  # nothing hangs past the agreement's deadline


def test_a_failed_network_up_leaves_no_process_running(
        network: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "broken"
    shutil.copytree(network["root"] / "data", root / "data")
    real = local._setup_node

    def broken(layout: Any, authority: Any, site: str, *args: Any) -> None:
        real(layout, authority, site, *args)  # then the node's settings break: it cannot start
        (layout.node(site) / "node.toml").write_text("[node]\nno_such_setting = 1\n")

    monkeypatch.setattr(local, "_setup_node", broken)
    with pytest.raises(HealthmeshError):
        network_up(root, sites=["lab"], patients=800, seed=11, port=0, data=root / "data",
                   say=lambda _: None)
    assert not (root / "network.json").exists()
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                 and str(root) in _cmdline(p)]
    assert leftovers == []  # the hub it had started was stopped


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
