"""Tests of the FHIR R4 validator (healthmesh.fhir.validation) and its generated model.

Positive: every official R4 example (except the known-defective ones listed below, each
with the rule it breaks) and every resource of the Synthea Bundles validate without
issues. Negative: one focused case per check, asserting the issue code and FHIRPath
location. Robustness: hostile nesting, and a property test that the generated fast path
never accepts what the reporting walk rejects.
"""

from __future__ import annotations

import copy
import functools
import gzip
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthmesh.errors import Issue
from healthmesh.fhir import validation
from healthmesh.fhir.validation import MAX_DEPTH, Validator, resource_types, validate

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFINITIONS = SHARED / "fhir-r4" / "definitions"
EXAMPLES = SHARED / "fhir-r4" / "examples"
SYNTHEA = SHARED / "data" / "synthea"
MISSING = f"FHIR reference data not found at {SHARED}: check out the repository beside shared/"


def _names(folder: Path, pattern: str) -> list[str | None]:
    """File names for parametrisation; [None] (a failing case) when the data is missing."""
    names: list[str | None] = []
    if folder.is_dir():
        names += sorted(str(p.relative_to(folder)) for p in folder.glob(pattern))
    return names or [None]


def _load(folder: Path, name: str | None) -> Any:
    if name is None:
        pytest.fail(MISSING, pytrace=False)
    return orjson.loads((folder / name).read_bytes())


def _codes(issues: list[Issue]) -> set[tuple[str, str | None]]:
    return {(i.code, i.expression) for i in issues}


# ------------------------------------------------------------------ official examples

# Official examples that break a rule of the R4 StructureDefinitions (which are
# authoritative). Each maps to the exact (code, expression) issues it must produce.
KNOWN_DEFECTS: dict[str, set[tuple[str, str]]] = {
    # DeviceMetric.parent is Reference(Device); the example points to DeviceDefinition/dc102.
    "DeviceMetric-example.json": {("invalid", "DeviceMetric.parent.reference")},
    # DeviceUseStatement.reasonReference is Reference(Condition | Observation |
    # DiagnosticReport | DocumentReference | Media); the example points to Procedure/example.
    "DeviceUseStatement-example.json": {
        ("invalid", "DeviceUseStatement.reasonReference[0].reference")
    },
    # MedicationRequest.dispenseRequest.performer is Reference(Organization); the example
    # points to Practitioner/f001.
    "MedicationRequest-medrx0301.json": {
        ("invalid", "MedicationRequest.dispenseRequest.performer.reference")
    },
    # Observation.performer allows Practitioner, PractitionerRole, Organization, CareTeam,
    # Patient and RelatedPerson; the example points to Encounter/example.
    "Observation-clinical-gender.json": {("invalid", "Observation.performer[0].reference")},
}
# Questionnaire.item.linkId is 1..1; 32 nested items of Questionnaire-qs1 have none.
QS1 = "Questionnaire-qs1.json"
# fhir.schema.json rejects these two, but they are valid by the StructureDefinitions:
# a no-break space (U+00A0) is allowed in a string ([ \r\n\t\S]+ with XML-Schema \S), and
# "_profile" is the primitive-extension sibling of the canonical array "profile".
SCHEMA_ODDITIES = [
    "DiagnosticReport-gingival-mass.json",
    "StructureDefinition-example-composition.json",
]


@pytest.mark.parametrize("name", _names(EXAMPLES, "*.json"))
def test_official_example(name: str | None) -> None:
    issues = validate(_load(EXAMPLES, name))
    if name in KNOWN_DEFECTS:
        assert _codes(issues) == KNOWN_DEFECTS[name]
    elif name == QS1:
        assert len(issues) == 32
        assert all(i.code == "required" and i.expression.endswith(".linkId") for i in issues)
    else:
        assert issues == []


@pytest.mark.parametrize("name", SCHEMA_ODDITIES)
def test_schema_oddities_are_valid(name: str) -> None:
    assert validate(_load(EXAMPLES, name)) == []


# ------------------------------------------------------------------ Synthea


