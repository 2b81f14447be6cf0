"""Planted identifiers: every string- and date-bearing element of every R4 resource type
carries a marker (a name, SSN, MRN, phone, e-mail, URL, IP address, a full date), a few
levels deep and in extensions; Safe Harbor must leave none of them and stay valid FHIR.

The resources are generated from the element model the validator compiles from the
official StructureDefinitions (healthmesh/fhir/data/r4-model.json.gz), read here
directly, not through the de-identification package.
"""

from __future__ import annotations

import gzip
import itertools
import re
from datetime import date
from typing import Any

import orjson
import pytest

from healthmesh.fhir.validation import MODEL_PATH, resource_types, validate
from healthmesh.privacy.deid import Deidentifier, DeidKey

RAW = orjson.loads(gzip.decompress(MODEL_PATH.read_bytes()))
TYPES = RAW["types"]
RESOURCES = sorted(n for n, t in TYPES.items() if t["kind"] == "resource" and not t["abstract"])
STRINGY = {"string", "markdown", "code", "uri", "url", "canonical", "oid", "uuid", "id",
           "base64Binary", "xhtml"}
DATES = {"date": "1961-07-23", "dateTime": "1961-07-23T10:11:12+02:00",
         "instant": "1961-07-23T10:11:12.123Z"}
OTHER = {"boolean": True, "integer": 7, "positiveInt": 7, "unsignedInt": 7, "decimal": 7.5,
         "time": "10:11:12"}
MAX_DEPTH = 4

# What must not appear anywhere in the output.
LEAKS = [
    re.compile(r"zqx", re.IGNORECASE),  # every planted string carries this tag
    re.compile(r"\d{3}-\d{2}-\d{4}"),  # SSN
    re.compile(r"\(?\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}"),  # phone
    re.compile(r"@"),  # e-mail
    re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),  # IPv4
    re.compile(r"1961-07"),  # a date more precise than the year
    re.compile(r"MRN", re.IGNORECASE),
    re.compile(r"smith", re.IGNORECASE),
    re.compile(r"example\.org"),  # planted URLs
]


