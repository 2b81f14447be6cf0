"""The node's web pages in process: sign-in through the node's OAuth, the patient portal,
CSRF, and hostile or partial input. Expected values are worked out here by hand from
the records each test stores."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import orjson
import pytest

from healthmesh.api.app import create_app
from healthmesh.node import Node
from healthmesh.web.render import catalogue
from tests.browser import PASSWORD, Pages, csrf_of, pages, sign_in
from tests.conftest import bearer
from tests.test_gate import consent, obs

ORG = "Organization/city-clinic"
PHQ9_ITEMS = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5",
              "44253-3", "44260-8"]
SCORES = {"LA6568-5": 0, "LA6569-3": 1, "LA6570-1": 2, "LA6571-9": 3}


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    n = make_node(organization=ORG)
    n.store.put_many([
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"},
        {"resourceType": "Patient", "id": "p2", "gender": "male"},
        {"resourceType": "Patient", "id": "p3", "gender": "female", "birthDate": "1980-02-02"},
        obs("o1", "p1"), obs("o2", "p2"), obs("o3", "p3"),
        consent("c1", "p1", "HRESCH"), consent("c2", "p2", "HRESCH"),
    ])
    n.auth.store.add_user("alice", PASSWORD, "patient", patient="p1")
    n.auth.store.add_user("bob", PASSWORD, "patient", patient="p2")
    n.auth.store.add_user("steve", PASSWORD, "steward", org=ORG)
    return n


@pytest.fixture
def browser(node: Node) -> Iterator[Callable[[], Pages]]:
    with pages(create_app(node)) as new:
        yield new


@pytest.fixture
def alice(browser: Callable[[], Pages]) -> Pages:
    client = browser()
    sign_in(client, "alice")
    return client


def research_observations(node: Node) -> int:
    """Observations a researcher of another organisation may count (opt-in needed)."""
    from tests.browser import pages as _pages

    with _pages(create_app(node)) as new:
        found = new().get("/fhir/Observation?_summary=count", headers=bearer(
            node, "Organization/uni", "HRESCH", "system/*.rs"))
    return int(found.json()["total"])


# -- sign-in ---------------------------------------------------------------------------

def test_sign_in_goes_through_the_nodes_oauth_and_keeps_tokens_in_strict_cookies(
        browser: Callable[[], Pages]) -> None:
    client = browser()
    start = client.get("/web/signin?next=/web/me/consents", follow_redirects=False)
    assert start.headers["location"].startswith("/auth/authorize?")
    assert "code_challenge_method=S256" in start.headers["location"]
    client = browser()
    assert sign_in(client, "alice", next_url="/web/me/consents") == "/web/me/consents"
    cookies = {c.name: c for c in client.client.cookies.jar}
    assert {"hm_access", "hm_refresh"} <= set(cookies)
    assert all(cookies[n].path == "/web" for n in ("hm_access", "hm_refresh"))
    page = client.get("/web/me")
    assert page.status_code == 200 and "alice" in page.text
    assert cookies["hm_access"].value not in page.text  # the token never reaches the page
    assert "Set-Cookie" not in page.headers or "httponly" in page.headers["set-cookie"].lower()


def test_session_cookies_are_httponly_and_samesite_strict(browser: Callable[[], Pages]) -> None:
    client = browser()
    start = client.get("/web/signin", follow_redirects=False)
    flow = start.headers["set-cookie"].lower()
    assert "httponly" in flow and "samesite=strict" in flow and "path=/web" in flow


def test_a_wrong_password_gives_no_session(browser: Callable[[], Pages]) -> None:
    client = browser()
    with pytest.raises(AssertionError):
        sign_in(client, "alice", "not the password at all")
    assert client.get("/web/me", follow_redirects=False).headers["location"].startswith(
        "/web/signin")


def test_pages_without_a_session_redirect_to_sign_in_and_posts_are_refused(
        browser: Callable[[], Pages]) -> None:
    client = browser()
    answer = client.get("/web/me/consents", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/web/signin?next=%2Fweb%2Fme%2Fconsents"
    posted = client.post("/web/me/consents", data={"purpose": "HRESCH", "allow": "no"})
    assert posted.status_code == 401


def test_a_callback_with_a_foreign_state_or_a_replayed_code_is_refused(
        browser: Callable[[], Pages]) -> None:
    client = browser()
    assert client.get("/web/callback?code=abc&state=x").status_code == 400
    client.get("/web/signin", follow_redirects=False)
    answer = client.get("/web/callback?code=abc&state=forged")
    assert answer.status_code == 400 and "stale" in answer.text


def test_only_page_paths_are_sign_in_destinations(browser: Callable[[], Pages]) -> None:
    for hostile in ("//evil.example/x", "https://evil.example/", "/web//evil", "/fhir/Patient"):
        client = browser()
        assert sign_in(client, "alice", next_url=hostile) == "/web/"


def test_an_invalid_access_token_is_replaced_with_the_refresh_token_once(
        browser: Callable[[], Pages]) -> None:
    client = browser()
    sign_in(client, "alice")
    refresh = next(c.value for c in client.client.cookies.jar if c.name == "hm_refresh")
    for attempt in range(2):
        other = browser()
        other.client.cookies.set("hm_refresh", refresh, domain="node.local", path="/web")
        other.client.cookies.set("hm_access", "garbage", domain="node.local", path="/web")
        answer = other.get("/web/me", follow_redirects=False)
        if attempt == 0:  # the refresh token is spent and replaced
            assert answer.status_code == 200 and "hm_access=" in answer.headers["set-cookie"]
        else:  # a spent refresh token is refused (rotation): sign in again
            assert answer.status_code == 303 and "/web/signin" in answer.headers["location"]


def test_the_wrong_role_gets_a_403_page(browser: Callable[[], Pages], alice: Pages) -> None:
    assert alice.get("/web/steward/audit").status_code == 403
    steward = browser()
    sign_in(steward, "steve")
    answer = steward.get("/web/me")
    assert answer.status_code == 403 and "<html" in answer.text


# -- consents --------------------------------------------------------------------------

def test_turning_research_off_changes_the_very_next_research_count(
        node: Node, alice: Pages) -> None:
    # p1 and p2 opted in to research; p3 did not (research needs an opt-in)
    assert research_observations(node) == 2
    page = alice.get("/web/me/consents")
    assert 'id="allow-HRESCH" name="allow" value="yes" checked' in page.text
    answer = alice.post("/web/me/consents", data={
        "csrf": csrf_of(page.text), "purpose": "HRESCH", "allow": "no"})
    assert answer.status_code == 303
    assert research_observations(node) == 1  # only p2 now
    page = alice.get(answer.headers["location"])
    assert "Your choice is saved." in page.text
    assert 'id="allow-HRESCH" name="allow" value="yes" checked' not in page.text


def test_sensitive_exceptions_are_written_into_the_consent(node: Node, alice: Pages) -> None:
    token = csrf_of(alice.get("/web/me/consents").text)
    alice.post("/web/me/consents", content=f"csrf={token}&purpose=HRESCH&allow=no&allow=yes"
               "&except=PSY&except=HIV".encode(),
               headers={"content-type": "application/x-www-form-urlencoded"})
    (newest,) = [c for c in node.gate.scopes.consents_of("p1")
                 if c.status == "active" and "HRESCH" in c.provision.purposes]
    assert newest.provision.type == "permit"
    assert {code for p in newest.provision.provisions for code in p.security_labels} == \
        {"PSY", "HIV"}


def test_forms_need_the_csrf_token_and_the_own_origin(alice: Pages) -> None:
    token = csrf_of(alice.get("/web/me/consents").text)
    form = {"purpose": "HRESCH", "allow": "no"}
    assert alice.post("/web/me/consents", data=form).status_code == 403
    assert alice.post("/web/me/consents", data={**form, "csrf": "x" * 43}).status_code == 403
    assert alice.post("/web/me/consents", data={**form, "csrf": token},
                      headers={"origin": "https://evil.example"}).status_code == 403
    assert alice.post("/web/me/consents", data={**form, "csrf": token},
                      headers={"origin": "http://node"}).status_code == 303


@pytest.mark.parametrize("form, status", [
    ({"purpose": "HMARKT", "allow": "yes"}, 422),
    ({"purpose": "TREAT", "allow": "yes", "recipient": "javascript:alert(1)"}, 422),
    ({"purpose": "TREAT", "allow": "yes", "recipient": "Organization/" + "x" * 200}, 422),
    ({"purpose": "HRESCH", "allow": "yes", "except": "NOPE"}, 400),
    ({"purpose": "PUBHLTH", "allow": "no"}, 422),  # set by law: not overridable
])
def test_hostile_consent_forms_are_refused_with_a_page(
        alice: Pages, form: dict[str, str], status: int) -> None:
    token = csrf_of(alice.get("/web/me/consents").text)
    answer = alice.post("/web/me/consents", data={**form, "csrf": token})
    assert answer.status_code == status and "<html" in answer.text
    assert "javascript:alert" not in answer.text


def test_oversized_and_non_form_posts_are_refused(alice: Pages) -> None:
    token = csrf_of(alice.get("/web/me/consents").text)
    big = f"csrf={token}&purpose=HRESCH&allow=no&pad={'a' * 20000}".encode()
    answer = alice.post("/web/me/consents", content=big,
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
    answer = alice.post("/web/me/consents", json={"purpose": "HRESCH", "allow": False})
    assert answer.status_code == 415


def test_sharing_with_a_named_organisation_and_revoking_it(node: Node, alice: Pages) -> None:
    token = csrf_of(alice.get("/web/me/consents").text)
    alice.post("/web/me/consents", data={"csrf": token, "purpose": "TREAT", "allow": "yes",
                                         "recipient": "Organization/heart-centre"})
    page = alice.get("/web/me/consents")
    assert "Organization/heart-centre: may see my data for treatment" in page.text
    consent_id = re.search(r'/web/me/consents/([0-9a-f]+)/revoke', page.text).group(1)
    alice.post(f"/web/me/consents/{consent_id}/revoke", data={"csrf": token})
    assert node.fhir.read("Consent", consent_id).resource()["status"] == "inactive"
    assert "heart-centre: may see" not in alice.get("/web/me/consents").text


def test_a_patient_cannot_revoke_or_read_anothers_consent(alice: Pages) -> None:
    token = csrf_of(alice.get("/web/me/consents").text)
    assert alice.post("/web/me/consents/c2/revoke", data={"csrf": token}).status_code == 404
    assert alice.get("/web/me/consents/c2/receipt").status_code == 404


def test_the_receipt_says_what_was_agreed(alice: Pages) -> None:
    page = alice.get("/web/me/consents/c1/receipt")
    assert page.status_code == 200
    assert "Consent/c1" in page.text and "research" in page.text


# -- my data and who looked ------------------------------------------------------------

def test_download_my_data_holds_exactly_my_records(alice: Pages) -> None:
    answer = alice.get("/web/me/data.json")
    assert answer.headers["content-disposition"] == 'attachment; filename="my-data-p1.json"'
    bundle = orjson.loads(answer.content)
    ids = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}"
                 for e in bundle["entry"])
    assert ids == ["Consent/c1", "Observation/o1", "Patient/p1"]


def test_the_access_log_shows_who_read_my_data_and_why(node: Node, alice: Pages) -> None:
    with pages(create_app(node)) as new:  # Organization/uni reads for research
        new().get("/fhir/Observation", headers=bearer(node, "Organization/uni", "HRESCH",
                                                      "system/*.rs"))
    page = alice.get("/web/me/access-log")
    assert "Organization/uni" in page.text and "research" in page.text
    assert alice.get("/web/me/access-log?page=0").status_code == 400
    assert alice.get("/web/me/access-log?page=abc").status_code == 400


# -- questionnaires --------------------------------------------------------------------

def test_phq9_is_stored_as_a_questionnaire_response_with_its_total(
        node: Node, alice: Pages) -> None:
    answers = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9", "LA6568-5", "LA6569-3",
               "LA6570-1", "LA6571-9", "LA6569-3"]
    expected = 0 + 1 + 2 + 3 + 0 + 1 + 2 + 3 + 1  # 13: moderate (10-14)
    token = csrf_of(alice.get("/web/me/questionnaires/phq-9").text)
    page = alice.post("/web/me/questionnaires/phq-9", data={
        "csrf": token, **dict(zip(PHQ9_ITEMS, answers, strict=True))})
    assert page.status_code == 200
    assert f"Your score: {expected}" in page.text and "moderate" in page.text
    assert "You are not alone" in page.text  # item 9 answered "several days"
    stored = [r.resource() for r in node.fhir.store.search(
        node.fhir.parse("QuestionnaireResponse", [], strict=True)).matches]
    (response,) = stored
    assert response["subject"] == {"reference": "Patient/p1"}
    assert response["questionnaire"] == "http://loinc.org/q/44249-1|1"
    by_link = {i["linkId"]: i["answer"][0] for i in response["item"]}
    assert [by_link[i]["valueCoding"]["code"] for i in PHQ9_ITEMS] == answers
    assert by_link["44261-6"] == {"valueInteger": expected}
    listed = alice.get("/web/me/questionnaires").text
    assert f"{expected} (moderate)" in listed


def test_a_partial_questionnaire_is_shown_again_with_what_is_missing(
        node: Node, alice: Pages) -> None:
    token = csrf_of(alice.get("/web/me/questionnaires/phq-9").text)
    form = {"csrf": token, **dict.fromkeys(PHQ9_ITEMS[:7], "LA6568-5"),
            PHQ9_ITEMS[7]: "LA0000-0"}  # 8th invalid, 9th missing
    page = alice.post("/web/me/questionnaires/phq-9", data=form)
    assert page.status_code == 422 and "answer the 2 question(s)" in page.text
    assert page.text.count('aria-invalid="true"') == 2
    assert node.fhir.store.count(node.fhir.parse("QuestionnaireResponse", [],
                                                 strict=True)) == 0


def test_a_question_answered_twice_is_not_an_answer(node: Node, alice: Pages) -> None:
    token = csrf_of(alice.get("/web/me/questionnaires/phq-9").text)
    body = "&".join([f"csrf={token}", *(f"{i}=LA6568-5" for i in PHQ9_ITEMS),
                     f"{PHQ9_ITEMS[0]}=LA6571-9"])
    page = alice.post("/web/me/questionnaires/phq-9", content=body.encode(),
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert page.status_code == 422 and page.text.count('aria-invalid="true"') == 1


def test_experience_of_care_keeps_an_optional_comment_within_its_limit(alice: Pages) -> None:
    token = csrf_of(alice.get("/web/me/questionnaires/experience-of-care").text)
    items = {k: "always" for k in ("respect", "explained", "involved", "waiting")}
    too_long = alice.post("/web/me/questionnaires/experience-of-care",
                          data={"csrf": token, **items, "comment": "x" * 2001})
    assert too_long.status_code == 422
    ok = alice.post("/web/me/questionnaires/experience-of-care",
                    data={"csrf": token, **items, "comment": "<script>alert(1)</script>"})
    assert ok.status_code == 200
    assert alice.get("/web/me/questionnaires/nope").status_code == 404


# -- languages -------------------------------------------------------------------------

def test_every_catalogue_has_the_same_keys_and_templates_use_only_known_ones() -> None:
    from pathlib import Path

    import healthmesh.web

    english, french = set(catalogue("en")), set(catalogue("fr"))
    assert english == french
    root = Path(healthmesh.web.__file__).parent
    used = set()
    for path in (root / "templates").rglob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_.]+[a-z0-9])["']""", path.read_text()))
    data = orjson.loads((root / "data" / "questionnaires.json").read_bytes())
    used |= set(re.findall(r'"(q\.[a-z0-9_.]+)"', orjson.dumps(data).decode()))
    assert used - english == set()


def test_pages_speak_french_by_choice_or_by_the_browser(
        browser: Callable[[], Pages]) -> None:
    client = browser()
    page = client.get("/web/", headers={"accept-language": "fr-FR,fr;q=0.9,en;q=0.5"})
    assert '<html lang="fr">' in page.text and "Se connecter" in page.text
    client.get("/web/lang?l=en&next=/web/")
    assert '<html lang="en">' in client.get("/web/", headers={
        "accept-language": "fr"}).text
    assert client.get("/web/lang?l=xx&next=https://evil.example",
                      follow_redirects=False).headers["location"] == "/web/"


def test_a_french_patient_sees_french_consent_pages(browser: Callable[[], Pages]) -> None:
    client = browser()
    sign_in(client, "alice")
    client.get("/web/lang?l=fr&next=/web/me/consents")
    page = client.get("/web/me/consents")
    assert "Mes consentements" in page.text and "la recherche" in page.text