@pytest.mark.parametrize("name", _names(SYNTHEA, "**/*.json"))
def test_synthea_bundle(name: str | None) -> None:
    bundle = _load(SYNTHEA, name)
    validator = Validator()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert validator.validate(resource, allow_conditional_references=True) == [], resource["id"]
    assert validator.validate(bundle, allow_conditional_references=True) == []


def test_synthea_conditional_references_need_permission() -> None:
    bundle = _load(SYNTHEA, _names(SYNTHEA, "*.json")[0])
    encounter = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"
    )
    issues = validate(encounter)
    assert issues and all(i.code == "invalid" and "Conditional" in i.message for i in issues)


# ------------------------------------------------------------------ negative cases

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}
EXT = {"url": "http://example.org/x", "valueString": "a"}
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def pat(**fields: Any) -> dict[str, Any]:
    """A Patient with ``fields``."""
    return {"resourceType": "Patient", **fields}


def obs(**fields: Any) -> dict[str, Any]:
    """A valid Observation with ``fields`` added."""
    return {**OBS, **fields}


def without(resource: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != key}


def ref(reference: str, **fields: Any) -> dict[str, Any]:
    return {"reference": reference, **fields}


CLAIM = {
    "resourceType": "Claim",
    "status": "active",
    "type": {"text": "t"},
    "use": "claim",
    "patient": ref("Patient/1"),
    "created": "2020-01-01",
    "provider": ref("Organization/1"),
    "priority": {"text": "p"},
}
MEDREQ = {"resourceType": "MedicationRequest", "status": "active", "intent": "order"}
BUNDLE = {"resourceType": "Bundle", "type": "collection"}
ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

