"""The steward console and the hub dashboard in process: release review, agreements and
budget, audit browser, data quality; dashboard views, tables, CSV and charts from a
stored run. Expected numbers are worked out by hand from what each test stores."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from healthmesh.api.app import create_app
from healthmesh.audit import AuditRecord
from healthmesh.network.agreements import save_agreement
from healthmesh.network.local import demo_agreements
from healthmesh.network.tasklog import Answer, TaskLog
from healthmesh.node import Node
from healthmesh.privacy.ledger import PrivacyLedger
from healthmesh.web import install_hub_pages
from healthmesh.web.charts import csv_bytes, network_rows
from healthmesh.web.dashboard import Dashboard, View
from healthmesh.web.errors import PageError
from tests.browser import PASSWORD, Pages, csrf_of, pages, sign_in

ORG = "Organization/city-clinic"
HELD = {"rows": [{"sex": "female", "count": 14, "suppressed": False},
                 {"sex": "male", "count": None, "suppressed": True}],
        "notes": ["count: 1 of 2 cells suppressed"], "epsilon_spent": 0.0}


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    n = make_node(organization=ORG)
    n.store.put_many([
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"},
        {"resourceType": "Patient", "id": "p2", "gender": "male"},
        {"resourceType": "Patient", "id": "p3"},
        {"resourceType": "Observation", "id": "o1", "status": "final",
         "code": {"text": "weight"}, "subject": {"reference": "Patient/p1"}},
    ])
    n.auth.store.add_user("steve", PASSWORD, "steward", org=ORG)
    n.auth.store.add_user("alice", PASSWORD, "patient", patient="p1")
    log = TaskLog(n.folder / "network" / "tasks.sqlite")
    for task_id in ("t-approve", "t-reject"):
        log.put(task_id, {"requester": "Organization/analyst", "agreement": "research",
                          "algorithm": "count", "purpose": "HRESCH"}, Answer("review",
                                                                          result=HELD))
    log.close()
    for agreement in demo_agreements(["city-clinic"]):
        save_agreement(n.folder / "network" / "agreements", agreement)
    ledger = PrivacyLedger(n.folder / "network" / "privacy-ledger.sqlite")
    ledger.charge("research-dp", "task-1", 1.0, 3.0)
    ledger.charge("research-dp", "task-2", 0.5, 3.0)
    ledger.close()
    return n


@pytest.fixture
def steward(node: Node) -> Iterator[Pages]:
    with pages(create_app(node)) as new:
        client = new()
        sign_in(client, "steve")
        yield client


def test_a_held_release_shows_what_would_leave_and_approval_needs_a_reason(
        node: Node, steward: Pages) -> None:
    page = steward.get("/web/steward/releases")
    assert page.text.count("<section class=\"card\"") == 2
    assert "<td>14</td>" in page.text and "✱ suppressed" in page.text
    token = csrf_of(page.text)
    no_reason = steward.post("/web/steward/releases/t-approve",
                             data={"csrf": token, "decision": "approve", "reason": " "})
    assert no_reason.status_code == 422
    ok = steward.post("/web/steward/releases/t-approve", data={
        "csrf": token, "decision": "approve", "reason": "cells of 10 or more only"})
    assert ok.status_code == 303
    rejected = steward.post("/web/steward/releases/t-reject", data={
        "csrf": token, "decision": "reject", "reason": "the question is out of scope"})
    assert rejected.status_code == 303
    log = TaskLog(node.folder / "network" / "tasks.sqlite")
    assert log.get("t-approve").status == "ok" and log.get("t-approve").result == HELD
    assert log.get("t-reject").status == "refused" and log.get("t-reject").result is None
    log.close()
    reviews = node.audit.entries(action="release-review")
    assert sorted(e.record.detail["reason"] for e in reviews) == [
        "cells of 10 or more only", "the question is out of scope"]
    assert {e.record.actor for e in reviews} == {"user:steve"}
    again = steward.post("/web/steward/releases/t-approve", data={
        "csrf": token, "decision": "approve", "reason": "twice"})
    assert again.status_code == 400 and "not waiting for review" in again.text


@pytest.mark.parametrize("task, form, status", [
    ("t-approve", {"decision": "maybe", "reason": "why not"}, 422),
    ("../../etc", {"decision": "approve", "reason": "path"}, 404),
    ("t-approve", {"decision": "approve", "reason": "x" * 501}, 422),
])
def test_hostile_release_decisions_are_refused(steward: Pages, task: str,
                                               form: dict[str, str], status: int) -> None:
    token = csrf_of(steward.get("/web/steward/releases").text)
    assert steward.post(f"/web/steward/releases/{task}",
                        data={"csrf": token, **form}).status_code == status


def test_agreements_show_the_budget_left(steward: Pages) -> None:
    page = steward.get("/web/steward/agreements").text
    # research-dp: total 3, charged 1 + 0.5 here -> 1.5 left
    row = page[page.index("<strong>research-dp</strong>"):]
    row = row[:row.index("</tr>")]
    assert "1.5 / 3" in row and '<td class="num">1.5</td>' in row
    research = page[page.index("<strong>research</strong>"):]
    assert "no differential-privacy budget" in research[:research.index("</tr>")]


def test_the_audit_browser_filters_verifies_the_chain_and_audits_itself(
        node: Node, steward: Pages) -> None:
    node.audit.append(AuditRecord(actor="Organization/uni", action="search",
                                  patients=("p2",), decision="permit"))
    page = steward.get("/web/steward/audit?actor=Organization/uni").text
    assert "The hash chain verifies" in page
    assert page.count("<td>Organization/uni</td>") == 1
    assert steward.get("/web/steward/audit?patient=p2").text.count("<td>p2</td>") == 1
    for bad in ("since=2024-13-01", "actor=a%20b", "page=0", "action=DROP%20TABLE"):
        assert steward.get(f"/web/steward/audit?{bad}").status_code == 400
    reads = node.audit.entries(action="audit-read")
    assert reads and reads[0].record.detail["filters"] == {"patient": "p2"}


def test_the_audit_browser_reports_a_broken_chain(node: Node, steward: Pages) -> None:
    import sqlite3

    node.audit.append(AuditRecord(actor="Organization/uni", action="read", decision="permit"))
    db = sqlite3.connect(node.folder / "audit.sqlite")
    db.execute("DROP TRIGGER IF EXISTS entries_no_update")  # an attacker with file access
    seq, record = db.execute("SELECT seq, record FROM entries ORDER BY seq DESC").fetchone()
    assert b"Organization/uni" in bytes(record)
    db.execute("UPDATE entries SET record = ? WHERE seq = ?",
               (bytes(record).replace(b"Organization/uni", b"Organization/xyz"), seq))
    db.commit()
    db.close()
    page = steward.get("/web/steward/audit").text
    assert "does NOT verify" in page


def test_data_quality_counts_gaps_through_the_gate(node: Node, steward: Pages) -> None:
    (node.folder / "rejects" / "feed.ndjson").write_text('{"a":1}\n{"b":2}\n\n')
    page = steward.get("/web/steward/quality").text
    # 3 patients: p2 and p3 have no birth date, p3 no gender
    birth = page[page.index("birth date recorded"):]
    assert birth[:200].count('<td class="num">') >= 3
    assert '<td class="num">3</td><td class="num">2</td><td class="num">33.3 %' in page
    assert '<td class="num">3</td><td class="num">1</td><td class="num">66.7 %' in page
    assert "feed.ndjson</code>: 2 record(s) rejected" in page


def test_a_patient_cannot_use_the_console(node: Node) -> None:
    with pages(create_app(node)) as new:
        client = new()
        sign_in(client, "alice")
        assert client.get("/web/steward/releases").status_code == 403


# -- the hub dashboard -----------------------------------------------------------------

RUN = {"task": "abc", "epsilon_spent": 0.0, "disclosure": {"min_cell": 10},
       "params": {}, "pooled": {"sites_covered": ["Organization/a", "Organization/b"],
                                "rows": []},
       "sites": [
           {"site": "Organization/a", "status": "ok", "reason": "", "rows": [
               {"site": "Organization/a", "period": "2025-01", "numerator": 12,
                "denominator": 40, "suppressed": False},
               {"site": "Organization/a", "period": "2025-02", "numerator": None,
                "denominator": None, "suppressed": True}]},
           {"site": "Organization/b", "status": "ok", "reason": "", "rows": [
               {"site": "Organization/b", "period": "2025-01", "numerator": 18,
                "denominator": 20, "suppressed": False},
               {"site": "Organization/b", "period": "2025-02", "numerator": 10,
                "denominator": 30, "suppressed": False}]},
           {"site": "Organization/c", "status": "timeout", "reason": "no answer",
            "rows": []}]}


@pytest.fixture
def hub_pages(tmp_path: Path) -> Iterator[tuple[Pages, Dashboard]]:
    app = FastAPI()
    install_hub_pages(app, tmp_path)
    board: Dashboard = app.state.dashboard
    board.store(View("hypertension-control", "2025"), RUN)
    with pages(app, "http://hub") as new:
        yield new(), board
    board.close()


def test_network_totals_never_estimate_a_suppressed_part() -> None:
    rows = [r for s in RUN["sites"] for r in s["rows"]]
    totals = {r["period"]: r for r in network_rows(rows, [])}
    assert (totals["2025-01"]["numerator"], totals["2025-01"]["denominator"]) == (30, 60)
    assert totals["2025-02"]["suppressed"] and totals["2025-02"]["numerator"] is None


def test_the_dashboard_shows_a_stored_run_with_marks_and_how_it_was_computed(
        hub_pages: tuple[Pages, Any]) -> None:
    client, _ = hub_pages
    page = client.get("/web/dashboard?indicator=hypertension-control&period=2025").text
    assert '<td class="num">30</td><td class="num">60</td><td class="num">50.0 %</td>' in page
    assert "✱ suppressed" in page
    assert "Organization/c: timeout — no answer" in page
    assert "min_cell" in page and "hypertension" in page.lower()
    assert "chart-time.svg?indicator=hypertension-control&amp;period=2025" in page


def test_the_csv_download_has_totals_and_sites_with_suppression_flags(
        hub_pages: tuple[Pages, Any]) -> None:
    client, _ = hub_pages
    answer = client.get("/web/dashboard/data.csv?indicator=hypertension-control&period=2025")
    assert answer.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    got = {(r["site"], r["period"]): (r["numerator"], r["denominator"], r["suppressed"])
           for r in rows}
    assert got == {("(all sites)", "2025-01"): ("30", "60", "no"),
                   ("(all sites)", "2025-02"): ("", "", "yes"),
                   ("a", "2025-01"): ("12", "40", "no"), ("a", "2025-02"): ("", "", "yes"),
                   ("b", "2025-01"): ("18", "20", "no"), ("b", "2025-02"): ("10", "30", "no")}


def test_csv_cells_cannot_become_spreadsheet_formulas() -> None:
    rows = [{"site": "Organization/x", "period": "2025", "state": "=HYPERLINK(1)",
             "numerator": 1, "denominator": 2, "suppressed": False}]
    text = csv_bytes([], rows, ["state"]).decode()
    assert "'=HYPERLINK(1)" in text


def test_charts_render_as_svg_and_png(hub_pages: tuple[Pages, Any]) -> None:
    client, _ = hub_pages
    query = "indicator=hypertension-control&period=2025"
    svg = client.get(f"/web/dashboard/chart-time.svg?{query}")
    assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content
    png = client.get(f"/web/dashboard/chart-bar.png?{query}&download=1")
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.headers["content-disposition"].endswith('-bar.png"')
    assert client.get(f"/web/dashboard/chart-pie.svg?{query}").status_code == 404
    assert client.get("/web/dashboard/chart-time.svg?indicator=hypertension-control"
                      "&period=2019").status_code == 404  # never computed


@pytest.mark.parametrize("query", [
    {"indicator": "nope"}, {"period": "2025-13"}, {"period": "25"},
    {"stratum": "postal_code"}, {"region": "<script>"}, {"region": "x" * 80},
])
def test_hostile_views_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(PageError):
        View.parse(query)


def test_a_view_asks_the_task_for_what_it_shows() -> None:
    view = View.parse({"indicator": "diabetes-control", "period": "2025", "stratum": "sex",
                       "region": "Ohio"})
    assert view.params() == {"indicator": "diabetes-control", "period": "2025",
                             "by": "month", "strata": ["state", "sex"]}
    assert View.parse({"period": "2025-03"}).params().get("by") is None


def test_prevalence_views_ask_for_the_condition_and_show_rates_per_1000(
        hub_pages: tuple[Pages, Any]) -> None:
    client, board = hub_pages
    view = View.parse({"indicator": "diabetes-prevalence", "period": "2025-06"})
    assert view.params() == {"condition": {"valueset": "diabetes"}, "period": "2025-06",
                             "strata": []}
    board.store(view, {**RUN, "sites": [{"site": "Organization/a", "status": "ok",
                                         "reason": "", "rows": [
        {"period": "2025-06", "numerator": 45, "denominator": 1500, "suppressed": False}]}]})
    page = client.get("/web/dashboard?indicator=diabetes-prevalence&period=2025-06").text
    # 45 / 1500 = 0.03 = 30.00 per 1,000
    assert '<td class="num">45</td><td class="num">1500</td><td class="num">30.00</td>' in page
    assert "Per 1,000" in page
    svg = client.get("/web/dashboard/chart-time.svg?indicator=diabetes-prevalence"
                     "&period=2025-06")
    assert svg.status_code == 200 and b"per 1,000" in svg.content


def test_refresh_without_credentials_says_how_to_configure(
        hub_pages: tuple[Pages, Any]) -> None:
    client, board = hub_pages
    page = client.get("/web/dashboard?indicator=diabetes-control&period=2025")
    answer = client.post("/web/dashboard/refresh", data={
        "csrf": csrf_of(page.text), "indicator": "diabetes-control", "period": "2025"})
    assert answer.status_code == 503 and "dashboard.json" in answer.text
    (board.folder / "dashboard.json").write_bytes(orjson.dumps([1]))
    answer = client.post("/web/dashboard/refresh", data={
        "csrf": csrf_of(page.text), "indicator": "diabetes-control", "period": "2025"})
    assert answer.status_code == 500 and "must be a JSON object" in answer.text


def test_refresh_is_refused_too_soon_after_the_last_run(
        hub_pages: tuple[Pages, Any]) -> None:
    client, _ = hub_pages
    page = client.get("/web/dashboard?indicator=hypertension-control&period=2025")
    answer = client.post("/web/dashboard/refresh", data={
        "csrf": csrf_of(page.text), "indicator": "hypertension-control", "period": "2025"})
    assert answer.status_code == 429