class Planter:
    """Builds resources with a unique marker in every string-bearing element."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)

    def marker(self, type_name: str) -> Any:
        n = next(self.counter)
        if type_name in DATES:
            return DATES[type_name]
        if type_name == "xhtml":
            return f'<div xmlns="http://www.w3.org/1999/xhtml">Zqx John Smith{n} MRN {n}</div>'
        if type_name == "base64Binary":
            return "WnF4IEpvaG4gU21pdGg="  # "Zqx John Smith"
        if type_name in ("uri", "url", "canonical"):
            return f"http://zqx{n}.example.org/Patient/john-smith-{n}?ip=10.1.2.{n % 250}"
        if type_name in ("oid", "uuid"):
            return f"urn:zqx:{n}:123-45-6789"
        if type_name == "id":
            return f"zqx-smith-{n}"
        kinds = [f"Zqx John Smith{n}", f"zqx SSN 123-45-{n % 10000:04d}",
                 f"zqx MRN{n:07d}", f"zqx (617) 555-{n % 10000:04d}",
                 f"zqx.smith{n}@example.org", f"zqx 10.0.{n % 250}.1",
                 f"zqx born 1961-07-23 #{n}"]
        return kinds[n % len(kinds)]

    def extensions(self, depth: int) -> list[dict[str, Any]]:
        n = next(self.counter)
        return [
            {"url": f"http://zqx{n}.example.org/ext/smith", "valueString": self.marker("string")},
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
             "valueString": self.marker("string")},
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
             "valueDateTime": DATES["dateTime"]},
            {"url": f"http://zqx{n}.example.org/ext/nested",
             "extension": [{"url": "part", "valueString": self.marker("string")},
                           {"url": "when", "valueDate": DATES["date"]}]},
        ] + ([{"url": f"http://zqx{n}.example.org/ext/name",
               "valueHumanName": self.build("HumanName", depth + 1)}] if depth < 2 else [])

    def build(self, type_name: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        chosen: set[str] = set()
        for el in TYPES[type_name]["elements"]:
            name, t, choice = el["name"], el["type"], el.get("choice")
            if choice:
                if choice in chosen:
                    continue
                if t not in STRINGY and t not in DATES and t not in TYPES:
                    continue
                chosen.add(choice)
            value = self.value(name, t, depth)
            if value is None:
                continue
            if t == "Reference" and "reference" in value:
                target = (el.get("targets") or ["Patient"])[0]
                target = "Patient" if target in ("Resource", "Any") else target
                value["reference"] = f"{target}/zqx-smith-{next(self.counter)}"
            out[name] = [value] if el.get("max", "1") != "1" else value
        return out

    def value(self, name: str, t: str, depth: int) -> Any:
        if name in ("extension", "modifierExtension"):
            return None  # added as a list below
        if t in STRINGY or t in DATES:
            return self.marker(t)
        if t in OTHER:
            return OTHER[t]
        if t == "Resource":
            return None
        if t == "Extension" or depth >= MAX_DEPTH:
            return None
        value = self.build(t, depth + 1)
        if depth < 3 and TYPES[t]["kind"] != "resource":
            ext_ok = any(e["name"] == "extension" for e in TYPES[t]["elements"])
            if ext_ok:
                value["extension"] = self.extensions(depth + 1)
        return value or None

    def resource(self, rtype: str) -> dict[str, Any]:
        res = self.build(rtype, 0)
        res["resourceType"] = rtype
        names = {e["name"] for e in TYPES[rtype]["elements"]}
        if "extension" in names:
            res["extension"] = self.extensions(0)
            res["modifierExtension"] = self.extensions(1)
        if "contained" in names:
            patient = self.build("Patient", 1)
            patient.update(resourceType="Patient", id="zqx-contained-1")
            res["contained"] = [patient]
        return res


@pytest.fixture(scope="module")
def deid() -> Deidentifier:
    return Deidentifier("safe-harbor", today=date(2026, 11, 23))


def _leaks(text: str) -> list[str]:
    return [m.group() for pattern in LEAKS for m in pattern.finditer(text)]


def test_every_resource_type_is_covered() -> None:
    assert set(RESOURCES) == set(resource_types()) and len(RESOURCES) > 140
    assert {"Patient", "Observation", "Claim", "Device", "QuestionnaireResponse"} <= set(RESOURCES)


@pytest.mark.parametrize("rtype", RESOURCES)
def test_safe_harbor_leaves_no_planted_identifier(rtype: str, deid: Deidentifier) -> None:
    planted = Planter().resource(rtype)
    source = orjson.dumps(planted).decode()
    assert len(_leaks(source)) > 20, "the planter should have planted markers"
    out = deid.apply(planted)
    assert out is not None and out["resourceType"] == rtype
    text = orjson.dumps(out).decode()
    assert _leaks(text) == [], f"{rtype} leaks {_leaks(text)[:5]}: {text[:2000]}"
    issues = [i for i in validate(out) if i.severity == "error"]
    assert issues == [], f"{rtype} output is not valid FHIR: {issues[:5]}"
    if any(e["type"] == "Reference" for e in TYPES[rtype]["elements"]):
        # top-level references survive, rewritten to pseudonyms
        assert re.search(r'"reference":"[A-Z][A-Za-z]+/[0-9a-f]{32}"', text), rtype
    codes = {c["code"] for c in out["meta"]["security"]}
    assert {"REDACTED", "PSEUDED"} <= codes


def test_planted_resources_with_scrubbed_text_leak_no_pattern_identifier() -> None:
    """A steward may allow scrubbed free text: the pattern kinds still must not leak."""
    deid = Deidentifier("safe-harbor", allow_scrubbed_text=True, today=date(2026, 11, 23))
    for rtype in ("Patient", "Observation", "DiagnosticReport", "Condition", "Claim"):
        out = deid.apply(Planter().resource(rtype))
        text = orjson.dumps(out).decode()
        pattern_leaks = [leak for leak in _leaks(text)
                         if leak.lower() not in ("zqx", "smith")]
        assert pattern_leaks == [], f"{rtype}: {pattern_leaks[:5]}"
        assert validate(out) == []


@pytest.mark.parametrize("profile", ["date-shift", "pseudonymize"])
def test_keyed_profiles_leave_no_planted_identifier(profile: str) -> None:
    """Dates are shifted rather than truncated; every other marker must still go."""
    deid = Deidentifier(profile, DeidKey(bytes(range(32))), today=date(2026, 11, 23))
    for rtype in RESOURCES:
        out = deid.apply(Planter().resource(rtype))
        text = orjson.dumps(out).decode()
        leaks = [leak for leak in _leaks(text) if not leak.startswith("1961-07")]
        assert leaks == [], f"{profile} {rtype} leaks {leaks[:5]}"
        assert "1961-07-23" not in text, f"{rtype}: a date was not shifted"
        issues = [i for i in validate(out) if i.severity == "error"]
        assert issues == [], f"{profile} {rtype}: {issues[:3]}"


def test_bundle_entries_are_deidentified_as_resources(deid: Deidentifier) -> None:
    planter = Planter()
    entries = [{"fullUrl": f"urn:uuid:0000000{i}-1111-4222-8333-444444444444",
                "resource": planter.resource(rtype)}
               for i, rtype in enumerate(("Patient", "Encounter", "Observation", "Claim"))]
    bundle = {"resourceType": "Bundle", "id": "zqx-bundle", "type": "collection",
              "identifier": {"system": "http://zqx.example.org", "value": "MRN0001"},
              "timestamp": DATES["instant"], "entry": entries}
    out = deid.apply(bundle)
    text = orjson.dumps(out).decode()
    assert _leaks(text) == [], _leaks(text)[:5]
    assert [e["resource"]["resourceType"] for e in out["entry"]] == [
        "Patient", "Encounter", "Observation", "Claim"]
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in out["entry"])
    assert validate(out) == []