# (test id, resource, issue code, issue expression)
NEGATIVE: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown element", pat(foo=1), "structure", "Patient.foo"),
    (
        "unknown element in a datatype",
        pat(name=[{"family": "A", "surname": "B"}]),
        "structure",
        "Patient.name[0].surname",
    ),
    ("string for boolean", pat(active="true"), "structure", "Patient.active"),
    (
        "string for decimal",
        obs(valueQuantity={"value": "1.5"}),
        "structure",
        "Observation.value.ofType(Quantity).value",
    ),
    ("number for string", pat(name=[{"family": 1}]), "structure", "Patient.name[0].family"),
    (
        "float for integer",
        pat(multipleBirthInteger=2.5),
        "structure",
        "Patient.multipleBirth.ofType(integer)",
    ),
    (
        "integer out of range",
        pat(multipleBirthInteger=2**31),
        "value",
        "Patient.multipleBirth.ofType(integer)",
    ),
    ("missing status", without(OBS, "status"), "required", "Observation.status"),
    ("missing code", without(OBS, "code"), "required", "Observation.code"),
    (
        "missing choice",
        {**MEDREQ, "subject": ref("Patient/1")},
        "required",
        "MedicationRequest.medication",
    ),
    ("array for single", pat(gender=["male"]), "structure", "Patient.gender"),
    ("single for array", pat(name={"family": "A"}), "structure", "Patient.name"),
    (
        "two choice variants",
        obs(valueString="a", valueBoolean=True),
        "invalid",
        "Observation.value",
    ),
    ("impossible date", pat(birthDate="2021-02-29"), "value", "Patient.birthDate"),
    ("bad date", pat(birthDate="1990-1-1"), "value", "Patient.birthDate"),
    (
        "dateTime without zone",
        obs(effectiveDateTime="2020-01-01T10:00:00"),
        "value",
        "Observation.effective.ofType(dateTime)",
    ),
    ("instant without time", obs(issued="2020-01-01"), "value", "Observation.issued"),
    ("bad time", obs(valueTime="25:00:00"), "value", "Observation.value.ofType(time)"),
    ("bad id", pat(id="a b"), "value", "Patient.id"),
    ("long id", pat(id="a" * 65), "value", "Patient.id"),
    ("bad uri", pat(implicitRules="a b"), "value", "Patient.implicitRules"),
    ("bad code", pat(language=" en"), "value", "Patient.language"),
    (
        "bad base64",
        {"resourceType": "Binary", "contentType": "text/plain", "data": "abc"},
        "value",
        "Binary.data",
    ),
    (
        "bad positiveInt",
        {**CLAIM, "insurance": [{"sequence": 0, "focal": True, "coverage": ref("Coverage/1")}]},
        "value",
        "Claim.insurance[0].sequence",
    ),
    ("empty string", pat(name=[{"family": ""}]), "value", "Patient.name[0].family"),
    ("empty object", pat(name=[{}]), "structure", "Patient.name[0]"),
    ("empty array", pat(name=[]), "structure", "Patient.name"),
    ("null", pat(active=None), "structure", "Patient.active"),
    ("null in array", pat(name=[{"given": ["a", None]}]), "structure", "Patient.name[0].given[1]"),
    (
        "misaligned _given",
        pat(name=[{"given": ["a", "b"], "_given": [None]}]),
        "structure",
        "Patient.name[0].given",
    ),
    ("required binding", pat(gender="mail"), "code-invalid", "Patient.gender"),
    (
        "required binding of a CodeableConcept",
        {
            "resourceType": "Condition",
            "subject": ref("Patient/1"),
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "gone"}]},
        },
        "code-invalid",
        "Condition.clinicalStatus.coding[0].code",
    ),
    (
        "reference with space",
        obs(subject=ref("Patient 1")),
        "invalid",
        "Observation.subject.reference",
    ),
    (
        "reference to unknown type",
        obs(subject=ref("Foo/1")),
        "invalid",
        "Observation.subject.reference",
    ),
    (
        "reference with bad id",
        obs(subject=ref("Patient/a_b")),
        "invalid",
        "Observation.subject.reference",
    ),
    ("wrong target", obs(subject=ref("Medication/1")), "invalid", "Observation.subject.reference"),
    (
        "absolute reference to wrong target",
        obs(subject=ref("http://x.org/fhir/Medication/1")),
        "invalid",
        "Observation.subject.reference",
    ),
    (
        "conditional reference",
        obs(subject=ref("Patient?identifier=x|1")),
        "invalid",
        "Observation.subject.reference",
    ),
    (
        "bad urn:uuid",
        obs(subject=ref("urn:uuid:not-a-uuid")),
        "invalid",
        "Observation.subject.reference",
    ),
    (
        "dangling local reference",
        obs(subject=ref("#p1")),
        "invalid",
        "Observation.subject.reference",
    ),
    (
        "Reference.type mismatch",
        obs(subject=ref("Patient/1", type="Group")),
        "invalid",
        "Observation.subject.reference",
    ),
    ("unknown resourceType", {"resourceType": "Patientx"}, "invalid", "resourceType"),
    ("abstract resourceType", {"resourceType": "DomainResource"}, "invalid", "resourceType"),
    ("missing resourceType", {"id": "a"}, "required", "resourceType"),
    (
        "extension without url",
        pat(extension=[{"valueString": "a"}]),
        "required",
        "Patient.extension[0].url",
    ),
    (
        "extension with two values",
        pat(extension=[{**EXT, "valueInteger": 1}]),
        "invalid",
        "Patient.extension[0].value",
    ),
    (
        "extension with value and extensions (ext-1)",
        pat(extension=[{**EXT, "extension": [EXT]}]),
        "invalid",
        "Patient.extension[0]",
    ),
    (
        "extension with neither (ext-1)",
        pat(modifierExtension=[{"url": "http://x.org/e"}]),
        "invalid",
        "Patient.modifierExtension[0]",
    ),
    (
        "primitive extension with unknown element",
        pat(_birthDate={"foo": 1}),
        "structure",
        "Patient.birthDate.foo",
    ),
    (
        "contained with bad content",
        pat(
            contained=[{"resourceType": "Organization", "id": "o", "active": "yes"}],
            managingOrganization=ref("#o"),
        ),
        "structure",
        "Patient.contained[0].active",
    ),
    (
        "nested contained (dom-2)",
        pat(contained=[pat(id="a", contained=[pat(id="b")])]),
        "invalid",
        "Patient.contained[0].contained",
    ),
    (
        "contained with versionId (dom-4)",
        pat(
            contained=[pat(id="a", meta={"versionId": "1"})],
            link=[{"other": ref("#a"), "type": "seealso"}],
        ),
        "invalid",
        "Patient.contained[0].meta.versionId",
    ),
    (
        "contained with a security label (dom-5)",
        pat(contained=[pat(id="a", meta={"security": [{"code": "R"}]})]),
        "invalid",
        "Patient.contained[0].meta.security",
    ),
    (
        "invalid Bundle entry",
        {**BUNDLE, "entry": [{"resource": pat(gender="x")}]},
        "code-invalid",
        "Bundle.entry[0].resource.gender",
    ),
    (
        "invalid Parameters resource",
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "p", "resource": without(OBS, "status")}],
        },
        "required",
        "Parameters.parameter[0].resource.status",
    ),
    (
        "div not xhtml",
        pat(text={"status": "generated", "div": "hello"}),
        "value",
        "Patient.text.div",
    ),
    (
        "SimpleQuantity has no comparator",
        obs(referenceRange=[{"low": {"value": 1, "comparator": "<"}}]),
        "structure",
        "Observation.referenceRange[0].low.comparator",
    ),
]


