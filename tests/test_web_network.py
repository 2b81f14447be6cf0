"""End to end in Chromium on a real network (a hub and two node processes on loopback):
a patient turns research off in the clinic's portal, and the next dashboard refresh at
the hub counts one person fewer in the clinic's denominator.

The dashboard runs the ``indicator`` task under a research agreement made here (the
public-health agreement cannot show a consent change: public-health use is set by law
and a consent does not override it). The patient is picked here, independently, from
the synthetic files the clinic loaded: an adult with hypertension since before the
period, alive, who opted in to research.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from healthmesh.audit import load_or_create_node_key
from healthmesh.network.agreements import Agreement, save_agreement
from healthmesh.network.hub_state import HubState
from healthmesh.network.local import ALL_STRATA, ALL_TABLES, ANALYST, network_down, network_up
from healthmesh.network.members import Identity, sign_agreement
from healthmesh.node import open_node
from tests.browser import PASSWORD
from tests.browser.chromium import browser_only, missing, screenshot, sign_in_page
from tests.conftest import run_cli
from tests.test_network import hypertensive, ndjson, research_consented

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.xdist_group("network"),
              pytest.mark.skipif(missing() is not None, reason=str(missing()))]
SITES = ["hospital", "clinic"]
YEAR = str(date.today().year - 1)


def _agreement(root: Path) -> None:
    """A research agreement allowing the indicator task, signed by every party."""
    today = date.today()
    agreement = Agreement.from_json({
        "id": "research-indicators", "title": "Indicators among research participants",
        "requester": ANALYST, "providers": [f"Organization/{s}" for s in SITES],
        "purposes": ["HRESCH"], "algorithms": ["indicator", "prevalence", "incidence"],
        "tables": ALL_TABLES,
        "strata": ALL_STRATA, "valid_from": f"{today.year - 1}-01-01",
        "valid_to": f"{today.year + 1}-12-31", "disclosure": {"min_cell": 1,
                                                              "max_repeats": 20}})
    signers = [Identity.load(root / "analyst" / "credentials.json")] + [
        Identity(f"Organization/{s}", load_or_create_node_key(root / "nodes" / s), "", b"", "")
        for s in SITES]
    for signer in signers:
        agreement = sign_agreement(agreement, signer)
    for site in SITES:
        save_agreement(root / "nodes" / site / "network" / "agreements", agreement)
    HubState(root / "hub" / "hub.sqlite").put_agreement(agreement.to_json())
    (root / "hub" / "dashboard.json").write_bytes(orjson.dumps({
        "credentials": "../analyst/credentials.json", "agreement": "research-indicators",
        "purpose": "HRESCH", "min_refresh_seconds": 0}))


def _candidate(data: Path) -> str:
    """A clinic patient who is in the hypertension-control denominator all year."""
    alive_adults = {p["id"] for p in ndjson(data / "clinic" / "Patient.ndjson")
                    if p.get("birthDate", "9999") < f"{int(YEAR) - 20}-01-01"
                    and "deceasedDateTime" not in p and not p.get("deceasedBoolean")}
    early = {c["subject"]["reference"].split("/")[1]
             for c in ndjson(data / "clinic" / "Condition.ndjson")
             if str(c.get("onsetDateTime", "9999")) < f"{int(YEAR) - 1}-01-01"}
    found = sorted(hypertensive(data, "clinic") & research_consented(data, "clinic")
                   & alive_adults & early)
    assert found, "the synthetic clinic has no suitable patient"
    return found[0]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("webnet") / "net"
    state = network_up(root, sites=SITES, patients=400, seed=11, port=0, say=lambda _: None)
    state["root"] = root
    try:
        _agreement(root)
        yield state
    finally:
        network_down(root)


def _december(page: Any, hub: str) -> dict[str, str]:
    """Refresh the view, download its CSV; the clinic's December row."""
    page.goto(f"{hub}/web/dashboard?indicator=hypertension-control&period={YEAR}")
    page.get_by_role("button", name="Refresh from the nodes").click()
    page.wait_for_url(f"{hub}/web/dashboard?**")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the table (CSV)").click()
    rows = csv.DictReader(io.StringIO(Path(info.value.path()).read_text()))
    (row,) = [r for r in rows if r["site"] == "clinic" and r["period"] == f"{YEAR}-12"]
    return row


def test_turning_research_off_lowers_the_next_dashboard_count(
        network: dict[str, Any]) -> None:
    root: Path = network["root"]
    patient = _candidate(root / "data")
    with open_node(root / "nodes" / "clinic") as node:
        node.auth.store.add_user("pat", PASSWORD, "patient", patient=patient)
    clinic = network["nodes"]["clinic"]["fhir"].removesuffix("/fhir")
    with browser_only() as browser:
        context = browser.new_context(ignore_https_errors=True, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(120_000)  # a refresh waits for every node's answer
        before = _december(page, network["hub"])
        sign_in_page(page, clinic, "pat", PASSWORD, start="/web/me/consents")
        switch = page.get_by_role("switch", name="Allow use of my data for research")
        assert switch.is_checked()
        switch.uncheck()
        page.locator("section", has=switch).get_by_role("button",
                                                        name="Save my choice").click()
        assert "Your choice is saved." in page.content()
        after = _december(page, network["hub"])
        screenshot(page, "dashboard-network", docs=True)
        context.close()
    assert before["suppressed"] == after["suppressed"] == "no"
    assert int(after["denominator"]) == int(before["denominator"]) - 1


def test_scheduled_runs_store_results_the_pages_show(network: dict[str, Any],
                                                      tmp_path: Path) -> None:
    hub_folder = network["root"] / "hub"
    for measure in ("diabetes-control", "hypertension-prevalence"):
        done = run_cli("dashboard", "refresh", str(hub_folder), "--indicator", measure,
                       "--period", YEAR, "--json")
        assert done.returncode == 0, done.stderr
        (run,) = orjson.loads(done.stdout)["runs"]
        assert run["sites"] == {f"Organization/{s}": "ok" for s in SITES}
        page = httpx.get(f"{network['hub']}/web/dashboard?indicator={measure}"
                         f"&period={YEAR}", verify=False)
        assert run["task"] in page.text  # the page shows the stored run
    bad = run_cli("dashboard", "refresh", str(hub_folder), "--period", "20255", "--json")
    assert bad.returncode == 2
    assert run_cli("dashboard", "refresh", str(tmp_path)).returncode == 3
