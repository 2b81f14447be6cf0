"""Tests for healthmesh.synth: the synthetic multi-site population generator (issue #3).

One small run (all sites) and one larger run (clinic + hospital, for distributions) are
generated once per session; the other tests read their files.
"""

from __future__ import annotations

import collections
import csv
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

import healthmesh.synth as synth
from healthmesh.synth import SITE_KINDS, generate

pytestmark = pytest.mark.xdist_group("synth")  # one worker generates the session runs once

SMALL, LARGE, SEED = 200, 3000, 7
END = date(2025, 12, 31)
ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
HTN, BP_PANEL = "38341003", "85354-9"
ANTIHYPERTENSIVES = {"314076", "197361", "310798"}


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    generate(out, patients=SMALL, seed=SEED)
    return out


@pytest.fixture(scope="session")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "large"
    generate(out, patients=LARGE, seed=SEED + 1, sites=("clinic", "hospital"))
    return out


def resources(root: Path, site: str, rtype: str | None = None) -> Iterator[dict[str, Any]]:
    pattern = f"{rtype}.ndjson" if rtype else "*.ndjson"
    for path in sorted((root / site).glob(pattern)):
        with path.open("rb") as f:
            for line in f:
                yield orjson.loads(line)


def truth(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (root / "truth" / "linkage.csv").open(newline="") as f:
        return {(r["site"], r["resource_id"]): r for r in csv.DictReader(f)}


def people(root: Path, sites: tuple[str, ...]) -> dict[str, dict[str, dict[str, Any]]]:
    """True person id -> {site: Patient resource}."""
    links = truth(root)
    out: dict[str, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
    for site in sites:
        for patient in resources(root, site, "Patient"):
            out[links[(site, patient["id"])]["person_id"]][site] = patient
    return out


def age_years(birth_date: str) -> float:
    return (END - date.fromisoformat(birth_date)).days / 365.2425


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


# --- API and arguments ---------------------------------------------------------------------

def test_public_api() -> None:
    assert synth.__all__ == ["FORMATS", "GENERATOR_VERSION", "SITE_KINDS", "generate"]
    assert SITE_KINDS == ("hospital", "clinic", "lab", "insurer", "pharmacy", "dental",
                          "public-health")


@pytest.mark.parametrize("kwargs, message", [
    ({"patients": 0}, "patients"),
    ({"patients": 5, "sites": ["hospital", "spa"]}, "unknown site"),
    ({"patients": 5, "sites": []}, "site"),
    ({"patients": 5, "sites": ["lab", "lab"]}, "duplicate"),
    ({"patients": 5, "start": date(2020, 1, 1), "end": date(2020, 1, 1)}, "before"),
    ({"patients": 5, "fmt": "csv"}, "format"),
    ({"patients": 5, "region": "atlantis"}, "region"),
])
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", **kwargs)


def test_refuses_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate(tmp_path, patients=3)


def test_progress_reports_patients_done(tmp_path: Path) -> None:
    seen: list[int] = []
    generate(tmp_path / "out", patients=120, sites="clinic,lab", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 120


# --- determinism, manifest, layout ---------------------------------------------------------

def test_same_seed_is_byte_identical(small: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", patients=SMALL, seed=SEED)
    assert all_files(tmp_path / "again") == all_files(small)


def test_other_seed_differs(small: Path, tmp_path: Path) -> None:
    generate(tmp_path / "other", patients=SMALL, seed=SEED + 100, sites=("clinic",))
    other = (tmp_path / "other" / "clinic" / "Patient.ndjson").read_bytes()
    assert other != (small / "clinic" / "Patient.ndjson").read_bytes()


def test_site_output_does_not_depend_on_other_sites(small: Path, tmp_path: Path) -> None:
    generate(tmp_path / "one", patients=SMALL, seed=SEED, sites=("hospital",))
    assert all_files(tmp_path / "one" / "hospital") == all_files(small / "hospital")


def test_manifest_counts_equal_line_counts(small: Path) -> None:
    manifest = orjson.loads((small / "manifest.json").read_bytes())
    assert manifest["seed"] == SEED and manifest["parameters"]["patients"] == SMALL
    assert set(manifest["sites"]) == set(SITE_KINDS)
    for site, info in manifest["sites"].items():
        on_disk = {p.stem: p.read_bytes().count(b"\n") for p in (small / site).glob("*.ndjson")}
        assert info["resources"] == on_disk, site
        assert info["patients"] == on_disk["Patient"]
        assert sorted(info["files"]) == sorted(f"{site}/{t}.ndjson" for t in on_disk)


EXPECTED_TYPES = {
    "hospital": {"Patient", "Organization", "Practitioner", "Encounter", "Condition",
                 "Observation", "DiagnosticReport", "Procedure", "MedicationRequest", "Consent",
                 "Questionnaire", "QuestionnaireResponse"},
    "clinic": {"Patient", "Organization", "Practitioner", "Encounter", "Condition",
               "Observation", "Procedure", "MedicationRequest", "Immunization", "CarePlan",
               "AllergyIntolerance", "Consent", "Device", "Questionnaire",
               "QuestionnaireResponse"},
    "lab": {"Patient", "Organization", "Practitioner", "Observation", "DiagnosticReport"},
    "insurer": {"Patient", "Organization", "Coverage", "Claim", "ExplanationOfBenefit"},
    "pharmacy": {"Patient", "Organization", "Practitioner", "MedicationDispense",
                 "Immunization"},
    "dental": {"Patient", "Organization", "Practitioner", "Encounter", "Condition", "Procedure"},
    "public-health": {"Patient", "Organization", "Immunization", "Condition"},
}


@pytest.mark.parametrize("site", SITE_KINDS)
def test_each_site_holds_its_resource_types(small: Path, site: str) -> None:
    present = {p.stem for p in (small / site).glob("*.ndjson")}
    assert EXPECTED_TYPES[site] <= present


def _codes(items: Iterator[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(c["code"]["coding"][0]["code"] for c in items)


def test_clinical_content_is_there(small: Path) -> None:
    clinic = _codes(resources(small, "clinic", "Observation"))
    for code in (BP_PANEL, "39156-5", "72166-2", "44261-6", "41950-7", "40443-4", "88122-7",
                 "71802-3", "82589-3"):
        assert clinic[code] > 0, code
    lab = _codes(resources(small, "lab", "Observation"))
    for code in ("4548-4", "2339-0", "13457-7", "2085-9"):
        assert lab[code] > 0, code
    assert lab["33914-3"] + lab["62238-1"] > 0
    assert _codes(resources(small, "lab", "DiagnosticReport"))["81247-9"] > 0
    conditions = _codes(resources(small, "clinic", "Condition"))
    assert conditions[HTN] > 0 and conditions["44054006"] > 0
    home_bp = [o for o in resources(small, "clinic", "Observation") if "device" in o
               and o["code"]["coding"][0]["code"] == BP_PANEL]
    assert home_bp and all(o["device"]["reference"].startswith("Device/") for o in home_bp)
    vaccines = {i["vaccineCode"]["coding"][0]["code"]
                for i in resources(small, "public-health", "Immunization")}
    assert {"140", "208"} <= vaccines
    for eob in resources(small, "insurer", "ExplanationOfBenefit"):
        assert eob["total"][0]["amount"]["value"] > 0


def test_consents_are_well_formed(small: Path) -> None:
    consents = list(resources(small, "clinic", "Consent"))
    scopes = collections.Counter(c["scope"]["coding"][0]["code"] for c in consents)
    assert scopes["research"] > 0 and scopes["patient-privacy"] > 0
    for c in consents:
        assert c["category"][0]["coding"][0]["code"] == "59284-0"
        assert "policyRule" in c and c["patient"]["reference"].startswith("Patient/")
        if c["status"] == "inactive":
            assert "end" in c["provision"]["period"]
    nested = [c for c in consents if "provision" in c["provision"]]
    assert nested and all(n["provision"]["provision"][0]["type"] == "deny" for n in nested)


# --- identity: references, ids, truth ------------------------------------------------------

def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


@pytest.mark.parametrize("site", SITE_KINDS)
def test_references_resolve_within_site_and_ids_are_unique(small: Path, site: str) -> None:
    items = list(resources(small, site))
    keys = [f"{r['resourceType']}/{r['id']}" for r in items]
    assert len(keys) == len(set(keys))
    assert all(ID.fullmatch(r["id"]) for r in items)
    known = set(keys)
    dangling = {ref for r in items for ref in _references(r) if ref not in known}
    assert not dangling, sorted(dangling)[:5]


def test_truth_covers_every_patient_and_never_leaks(small: Path) -> None:
    links = truth(small)
    patients = {(site, p["id"]) for site in SITE_KINDS for p in resources(small, site, "Patient")}
    assert patients == set(links)
    for row in links.values():
        assert row["resource_type"] == "Patient" and row["mrn"]
    secrets = {r["person_id"] for r in links.values()} | {r["household_id"] for r in links.values()}
    pattern = re.compile(rb"(?:person|household)-\d{7,8}")
    for path in small.glob("*/*.ndjson"):
        found = set(pattern.findall(path.read_bytes()))
        assert not found & {s.encode() for s in secrets}, path


def test_households_share_address_and_family_card(small: Path) -> None:
    links = truth(small)
    cards: dict[str, set[str]] = collections.defaultdict(set)
    for patient in resources(small, "insurer", "Patient"):
        household = links[("insurer", patient["id"])]["household_id"]
        for ident in patient["identifier"]:
            if ident["system"].endswith("family-health-card"):
                cards[household].add(ident["value"])
    multi = [h for h, values in cards.items() if values]
    assert multi and sum(len(cards[h]) == 1 for h in multi) / len(multi) > 0.95


# --- validity ------------------------------------------------------------------------------

REQUIRED = {  # fallback when the validator is not available
    "Observation": ("status", "code"), "Encounter": ("status", "class"),
    "Condition": ("subject",), "Claim": ("status", "type", "use", "patient", "created",
                                         "provider", "priority", "insurance"),
    "ExplanationOfBenefit": ("status", "type", "use", "patient", "created", "insurer",
                             "provider", "outcome", "insurance"),
    "Coverage": ("status", "beneficiary", "payor"), "MedicationDispense": ("status",),
    "Consent": ("status", "scope", "category"), "QuestionnaireResponse": ("status",),
    "Questionnaire": ("status",), "DiagnosticReport": ("status", "code"),
    "MedicationRequest": ("status", "intent", "subject"), "Immunization": ("status", "patient"),
    "Procedure": ("status", "subject"), "CarePlan": ("status", "intent", "subject"),
    "AllergyIntolerance": ("patient",),
}


def _problems(resource: dict[str, Any]) -> list[str]:
    try:
        from healthmesh.fhir.validation import validate
    except ImportError:
        missing = [k for k in REQUIRED.get(resource["resourceType"], ()) if k not in resource]
        return [f"missing {k}" for k in missing]
    return [f"{i.expression}: {i.message}" for i in validate(resource)
            if i.severity in ("error", "fatal")]


def test_every_resource_is_valid_fhir_r4(small: Path) -> None:
    errors: collections.Counter[str] = collections.Counter()
    checked = 0
    for site in SITE_KINDS:
        for resource in resources(small, site):
            checked += 1
            for problem in _problems(resource):
                errors[f"{site} {resource['resourceType']} {problem}"] += 1
    assert checked > 10 * SMALL
    assert not errors, errors.most_common(10)


def test_bundle_format(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "b", patients=150, seed=3, fmt="bundle",
                        sites=("clinic", "insurer"))
    for site in ("clinic", "insurer"):
        bundles = sorted((tmp_path / "b" / site / "bundles").glob("*.json"))
        assert [f"{site}/bundles/{b.name}" for b in bundles] == manifest["sites"][site]["files"]
        counts: collections.Counter[str] = collections.Counter()
        for path in bundles:
            bundle = orjson.loads(path.read_bytes())
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
            for entry in bundle["entry"]:
                resource = entry["resource"]
                assert entry["request"] == {
                    "method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
                counts[resource["resourceType"]] += 1
        assert dict(counts) == manifest["sites"][site]["resources"]
        assert len(bundles) >= 2


def test_uk_region(tmp_path: Path) -> None:
    generate(tmp_path / "uk", patients=40, seed=5, region="uk", sites=("hospital", "insurer"))
    patients = list(resources(tmp_path / "uk", "insurer", "Patient"))
    assert patients and all("extension" not in p for p in patients)
    nhs = [i["value"] for p in patients for i in p["identifier"]
           if i["system"] == "https://fhir.nhs.uk/Id/nhs-number"]
    assert nhs and all(re.fullmatch(r"999 \d{3} \d{4}", v) for v in nhs)
    assert all(p["address"][0]["country"] == "GB" for p in patients if "address" in p)


# --- distributions -------------------------------------------------------------------------

def _hypertensive(root: Path) -> set[str]:
    links, out = truth(root), set()
    for site in ("clinic", "hospital"):
        for c in resources(root, site, "Condition"):
            if c["code"]["coding"][0]["code"] == HTN:
                out.add(links[(site, c["subject"]["reference"][8:])]["person_id"])
    return out


def _ages(everyone: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    ages = {}
    for person, copies in everyone.items():
        births = collections.Counter(p["birthDate"] for p in copies.values() if "birthDate" in p)
        if births:
            ages[person] = age_years(births.most_common(1)[0][0])
    return ages


def test_hypertension_prevalence_rises_with_age(large: Path) -> None:
    ages = _ages(people(large, ("clinic", "hospital")))
    htn = _hypertensive(large)
    adults = [p for p, a in ages.items() if a >= 18]
    assert 0.25 <= sum(p in htn for p in adults) / len(adults) <= 0.35
    bands = [[p for p in adults if lo <= ages[p] < hi] for lo, hi in ((18, 40), (40, 60),
                                                                      (60, 200))]
    rates = [sum(p in htn for p in band) / len(band) for band in bands]
    assert rates[0] < rates[1] < rates[2]


def test_bp_control_among_treated_improves(large: Path) -> None:
    treated: dict[str, str] = {}
    for m in resources(large, "clinic", "MedicationRequest"):
        if m["medicationCodeableConcept"]["coding"][0]["code"] in ANTIHYPERTENSIVES:
            pid = m["subject"]["reference"]
            treated[pid] = min(treated.get(pid, "9999"), m["authoredOn"])
    control: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    for o in resources(large, "clinic", "Observation"):
        if o["code"]["coding"][0]["code"] != BP_PANEL or "device" in o:
            continue
        pid, when = o["subject"]["reference"], o["effectiveDateTime"][:10]
        if pid in treated and treated[pid] <= when:
            sbp, dbp = (c["valueQuantity"]["value"] for c in o["component"])
            control[int(when[:4])][0] += sbp < 140 and dbp < 90
            control[int(when[:4])][1] += 1
    first = sum(control[y][0] for y in (2015, 2016)) / sum(control[y][1] for y in (2015, 2016))
    last = sum(control[y][0] for y in (2024, 2025)) / sum(control[y][1] for y in (2024, 2025))
    assert last > first + 0.1


def test_age_sex_pyramid(large: Path) -> None:
    everyone = people(large, ("clinic", "hospital"))
    ages = list(_ages(everyone).values())
    children = sum(a < 18 for a in ages) / len(ages)
    elderly = sum(a >= 65 for a in ages) / len(ages)
    assert 0.17 <= children <= 0.28 and 0.12 <= elderly <= 0.23
    sexes = collections.Counter(collections.Counter(p["gender"] for p in c.values())
                                .most_common(1)[0][0] for c in everyone.values())
    assert 0.45 <= sexes["male"] / (sexes["male"] + sexes["female"]) <= 0.55


def test_research_opt_in_share(large: Path) -> None:
    research = [c for site in ("clinic", "hospital") for c in resources(large, site, "Consent")
                if c["scope"]["coding"][0]["code"] == "research"]
    opted_in = sum(c["status"] == "active" and c["provision"]["type"] == "permit"
                   for c in research)
    assert 0.60 <= opted_in / len(research) <= 0.75
    assert any(c["status"] == "inactive" for c in research)
    assert any(c["provision"]["type"] == "deny" for c in research)


def test_linkage_noise_rates_in_documented_ranges(small: Path) -> None:
    """docs/synthetic-data.md: across all seven sites, among people seen at two or more,
    25-50% have a given or family name that differs (case-insensitively) somewhere and
    2-9% a differing birth date."""
    everyone = people(small, SITE_KINDS)
    multi = [c for c in everyone.values() if len(c) >= 2]

    def name(p: dict[str, Any]) -> tuple[str, str]:
        return p["name"][0]["given"][0].lower(), p["name"][0]["family"].lower()

    names = sum(len({name(p) for p in c.values()}) > 1 for c in multi) / len(multi)
    births = sum(len({p["birthDate"] for p in c.values() if "birthDate" in p}) > 1
                 for c in multi) / len(multi)
    assert 0.25 <= names <= 0.50
    assert 0.02 <= births <= 0.09