@pytest.mark.parametrize(
    ("resource", "code", "expression"),
    [pytest.param(r, c, e, id=name) for name, r, c, e in NEGATIVE],
)
def test_negative(resource: dict[str, Any], code: str, expression: str) -> None:
    issues = validate(resource)
    assert (code, expression) in _codes(issues), issues
    assert all(i.severity == "error" and i.message for i in issues)


def test_all_problems_are_reported() -> None:
    resource = {"resourceType": "Observation", "foo": 1, "status": "done", "issued": "x"}
    assert _codes(validate(resource)) == {
        ("structure", "Observation.foo"),
        ("code-invalid", "Observation.status"),
        ("value", "Observation.issued"),
        ("required", "Observation.code"),
    }


def test_not_a_dict() -> None:
    assert [i.code for i in validate([])] == ["structure"]  # type: ignore[arg-type]


# ------------------------------------------------------------------ hostile input


def _nest(key: str, leaf: dict[str, Any], wrap: dict[str, Any], levels: int) -> dict[str, Any]:
    node = leaf
    for _ in range(levels):
        node = {**wrap, key: [node]}
    return node


@pytest.mark.parametrize(
    "resource",
    [
        {
            "resourceType": "Patient",
            "extension": [_nest("extension", EXT, {"url": "http://x.org/e"}, 10_000)],
        },
        _nest("contained", {"resourceType": "Patient"}, {"resourceType": "Patient"}, 10_000),
        _nest("item", {"linkId": "1"}, {"linkId": "1"}, 10_000)
        | {"resourceType": "Questionnaire", "status": "draft"},
        _nest(
            "entry",
            {"resourceType": "Patient"},
            {"resourceType": "Bundle", "type": "collection"},
            10_000,
        ),
    ],
    ids=["extension", "contained", "questionnaire-item", "bundle-entry-key"],
)
def test_deep_nesting_is_reported_not_raised(resource: dict[str, Any]) -> None:
    issues = validate(resource)
    assert issues
    assert len(issues) < 200


def test_depth_limit_issue() -> None:
    deep = {
        "resourceType": "Patient",
        "extension": [_nest("extension", EXT, {"url": "http://x.org/e"}, 10_000)],
    }
    too_deep = [i for i in validate(deep) if i.code == "too-costly"]
    assert len(too_deep) == 1
    assert too_deep[0].expression == "Patient" + ".extension[0]" * MAX_DEPTH


def test_deep_bundle_entries() -> None:
    node: dict[str, Any] = {"resourceType": "Patient"}
    for _ in range(10_000):
        node = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": node}]}
    assert [i.code for i in validate(node)] == ["too-costly"]


def test_huge_invalid_string_is_quick() -> None:
    start = time.perf_counter()
    issues = validate(
        {"resourceType": "Binary", "contentType": "a/b", "data": "AAAA " * 100_000 + "!"}
    )
    assert time.perf_counter() - start < 1.0
    assert _codes(issues) == {("value", "Binary.data")}


