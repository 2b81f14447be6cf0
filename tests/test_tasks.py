"""A node answering federated tasks, in process: every check it makes before anything leaves.

Real keys and certificates (a network authority, the node's membership, the analyst and
other members), agreements signed by every party and kept in the node's own folder, and
a node loaded with a small synthetic population. Expected counts are computed here,
independently, from the synthetic files the node loaded; reasons are checked as the
requester reads them.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthmesh.audit import load_or_create_node_key
from healthmesh.errors import HealthmeshError
from healthmesh.ingest.loader import ingest
from healthmesh.network.agreements import Agreement, save_agreement
from healthmesh.network.members import Identity, MemberDirectory, sign_agreement
from healthmesh.network.tasklog import Answer, TaskLog
from healthmesh.network.tasks import TaskRunner
from healthmesh.node import Node, init_node, open_node
from healthmesh.privacy import PrivacyLedger
from healthmesh.security import (
    NetworkAuthority,
    generate_key,
    make_csr,
    sign_payload,
    verify_membership,
)
from healthmesh.synth import generate
from tests.conftest import run_cli

HOSPITAL = "Organization/hospital"
ANALYST = "Organization/analyst"
STEWARD = "Practitioner/data-steward"
EVERYONE = {"name": "everyone", "include": []}
WITH_OBSERVATION = {"name": "measured", "include": [
    {"observation": {"codes": ["http://loinc.org|8867-4"]}}]}


# -- the network around one node -----------------------------------------------------------

def agreement_terms() -> list[dict[str, Any]]:
    """The agreements the hospital node holds (each signed by every party unless noted)."""
    common: dict[str, Any] = {
        "title": "Test agreement", "requester": ANALYST, "providers": [HOSPITAL],
        "purposes": ["HRESCH"], "algorithms": ["count"], "tables": ["patient", "condition"],
        "strata": ["sex", "age_band"], "valid_from": "2020-01-01", "valid_to": "2099-12-31",
        "disclosure": {"min_cell": 10, "max_repeats": 50},
    }
    return [
        {**common, "id": "research"},
        {**common, "id": "public-health", "purposes": ["PUBHLTH"]},
        {**common, "id": "tampered"},  # its file is edited after signing (below)
        {**common, "id": "partial"},  # signed by the analyst only (below)
        {**common, "id": "expired", "valid_to": "2021-12-31"},
        {**common, "id": "elsewhere", "providers": ["Organization/clinic"]},
        {**common, "id": "repeats", "disclosure": {"min_cell": 10, "max_repeats": 2}},
        {**common, "id": "dp", "disclosure": {"min_cell": 10, "epsilon_per_query": 1.0,
                                              "total_epsilon": 2.0, "max_repeats": 50}},
        {**common, "id": "reviewed", "release_review": "manual"},
    ]


class World:
    """An authority, members with keys and certificates, and a closed template node folder
    (loaded, with its membership and signed agreements) that tests copy."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.authority = NetworkAuthority.create(root / "authority", "test network")
        self.certs: dict[str, str] = {}
        self.data = root / "data"
        generate(self.data, patients=150, sites=["hospital"], seed=3)
        self.template = init_node(root / "template")
        with open_node(self.template, overrides={"organization": HOSPITAL}) as node:
            stats = ingest(node, [self.data / "hospital"],
                           rejects_path=self.template / "rejects" / "load.ndjson")
        assert stats.rejected == 0 and stats.created > 0
        self.hospital = self.member("hospital", ["provider"],
                                    key=load_or_create_node_key(self.template))
        self.analyst = self.member("analyst", ["research", "public-health"])
        self.clinic = self.member("clinic", ["provider"])
        self.rival = self.member("rival", ["research"])  # another research member
        network = self.template / "network"
        network.mkdir()
        (network / "member-cert.pem").write_text(self.hospital.cert_pem)
        (network / "ca-cert.pem").write_bytes(self.authority.cert_pem)
        (network / "crl.pem").write_bytes(self.authority.crl_pem())
        signers = {m.org: m for m in (self.hospital, self.analyst, self.clinic)}
        for terms in agreement_terms():
            agreement = Agreement.from_json(terms)
            parties = [ANALYST] if agreement.id == "partial" else agreement.parties()
            for party in parties:
                agreement = sign_agreement(agreement, signers[party])
            path = save_agreement(network / "agreements", agreement)
            if agreement.id == "tampered":  # widened after every party signed
                data = orjson.loads(path.read_bytes())
                data["strata"].append("postal_code")
                path.write_bytes(orjson.dumps(data))

    def member(self, org_id: str, roles: list[str], *, key: Any = None) -> Identity:
        key = key or generate_key(self.root / f"{org_id}-key.pem")
        cert = self.authority.sign_membership(make_csr(key, org_id, org_id.title(), roles),
                                              roles).decode()
        identity = Identity(f"Organization/{org_id}", key, cert, self.authority.cert_pem, "")
        self.certs[identity.org] = cert
        return identity

    def task(self, **changes: Any) -> dict[str, Any]:
        now = time.time()
        return {"id": uuid.uuid4().hex, "agreement": "research", "requester": ANALYST,
                "purpose": "HRESCH", "algorithm": "count", "params": {"cohort": EVERYONE},
                "created": now, "deadline": now + 30, **changes}


