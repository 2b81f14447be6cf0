"""The pages in a real headless Chromium: sign in, toggle a consent, fill PHQ-9, download
my data, approve a release, read with scripts disabled, a phone-sized screen, keyboard
use, axe-core (no serious or critical WCAG 2.1 AA violations), the dashboard's CSV.

Screenshots of every page are saved under build/screenshots (test artefacts)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from healthmesh.api.app import create_app
from healthmesh.network.agreements import save_agreement
from healthmesh.network.local import demo_agreements
from healthmesh.network.tasklog import Answer, TaskLog
from healthmesh.node import Node
from healthmesh.web import install_hub_pages
from healthmesh.web.dashboard import View
from tests.browser import PASSWORD
from tests.browser.chromium import (
    PHONE,
    axe_violations,
    browser_only,
    missing,
    screenshot,
    serve,
    sign_in_page,
)
from tests.conftest import bearer
from tests.test_gate import consent, obs
from tests.test_web_console import HELD, RUN

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser"),
              pytest.mark.skipif(missing() is not None, reason=str(missing()))]
ORG = "Organization/city-clinic"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    from healthmesh.node import init_node, open_node

    folder = init_node(tmp_path_factory.mktemp("web") / "node", name="City Clinic")
    n = open_node(folder, {"organization": ORG})
    n.store.put_many([
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01",
         "name": [{"family": "Martin", "given": ["Alice"]}]},
        {"resourceType": "Patient", "id": "p2", "gender": "male", "birthDate": "1981-05-05"},
        obs("o1", "p1"), obs("o2", "p2"), consent("c1", "p1", "HRESCH"),
        consent("c2", "p2", "HRESCH"),
        {"resourceType": "Condition", "id": "d1", "subject": {"reference": "Patient/p1"},
         "code": {"text": "Essential hypertension"}, "onsetDateTime": "2019-03-01"},
    ])
    n.auth.store.add_user("alice", PASSWORD, "patient", patient="p1")
    n.auth.store.add_user("steve", PASSWORD, "steward", org=ORG)
    log = TaskLog(folder / "network" / "tasks.sqlite")
    log.put("t-review", {"requester": "Organization/analyst", "agreement": "research",
                         "algorithm": "count", "purpose": "HRESCH"},
            Answer("review", result=HELD))
    log.close()
    for agreement in demo_agreements(["city-clinic"]):
        save_agreement(folder / "network" / "agreements", agreement)
    yield n
    n.close()


@pytest.fixture(scope="module")
def base(node: Node) -> Iterator[str]:
    with serve(create_app(node)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with browser_only() as found:
        yield found


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  accept_downloads=True)
    yield context.new_page()
    context.close()


def research_count(base: str, node: Node) -> int:
    """Observations a university may read for research (each read is audited)."""
    answer = httpx.get(f"{base}/fhir/Observation?_count=100",
                       headers=bearer(node, "Organization/uni", "HRESCH", "system/*.rs"))
    return len(answer.json().get("entry", []))


def check_page(page: Any, name: str) -> None:
    """No serious/critical axe violation; a screenshot as artefact (and for the docs)."""
    assert axe_violations(page) == [], name
    screenshot(page, name, docs=True)


def test_a_patient_signs_in_and_turns_research_off(page: Any, base: str, node: Node) -> None:
    before = research_count(base, node)
    sign_in_page(page, base, "alice", PASSWORD, start="/web/me")
    assert page.url == f"{base}/web/me"
    check_page(page, "portal-my-data")
    page.get_by_role("link", name="My consents").click()
    check_page(page, "portal-consents")
    switch = page.get_by_role("switch", name="Allow use of my data for research")
    assert switch.is_checked()
    switch.focus()
    page.keyboard.press("Space")  # keyboard use: the switch toggles with Space
    assert not switch.is_checked()
    page.locator("section", has=switch).get_by_role("button", name="Save my choice").click()
    assert page.get_by_role("status").inner_text().startswith("Your choice is saved.")
    assert not page.get_by_role("switch", name="Allow use of my data for research").is_checked()
    assert research_count(base, node) == before - 1  # p1's observation is out at once
    page.get_by_role("link", name="See the receipt").click()
    check_page(page, "portal-receipt")
    page.get_by_role("link", name="Who looked at my data").click()
    assert "Organization/uni" in page.content()
    check_page(page, "portal-access-log")


def test_a_patient_fills_in_phq9_and_downloads_their_data(page: Any, base: str) -> None:
    sign_in_page(page, base, "alice", PASSWORD, start="/web/me/questionnaires/phq-9")
    check_page(page, "portal-phq9")
    answers = ["Several days", "Not at all", "Several days", "Nearly every day", "Not at all",
               "Not at all", "More than half the days", "Not at all", "Not at all"]
    for number, answer in enumerate(answers):
        page.locator("fieldset").nth(number).get_by_label(answer, exact=True).check()
    page.get_by_role("button", name="Send my answers").click()
    assert "Your score: 7" in page.content()  # 1+0+1+3+0+0+2+0+0, mild (5-9)
    assert "mild" in page.content()
    page.goto(f"{base}/web/me")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download my data (FHIR JSON)").click()
    bundle = orjson.loads(Path(info.value.path()).read_bytes())
    types = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert types.count("QuestionnaireResponse") == 1 and "Condition" in types


def test_keyboard_users_can_skip_to_the_content(page: Any, base: str) -> None:
    page.goto(f"{base}/web/")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Skip to the main content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_pages_fit_a_phone_screen(browser: Any, base: str) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    phone = context.new_page()
    sign_in_page(phone, base, "alice", PASSWORD, start="/web/me/consents")
    for path, name in (("/web/me/consents", "phone-consents"), ("/web/me", "phone-my-data")):
        phone.goto(f"{base}{path}")
        overflow = phone.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
        check_page(phone, name)
    context.close()


def test_pages_read_and_forms_post_with_scripts_disabled(browser: Any, base: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in_page(page, base, "alice", PASSWORD, start="/web/me/consents")
    section = page.locator("section").filter(has_text="Sharing for treatment")
    section.get_by_role("textbox", name="Organisation").fill("Organization/heart-centre")
    section.get_by_role("button", name="Save my choice").click()
    assert "Organization/heart-centre: may see my data for treatment" in page.content()
    page.goto(f"{base}/web/me/access-log")
    assert page.get_by_role("heading", name="Who looked at my data").is_visible()
    context.close()


def test_the_pages_speak_french(page: Any, base: str) -> None:
    sign_in_page(page, base, "alice", PASSWORD, start="/web/me/consents")
    page.get_by_role("link", name="Français").click()
    assert page.get_by_role("heading", name="Mes consentements").is_visible()
    check_page(page, "portal-consents-fr")
    page.get_by_role("link", name="English").click()


def test_a_steward_approves_a_held_release_with_a_reason(page: Any, base: str,
                                                          node: Node) -> None:
    sign_in_page(page, base, "steve", PASSWORD, start="/web/steward/releases")
    check_page(page, "steward-releases")
    page.get_by_label("Reason for your decision").fill("Only cells of 10 or more leave")
    page.get_by_role("button", name="Approve release").click()
    assert "Your decision on task t-review is recorded" in page.content()
    log = TaskLog(node.folder / "network" / "tasks.sqlite")
    assert log.get("t-review").status == "ok"
    log.close()
    for link, name in (("Agreements", "steward-agreements"), ("Audit log", "steward-audit"),
                       ("Data quality", "steward-quality")):
        page.get_by_role("link", name=link, exact=True).click()
        check_page(page, name)
    page.get_by_role("link", name="Audit log", exact=True).click()
    page.get_by_label("Action").fill("release-review")
    page.get_by_role("button", name="Filter").click()
    assert "Only cells of 10 or more leave" in page.content()


@pytest.fixture(scope="module")
def hub_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("hub")
    app = FastAPI()
    install_hub_pages(app, folder)
    app.state.dashboard.store(View("hypertension-control", "2025"), RUN)
    with serve(app) as url:
        yield url
    app.state.dashboard.close()


def test_the_dashboard_shows_charts_and_downloads_its_csv(page: Any, hub_base: str) -> None:
    page.goto(f"{hub_base}/web/dashboard?indicator=hypertension-control&period=2025")
    chart = page.get_by_role("img", name="Line chart of")
    assert chart.evaluate("img => img.naturalWidth") > 0  # the SVG loaded and rendered
    check_page(page, "dashboard")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the table (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert {(r["site"], r["period"], r["numerator"], r["denominator"]) for r in rows
            if r["site"] == "(all sites)"} == {("(all sites)", "2025-01", "30", "60"),
                                               ("(all sites)", "2025-02", "", "")}
    page.get_by_label("Split by").select_option("sex")
    page.get_by_role("button", name="Show").click()
    assert "stratum=sex" in page.url  # every view has its own URL
    assert "This view has not been computed yet." in page.content()


def test_the_dashboard_fits_a_phone_screen(browser: Any, hub_base: str) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    phone = context.new_page()
    phone.goto(f"{hub_base}/web/dashboard?indicator=hypertension-control&period=2025")
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the dashboard scrolls sideways by {overflow}px"
    check_page(phone, "phone-dashboard")
    context.close()