# ------------------------------------------------------------------ valid edge cases

UUID = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"
ORG = {"resourceType": "Organization", "id": "o1", "name": "Clinic"}
EXT_ONLY = {"extension": [EXT]}

VALID: list[tuple[str, dict[str, Any]]] = [
    ("minimal", pat()),
    (
        "primitive extensions aligned with null",
        pat(name=[{"given": ["Jim", None, "Bo"], "_given": [None, EXT_ONLY, {"id": "g3"}]}]),
    ),
    (
        "_x without a value",
        pat(_birthDate={"extension": [{"url": ABSENT, "valueCode": "unknown"}]}),
    ),
    ("_x satisfies a required element", {**without(OBS, "status"), "_status": EXT_ONLY}),
    ("_x beside its choice variant", obs(valueString="a", _valueString={"id": "v"})),
    ("contained with local references", pat(contained=[ORG], managingOrganization=ref("#o1"))),
    (
        "reference to the container",
        pat(contained=[{**obs(id="o"), "subject": ref("#")}]),
    ),
    (
        "Bundle with entries",
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": UUID,
                    "resource": pat(gender="female"),
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": obs(subject=ref(UUID)),
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        },
    ),
    (
        "references",
        obs(
            subject=ref("Patient/p-1/_history/2"),
            performer=[
                ref("http://x.org/fhir/Practitioner/9"),
                ref("urn:oid:1.2.3"),
                {"display": "Dr X"},
                ref("Organization/1", type="Organization"),
            ],
        ),
    ),
    (
        "leap day and leap second",
        obs(effectiveDateTime="2020-02-29T23:59:60Z", issued="2024-12-31T00:00:00.123+14:00"),
    ),
    ("partial dates", pat(birthDate="1970", deceasedDateTime="2001-07")),
    (
        "decimals",
        obs(
            valueQuantity={"value": 1e-3, "unit": "g"},
            referenceRange=[{"low": {"value": 0}, "high": {"value": -1.5}}],
        ),
    ),
    ("no-break space and unicode", pat(name=[{"text": "Zoë\u00a0Ångström 王"}])),
    (
        "code outside the bound system is not checked",
        {
            "resourceType": "Condition",
            "subject": ref("Patient/1"),
            "clinicalStatus": {"coding": [{"system": "http://example.org/x", "code": "gone"}]},
        },
    ),
    (
        "unexpandable value set is not checked",
        {"resourceType": "Binary", "contentType": "application/x-anything"},
    ),
]


@pytest.mark.parametrize("resource", [pytest.param(r, id=name) for name, r in VALID])
def test_valid_edge_case(resource: dict[str, Any]) -> None:
    assert validate(resource) == []


def test_conditional_reference_when_allowed() -> None:
    resource = {**OBS, "performer": [{"reference": "Organization?identifier=https://x.org|42"}]}
    assert validate(resource, allow_conditional_references=True) == []
    bad_target = {**OBS, "subject": {"reference": "Medication?code=1"}}
    issues = validate(bad_target, allow_conditional_references=True)
    assert _codes(issues) == {("invalid", "Observation.subject.reference")}


# ------------------------------------------------------------------ the fast path agrees


MUTANTS: list[Any] = [None, "", " x", "x", "2020-02-30", "Patient/1", "#a", 0, -1, 1.5]
MUTANTS += [True, {}, [], [None], {"url": "u"}]
SUFFIXES = [" ", "  y", "\x0b", "-31", "?q=1"]


def _mutate(resource: Any, data: st.DataObject) -> Any:
    """A copy of ``resource`` with one to three random changes."""
    resource = copy.deepcopy(resource)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_paths(resource, ()))))
        if path:
            parent = resource
            for step in path[:-1]:
                parent = parent[step]
            _change(parent, path[-1], data)
    return resource