@dataclass
class Station:
    """One opened copy of the template node with its task runner."""

    world: World
    node: Node
    runner: TaskRunner

    @property
    def network(self) -> Path:
        return self.node.folder / "network"

    def directory(self) -> MemberDirectory:
        return MemberDirectory(self.world.authority.cert_pem, self.network / "crl.pem",
                               self.world.certs.get)

    def ask(self, signer: Identity | None = None, **changes: Any) -> tuple[str, Answer]:
        task = self.world.task(**changes)
        return task["id"], self.runner.run(task["id"], (signer or self.world.analyst).sign(task))

    def audit(self, task_id: str) -> list[Any]:
        """Every audit record of this node that names the task."""
        return [e.record for e in self.node.audit.scan()
                if (e.record.detail or {}).get("task") == task_id]

    def close(self) -> None:
        self.runner.close()
        self.runner.ledger.close()
        self.runner.limiter.close()
        self.node.close()


def open_station(world: World, folder: Path, **settings: Any) -> Station:
    shutil.copytree(world.template, folder)
    node = open_node(folder, overrides={"organization": HOSPITAL, **settings})
    identity = Identity(HOSPITAL, load_or_create_node_key(folder), world.certs[HOSPITAL],
                        world.authority.cert_pem, "")
    station = Station(world, node, None)  # type: ignore[arg-type]
    station.runner = TaskRunner(node, identity, station.directory)
    return station


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def shared(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    """A copy for tests that only add tasks (each task id, agreement state is their own)."""
    station = open_station(world, tmp_path_factory.mktemp("shared") / "node")
    yield station
    station.close()


@pytest.fixture
def station(world: World, tmp_path: Path) -> Iterator[Station]:
    """A fresh copy for a test that changes the node (consents, ledger, settings)."""
    opened = open_station(world, tmp_path / "node")
    yield opened
    opened.close()


# -- independent expectations from the synthetic files -------------------------------------

def ndjson(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def patients(data: Path) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in ndjson(data / "hospital" / "Patient.ndjson")}


def research_consents(data: Path) -> list[dict[str, Any]]:
    return [c for c in ndjson(data / "hospital" / "Consent.ndjson")
            if "research" in {x["code"] for x in c["scope"]["coding"]}]


def research_consented(data: Path) -> set[str]:
    """Patients with an active research opt-in (a permit without an end) and no active
    research opt-out: whom HRESCH may count (tests/test_network.py states the same rule)."""
    permit, deny = set(), set()
    for consent in research_consents(data):
        if consent["status"] != "active":
            continue
        patient = consent["patient"]["reference"].split("/")[1]
        kind = consent["provision"]["type"]
        if kind == "permit" and "end" not in consent["provision"].get("period", {}):
            permit.add(patient)
        elif kind == "deny":
            deny.add(patient)
    return permit - deny


def withdraw_from_research(node: Node, data: Path, patient: str) -> None:
    """The patient's active research opt-ins set to inactive, through the FHIR service."""
    changed = 0
    for consent in research_consents(data):
        if (consent["patient"]["reference"] == f"Patient/{patient}"
                and consent["status"] == "active" and consent["provision"]["type"] == "permit"):
            node.fhir.update("Consent", consent["id"], {**consent, "status": "inactive"})
            changed += 1
    assert changed


def count_of(answer: Answer) -> int:
    """The one released count of an answer (no strata)."""
    assert answer.status in ("ok", "review"), answer.reason
    assert answer.result is not None
    (row,) = answer.result["rows"]
    assert not row.get("suppressed")
    return int(row["count"])


# -- 1. a valid task ---------------------------------------------------------------------

def test_a_valid_count_counts_exactly_whom_consent_allows_and_is_signed(
        world: World, shared: Station) -> None:
    consented = research_consented(world.data)
    everyone = patients(world.data)
    assert 10 <= len(consented) < len(everyone)  # opt-in matters, and nothing is suppressed

    task_id, answer = shared.ask()
    assert answer.status == "ok" and answer.reason is None
    assert count_of(answer) == len(consented)
    assert answer.result is not None and answer.signature is not None
    assert answer.result["algorithm"] == "count" and answer.result["epsilon_spent"] == 0
    directory = shared.directory()
    directory.check_result_signature(HOSPITAL, task_id, answer.result, answer.signature)
    changed = {**answer.result, "rows": [{**answer.result["rows"][0], "count": 1000}]}
    with pytest.raises(HealthmeshError):  # the signature covers the numbers
        directory.check_result_signature(HOSPITAL, task_id, changed, answer.signature)
    with pytest.raises(HealthmeshError):  # ... and the task it answers
        directory.check_result_signature(HOSPITAL, uuid.uuid4().hex, answer.result,
                                         answer.signature)

    # public health (permitted by law) counts everyone ...
    _, public = shared.ask(agreement="public-health", purpose="PUBHLTH")
    assert count_of(public) == len(everyone)
    # ... and by sex: released cells are exact, small cells hidden (with a complement)
    _, by_sex = shared.ask(agreement="public-health", purpose="PUBHLTH",
                           params={"cohort": EVERYONE, "strata": ["sex"]})
    assert by_sex.status == "ok" and by_sex.result is not None
    truth = Counter(p.get("gender") or "unknown" for p in everyone.values())
    rows = by_sex.result["rows"]
    for row in rows:
        if 0 < truth[row["sex"]] < 10:
            assert row["suppressed"] and row["count"] is None
        if not row["suppressed"]:
            assert row["count"] == truth[row["sex"]]
    assert any(not r["suppressed"] and r["count"] for r in rows)


# -- 2. refusals, each with its reason -------------------------------------------------------

REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "agreement not held": ({"agreement": "nope"}, "this node has not signed an agreement 'nope'"),
    "agreement name is a path": ({"agreement": "../research"},
                                 "this node has not signed an agreement '../research'"),
    "agreement widened after signing": (
        {"agreement": "tampered"},
        "the signature of Organization/analyst does not cover these terms of tampered"),
    "agreement signed by some parties": (
        {"agreement": "partial"}, "agreement partial is not signed by Organization/hospital"),
    "agreement expired": (
        {"agreement": "expired"}, "agreement expired is not in force (2020-01-01 to 2021-12-31)"),
    "node not a provider": (
        {"agreement": "elsewhere"},
        "Organization/hospital is not a provider under agreement elsewhere"),
    "purpose not allowed": (
        {"purpose": "PUBHLTH"}, "purpose 'PUBHLTH' is not allowed by research (allowed: HRESCH)"),
    "algorithm not allowed": (
        {"algorithm": "crosstab", "params": {"cohort": EVERYONE, "columns": ["sex", "age_band"]}},
        "algorithm 'crosstab' is not allowed by research (allowed: count)"),
    "stratum not allowed": (
        {"params": {"cohort": EVERYONE, "strata": ["sex", "postal_code"]}},
        "agreement research does not allow stratifying by postal_code"),
    "table not allowed": (
        {"params": {"cohort": WITH_OBSERVATION}},
        "agreement research does not allow reading observation"),
    "unknown algorithm": ({"algorithm": "exfiltrate"}, "unknown algorithm 'exfiltrate'"),
    "strata not a list": ({"params": {"cohort": EVERYONE, "strata": "sex"}},
                          "params.strata: expected an array"),
    "unknown parameter": ({"params": {"cohort": EVERYONE, "sql": "SELECT 1"}},
                          "params: unknown parameter 'sql'"),
    "cohort malformed": ({"params": {"cohort": {"name": "x", "include": "all"}}},
                         "params.cohort.include: expected an array of criteria"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_task_outside_the_agreement_is_refused_with_its_reason_and_audited(
        shared: Station, case: str) -> None:
    changes, reason = REFUSALS[case]
    task_id, answer = shared.ask(**changes)
    assert answer.status == "refused"
    assert answer.reason is not None and reason in answer.reason
    assert answer.result is None and answer.signature is None
    assert answer.to_json() == {"status": "refused", "reason": answer.reason, "result": None,
                                "signature": None}
    records = shared.audit(task_id)
    assert [r.action for r in records] == ["federated-refuse"]  # nothing was released
    (record,) = records
    assert record.decision == "deny" and record.actor == ANALYST
    assert record.reason is not None and record.reason in answer.reason
    assert record.detail == {"task": task_id, "agreement": changes.get("agreement", "research")}


def test_a_task_from_a_member_not_the_requester_is_refused(world: World, shared: Station) -> None:
    task_id, answer = shared.ask(signer=world.rival, requester=world.rival.org)
    assert answer.status == "refused"
    assert answer.reason == "Organization/rival is not the requester of research"
    (record,) = shared.audit(task_id)
    assert record.action == "federated-refuse" and record.actor == world.rival.org


def test_a_forged_or_mismatched_task_is_refused(world: World, shared: Station) -> None:
    runner = shared.runner
    # signed with another member's key while claiming to be the analyst
    task = world.task()
    forged = runner.run(task["id"], sign_payload(world.rival.key, ANALYST, task))
    assert forged.status == "refused" and forged.reason is not None
    assert forged.reason.startswith("task not accepted: ")
    assert "signature of 'Organization/analyst' does not verify" in forged.reason
    # not a signed task at all
    garbage = runner.run("garbage", "not-a-token")
    assert (garbage.status, garbage.reason) == ("refused", "the task is not a signed task")
    for task_id in (task["id"], "garbage"):
        assert shared.audit(task_id) == []  # no trustworthy requester to audit under
    # a member signing, as itself, a task that names the analyst as requester
    posing = world.task()
    answer = runner.run(posing["id"], world.rival.sign(posing))
    assert (answer.status, answer.reason) == (
        "refused", "the task's id or requester does not match its signature")
    # the analyst's own signed task presented under another id
    moved = runner.run(uuid.uuid4().hex, world.analyst.sign(world.task()))
    assert (moved.status, moved.reason) == (
        "refused", "the task's id or requester does not match its signature")


def test_a_task_past_its_deadline_or_implausibly_dated_is_refused(shared: Station) -> None:
    _, late = shared.ask(deadline=time.time() - 1)
    assert (late.status, late.reason) == ("refused", "the task's deadline has passed")
    _, old = shared.ask(created=time.time() - 3 * 86400)
    assert (old.status, old.reason) == ("refused", "the task's creation time is not plausible")
    _, bare = shared.ask(params=["cohort"])
    assert (bare.status, bare.reason) == ("refused", "the task has no parameters object")


@pytest.mark.parametrize("changes", [{"deadline": time.time() - 1},
                                     {"created": time.time() - 3 * 86400},
                                     {"params": ["cohort"]}], ids=["late", "old", "no-params"])
def test_a_refused_task_with_a_valid_signature_is_audited(shared: Station,
                                                          changes: dict[str, Any]) -> None:
    task_id, answer = shared.ask(**changes)
    assert answer.status == "refused"
    assert [r.action for r in shared.audit(task_id)] == ["federated-refuse"]


def test_a_revoked_requester_is_refused(world: World, station: Station) -> None:
    _, before = station.ask()
    assert before.status == "ok"
    serial = verify_membership(world.analyst.cert_pem, world.authority.cert_pem).serial
    world.authority.revoke(serial, "key_compromise")
    (station.network / "crl.pem").write_bytes(world.authority.crl_pem())
    task_id, after = station.ask()
    assert after.status == "refused" and after.reason is not None
    assert after.reason.startswith("task not accepted: the membership certificate of "
                                   "'analyst'")
    assert "was revoked" in after.reason and "keyCompromise" in after.reason
    assert station.audit(task_id) == []  # the signature cannot be trusted


# -- 3. a task id is answered once ----------------------------------------------------------

def test_a_task_id_is_answered_once_and_never_recomputed(world: World,
                                                         station: Station) -> None:
    task = world.task()
    token = world.analyst.sign(task)
    first = station.runner.run(task["id"], token)
    before = count_of(first)
    withdraw_from_research(station.node, world.data, sorted(research_consented(world.data))[0])

    assert station.runner.run(task["id"], token) == first  # the stored answer, as it was
    changed = {**task, "params": {"cohort": EVERYONE, "strata": ["sex"]}}
    assert station.runner.run(task["id"], world.analyst.sign(changed)) == first
    _, fresh = station.ask()  # a new task sees the withdrawal: a re-run would have too
    assert count_of(fresh) == before - 1
    assert [r.action for r in station.audit(task["id"])] == ["federated-release"]
    limiter = station.runner.limiter
    fingerprint = limiter.fingerprint("count", task["params"])
    assert len(limiter.runs("research", ANALYST, fingerprint)) == 2  # first and fresh


# -- 4. release review ---------------------------------------------------------------------

def test_manual_release_review_holds_results_for_the_steward(world: World,
                                                             tmp_path: Path) -> None:
    station = open_station(world, tmp_path / "node", release_review="manual")
    try:
        log = station.runner.log
        held_id, held = station.ask()
        assert held.status == "review"
        assert held.reason == "held for the data steward's release review"
        assert count_of(held) == len(research_consented(world.data))
        assert held.to_json()["result"] is None  # nothing leaves while held
        (pending,) = log.pending_review()
        assert pending["id"] == held_id and pending["result"] == held.result
        assert (pending["requester"], pending["agreement"], pending["algorithm"],
                pending["purpose"]) == (ANALYST, "research", "count", "HRESCH")
        assert held_id not in dict(station.runner.unsent())

        log.decide(held_id, True, STEWARD)
        approved = log.get(held_id)
        assert approved is not None and approved.status == "ok"
        assert (approved.result, approved.signature) == (held.result, held.signature)
        assert dict(station.runner.unsent())[held_id] == approved
        assert approved.signature is not None
        station.directory().check_result_signature(HOSPITAL, held_id, approved.result,
                                                   approved.signature)

        withheld_id, _ = station.ask(params={"cohort": EVERYONE, "strata": ["sex"]})
        log.decide(withheld_id, False, STEWARD)
        refused = log.get(withheld_id)
        assert refused == Answer("refused", f"the data steward ({STEWARD}) withheld this "
                                 "result", None, None)
        assert dict(station.runner.unsent())[withheld_id] == refused
        assert log.pending_review() == []
        with pytest.raises(HealthmeshError, match="not waiting for review"):
            log.decide(withheld_id, True, STEWARD)  # a decision is final
        station.runner.mark_sent(held_id)
        assert held_id not in dict(station.runner.unsent())
    finally:
        station.close()


def test_an_approved_result_reads_like_any_released_result(world: World,
                                                            tmp_path: Path) -> None:
    station = open_station(world, tmp_path / "node", release_review="manual")
    try:
        held_id, held = station.ask()
        station.runner.log.decide(held_id, True, STEWARD)
        approved = station.runner.log.get(held_id)
        assert approved == Answer("ok", None, held.result, held.signature)
    finally:
        station.close()


def test_an_agreement_can_require_release_review(shared: Station) -> None:
    task_id, answer = shared.ask(agreement="reviewed")
    assert answer.status == "review"
    assert task_id in {p["id"] for p in shared.runner.log.pending_review()}


def test_release_commands_review_held_results(world: World, tmp_path: Path) -> None:
    station = open_station(world, tmp_path / "node", release_review="manual")
    try:
        first, _ = station.ask()
        second, _ = station.ask(params={"cohort": EVERYONE, "strata": ["sex"]})
    finally:
        station.close()
    folder = str(tmp_path / "node")
    listed = run_cli("release", "list", folder, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {p["id"] for p in orjson.loads(listed.stdout)["pending"]} == {first, second}

    approve = run_cli("release", "approve", folder, first)
    assert approve.returncode == 0, approve.stderr
    reject = run_cli("release", "reject", folder, second, "--steward", "Practitioner/dpo")
    assert reject.returncode == 0, reject.stderr
    unknown = run_cli("release", "approve", folder, "no-such-task")
    assert unknown.returncode == 2
    assert "task no-such-task is not waiting for review" in unknown.stderr

    log = TaskLog(tmp_path / "node" / "network" / "tasks.sqlite")
    try:
        assert log.pending_review() == []
        approved = log.get(first)
        assert approved is not None and approved.status == "ok" and approved.signature
        assert log.get(second) == Answer(
            "refused", "the data steward (Practitioner/dpo) withheld this result")
        assert {task_id for task_id, _ in log.unsent()} == {first, second}
    finally:
        log.close()
    with open_node(Path(folder)) as node:
        decisions = {(e.record.actor, e.record.decision, (e.record.detail or {}).get("task"))
                     for e in node.audit.entries(action="release-review")}
    assert decisions == {(STEWARD, "permit", first), ("Practitioner/dpo", "deny", second)}


# -- 5. repeated questions ---------------------------------------------------------------------

def test_the_same_question_is_refused_after_max_repeats_until_it_unlocks(
        station: Station) -> None:
    params = {"cohort": EVERYONE, "strata": ["sex"]}
    answers = [station.ask(agreement="repeats", params=params)[1] for _ in range(2)]
    assert [a.status for a in answers] == ["ok", "ok"]
    started = datetime.now(UTC)
    reordered = {"strata": ["sex"], "cohort": {"include": [], "name": "everyone"}}
    task_id, third = station.ask(agreement="repeats", params=reordered)  # the same question
    assert third.status == "refused" and third.reason is not None
    found = re.search(r"already ran 2 times in the last 30 days; it unlocks at (\S+)$",
                      third.reason)
    assert found, third.reason
    unlocks = datetime.fromisoformat(found.group(1))
    assert abs(unlocks - (started + timedelta(days=30))) < timedelta(minutes=1)
    assert [r.action for r in station.audit(task_id)] == ["federated-refuse"]
    _, other = station.ask(agreement="repeats", params={"cohort": EVERYONE})
    assert other.status == "ok"  # another question is still answered


# -- 6. the privacy budget -----------------------------------------------------------------

def test_the_privacy_budget_refuses_the_query_that_would_overspend_it(
        world: World, station: Station) -> None:
    truth = len(research_consented(world.data))
    ok = [station.ask(agreement="dp") for _ in range(2)]
    for _, answer in ok:
        assert answer.status == "ok" and answer.result is not None
        assert answer.result["epsilon_spent"] == pytest.approx(1.0)
        assert abs(count_of(answer) - truth) < 25  # Laplace(1): |noise| >= 25 ~ 1e-11
    ledger = PrivacyLedger(station.network / "privacy-ledger.sqlite")
    try:
        assert ledger.spent("dp") == pytest.approx(2.0)
        task_id, third = station.ask(agreement="dp")
        assert third.status == "refused" and third.reason is not None
        assert "budget" in third.reason
        assert third.reason == ("privacy budget of agreement 'dp' exhausted: spent 2 "
                                "+ requested 1 > total 2 (remaining 0)")
        assert third.result is None
        assert ledger.spent("dp") == pytest.approx(2.0)  # the refused query spent nothing
        assert [s.task_id for s in ledger.history("dp")] == [t for t, _ in ok]
        assert [r.action for r in station.audit(task_id)] == ["federated-refuse"]
    finally:
        ledger.close()


# -- 7. audit of releases -------------------------------------------------------------------

def test_every_release_is_audited_with_the_task(world: World, shared: Station) -> None:
    task_id, answer = shared.ask()
    assert answer.status == "ok"
    (record,) = shared.audit(task_id)
    assert (record.action, record.decision, record.actor, record.purpose) == (
        "federated-release", "permit", ANALYST, "HRESCH")
    assert record.detail == {"task": task_id, "agreement": "research", "algorithm": "count",
                             "rows": 1, "epsilon": 0.0, "held_for_review": False,
                             "patients_in_scope": len(research_consented(world.data)),
                             "records_withheld": record.detail["records_withheld"]}
    assert shared.node.audit.verify().ok


# -- 8. consent applies before counting ---------------------------------------------------------

def test_a_withdrawn_research_consent_is_not_counted_in_the_next_task(
        world: World, station: Station) -> None:
    consented = sorted(research_consented(world.data))
    _, before = station.ask()
    assert count_of(before) == len(consented)
    _, public_before = station.ask(agreement="public-health", purpose="PUBHLTH")
    withdraw_from_research(station.node, world.data, consented[0])
    task_id, after = station.ask()
    assert count_of(after) == len(consented) - 1
    (record,) = station.audit(task_id)
    assert record.detail["patients_in_scope"] == len(consented) - 1
    _, public_after = station.ask(agreement="public-health", purpose="PUBHLTH")
    assert count_of(public_after) == count_of(public_before)  # research consent only