def _change(parent: Any, key: Any, data: st.DataObject) -> None:
    op = data.draw(st.integers(0, 4))
    if op == 0:
        parent[key] = copy.deepcopy(data.draw(st.sampled_from(MUTANTS)))
    elif op == 1 and isinstance(parent, dict):
        del parent[key]
    elif op == 2:
        parent[key] = [parent[key]]
    elif op == 3 and isinstance(parent, dict):
        new_key = data.draw(st.sampled_from(["_" + str(key), "valueString", "extension", "id"]))
        parent[new_key] = copy.deepcopy(data.draw(st.sampled_from(MUTANTS)))
    elif isinstance(parent[key], str):
        parent[key] += data.draw(st.sampled_from(SUFFIXES))


def _paths(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*path, index))


@functools.cache
def _corpus() -> list[dict[str, Any]]:
    if not EXAMPLES.is_dir():
        pytest.fail(MISSING, pytrace=False)
    names = ["Patient-example", "Observation-f001", "Bundle-bundle-example", "Claim-100150"]
    corpus = [orjson.loads((EXAMPLES / f"{n}.json").read_bytes()) for n in names]
    bundle = orjson.loads(next(SYNTHEA.glob("*.json")).read_bytes())
    return corpus + [e["resource"] for e in bundle["entry"][:40]]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fast_path_never_accepts_what_the_walk_rejects(data: st.DataObject) -> None:
    resource = _mutate(data.draw(st.sampled_from(_corpus())), data)
    conditional = data.draw(st.booleans())
    walk = validation._Walk(validation._load(), conditional)
    walk.resource(resource, None, 0, False)
    rt = resource.get("resourceType")
    certain = type(rt) is str and rt in resource_types()
    if certain and validation._fast_path().check(resource, rt, 0, conditional):
        assert walk.issues == []
    assert validate(resource, allow_conditional_references=conditional) == walk.issues


# ------------------------------------------------------------------ model and API


def test_resource_types() -> None:
    types = resource_types()
    assert len(types) == 146
    assert {"Patient", "Observation", "Bundle", "Parameters", "Binary"} <= types
    assert not {"Resource", "DomainResource", "MetadataResource", "Element"} & types


def test_model_loads_quickly() -> None:
    raw_bytes = validation.MODEL_PATH.read_bytes()
    assert len(raw_bytes) < 200_000
    start = time.perf_counter()
    validation._Model(orjson.loads(gzip.decompress(raw_bytes)))
    assert time.perf_counter() - start < 1.0


def test_model_is_generated_from_the_definitions(tmp_path: Path) -> None:
    if not DEFINITIONS.is_dir():
        pytest.fail(MISSING, pytrace=False)
    spec = importlib.util.spec_from_file_location(
        "gen_fhir_model", REPO / "tools" / "gen_fhir_model.py"
    )
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    model = gen.build_model(DEFINITIONS)
    gen.write_model(model, tmp_path / "model.json.gz")
    assert (tmp_path / "model.json.gz").read_bytes() == validation.MODEL_PATH.read_bytes()
    assert set(model["unexpandedValueSets"]) == {
        "http://hl7.org/fhir/ValueSet/currencies",
        "http://hl7.org/fhir/ValueSet/mimetypes",
        "http://hl7.org/fhir/ValueSet/ucum-units",
        "http://loinc.org/vs/LL379-9",
    }
    observation = {e["name"]: e for e in model["types"]["Observation"]["elements"]}
    assert observation["valueQuantity"] == {
        "name": "valueQuantity",
        "choice": "value",
        "type": "Quantity",
    }
    assert observation["status"]["valueSet"] == "http://hl7.org/fhir/ValueSet/observation-status"
    assert observation["referenceRange"]["type"] == "Observation.referenceRange"
    items = {e["name"]: e for e in model["types"]["Questionnaire.item"]["elements"]}
    assert items["item"]["type"] == "Questionnaire.item"


def test_validators_share_the_model_and_are_thread_safe() -> None:
    resources = [
        _load(EXAMPLES, n)
        for n in ("Patient-example.json", "Encounter-example.json", "Goal-example.json")
    ]
    results: list[list[Issue]] = []

    def run() -> None:
        results.extend(Validator().validate(r) for r in resources)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [[]] * 12
