"""De-identification of FHIR resources: profiles, dates, pseudonyms, keys, scrubber, CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from datetime import date
from pathlib import Path

import orjson
import pytest

from healthmesh.audit import AuditLog
from healthmesh.fhir.validation import validate
from healthmesh.privacy.deid import (
    DeidConfigError,
    Deidentifier,
    DeidKey,
    DeidKeyError,
    generate_key_file,
    load_key_file,
    scrub_text,
)
from healthmesh.privacy.deid.safelists import parse_zip3
from tests.conftest import run_cli

TODAY = date(2026, 11, 23)
SECRET = bytes(range(32))
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
DAR = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                      "valueCode": "masked"}]}


def _patient(**extra: object) -> dict:
    return {
        "resourceType": "Patient", "id": "p1", "gender": "female",
        "name": [{"family": "Smith", "given": ["Ann"]}], "birthDate": "1980-03-04",
        "telecom": [{"system": "phone", "value": "617-555-0101"}],
        "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN0001"}],
        "address": [{"line": ["1 Main St"], "city": "Boston", "state": "MA",
                     "postalCode": "02139-4307", "country": "US"}],
        "photo": [{"contentType": "image/jpeg", "data": "AAAA"}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">"
                                               "Ann Smith</div>"},
        **extra,
    }


def _observation(**extra: object) -> dict:
    return {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6",
                             "display": "Systolic"}], "text": "BP of Ann Smith"},
        "subject": {"reference": "Patient/p1", "display": "Ann Smith"},
        "effectiveDateTime": "2020-03-14T10:30:00+01:00", "issued": "2020-03-15T08:00:00Z",
        "valueQuantity": {"value": 128, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                          "code": "mm[Hg]"},
        "note": [{"text": "Called Ann at 617-555-0101 on 3/14/2020"}],
        **extra,
    }


def _expected_id(secret: bytes, text: str) -> str:
    subkey = hmac.new(secret, b"healthmesh-deid-v1:ids", hashlib.sha256).digest()
    return hmac.new(subkey, text.encode(), hashlib.sha256).hexdigest()[:32]


# -- safe harbor ----------------------------------------------------------------------


def test_safe_harbor_patient_keeps_only_year_state_zip3_and_gender() -> None:
    out = Deidentifier("safe-harbor", DeidKey(SECRET), today=TODAY).apply(_patient())
    assert out is not None
    labels = {c["code"] for c in out.pop("meta")["security"]}
    assert labels == {"ABSTRED", "PSEUDED", "REDACTED"}
    assert out == {"resourceType": "Patient", "id": _expected_id(SECRET, "Patient/p1"),
                   "gender": "female", "birthDate": "1980",
                   "address": [{"country": "US", "state": "MA", "postalCode": "021"}]}


def test_restricted_zip3_becomes_000_and_foreign_postcodes_go() -> None:
    deid = Deidentifier("safe-harbor", today=TODAY)
    addresses = [{"postalCode": "03601"}, {"postalCode": "89301", "state": "NV"},
                 {"postalCode": "SW1A 1AA", "country": "GB"}, {"postalCode": "12345"}]
    out = deid.apply(_patient(address=addresses))
    assert out["address"] == [{"postalCode": "000"}, {"state": "NV", "postalCode": "000"},
                              {"country": "GB"}, {"postalCode": "123"}]


def test_zip3_configuration_is_versioned_with_its_source() -> None:
    from healthmesh.privacy.deid import zip3_rule

    rule = zip3_rule()
    assert rule.census == 2000 and "Health and Human Services" in rule.source
    assert len(rule.restricted) == 17 and "036" in rule.restricted
    with pytest.raises(DeidConfigError):
        parse_zip3({"census": 2010, "version": "x", "source": "s", "restricted": ["36"]})


def test_a_newer_zip3_list_can_replace_the_packaged_one() -> None:
    rule = parse_zip3({"census": 2020, "version": "2020-test", "source": "test",
                       "restricted": ["021"]})
    out = Deidentifier("safe-harbor", zip3=rule).apply(_patient())
    assert out["address"][0]["postalCode"] == "000"
    assert Deidentifier("safe-harbor").apply(_patient())["address"][0]["postalCode"] == "021"


def test_safe_harbor_observation_truncates_dates_and_drops_text() -> None:
    deid = Deidentifier("safe-harbor", DeidKey(SECRET), today=TODAY)
    out = deid.apply(_observation())
    assert out["effectiveDateTime"] == "2020"
    assert "issued" not in out and "note" not in out
    assert out["code"] == {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}
    assert out["subject"] == {"reference": f"Patient/{_expected_id(SECRET, 'Patient/p1')}"}
    assert out["valueQuantity"] == {"value": 128, "unit": "mm[Hg]",
                                    "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    assert validate(out) == []


def test_ages_over_89_collapse_to_90_or_older() -> None:
    deid = Deidentifier("safe-harbor", today=TODAY)
    old = deid.apply(_patient(birthDate="1936-11-22"))  # 90 on 2026-11-22
    assert "birthDate" not in old and old["_birthDate"] == DAR
    young = deid.apply(_patient(birthDate="1936-11-24"))  # still 89
    assert young["birthDate"] == "1936"
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                 "onsetAge": {"value": 93, "unit": "years", "system":
                              "http://unitsofmeasure.org", "code": "a"}}
    out = deid.apply(condition)
    assert out["onsetAge"] == {"value": 90, "comparator": ">=", "unit": "a",
                               "system": "http://unitsofmeasure.org", "code": "a"}
    assert validate(out) == []


def test_geographic_coordinates_and_age_observations_are_generalised() -> None:
    deid = Deidentifier("safe-harbor", today=TODAY)
    location = {"resourceType": "Location", "position": {"latitude": 42.36, "longitude": -71.1},
                "address": {"state": "MA", "postalCode": "02139", "extension": [
                    {"url": "http://hl7.org/fhir/StructureDefinition/geolocation", "extension": [
                        {"url": "latitude", "valueDecimal": 42.36},
                        {"url": "longitude", "valueDecimal": -71.1}]}]}}
    out = deid.apply(location)
    assert "position" not in out and "42.36" not in json.dumps(out)
    assert out["address"] == {"state": "MA", "postalCode": "021"}
    age = _observation(valueQuantity={"value": 97, "unit": "years",
                                      "system": "http://unitsofmeasure.org", "code": "a"})
    assert deid.apply(age)["valueQuantity"] == {
        "value": 90, "comparator": ">=", "unit": "a", "system": "http://unitsofmeasure.org",
        "code": "a"}
    assert deid.apply(_observation())["valueQuantity"]["value"] == 128


def test_required_elements_dropped_get_a_data_absent_reason() -> None:
    device = {"resourceType": "Device", "deviceName": [{"name": "Pump of Ann Smith",
                                                         "type": "user-friendly-name"}],
              "serialNumber": "SN-99812", "udiCarrier": [{"carrierHRF": "(01)123"}]}
    out = Deidentifier("safe-harbor").apply(device)
    assert out["deviceName"] == [{"type": "user-friendly-name", "_name": DAR}]
    assert "serialNumber" not in out and "udiCarrier" not in out
    assert validate(out) == []


def test_unknown_elements_and_extensions_are_treated_by_value_type() -> None:
    res = _observation(secretField="Ann Smith", extension=[
        {"url": "http://local.example/ext/when", "valueDateTime": "2020-01-02T03:04:05Z"},
        {"url": "http://local.example/ext/who", "valueString": "Ann Smith"}])
    out = Deidentifier("safe-harbor", DeidKey(SECRET)).apply(res)
    assert "secretField" not in out
    [ext] = out["extension"]
    assert ext["valueDateTime"] == "2020" and ext["url"].startswith("urn:healthmesh:extension:")
    assert "local.example" not in json.dumps(out)


def test_scrubbed_text_only_when_allowed() -> None:
    out = Deidentifier("safe-harbor", allow_scrubbed_text=True).apply(_observation())
    assert out["note"] == [{"text": "Called Ann at [PHONE] on [DATE]"}]
    # The documented limit: a name without a title is not a pattern, so it stays; this
    # is why Safe Harbor drops free text unless a steward allows scrubbed text.
    assert out["code"]["text"] == "BP of Ann Smith"
    assert "note" not in Deidentifier("safe-harbor").apply(_observation())


def test_input_is_not_modified_and_non_objects_are_errors() -> None:
    from healthmesh.privacy.deid import DeidError

    source = _patient()
    before = orjson.dumps(source)
    Deidentifier("safe-harbor").apply(source)
    assert orjson.dumps(source) == before
    with pytest.raises(DeidError):
        Deidentifier("safe-harbor").apply(["not", "a", "resource"])  # type: ignore[arg-type]
    assert Deidentifier("safe-harbor").apply({"resourceType": "NoSuchThing"}) is None


def test_hostile_nesting_is_refused_not_crashing() -> None:
    from healthmesh.privacy.deid import DeidError

    ext: dict = {"url": "http://x.example/e", "valueString": "Ann Smith"}
    for _ in range(5000):
        ext = {"url": "http://x.example/e", "extension": [ext]}
    with pytest.raises(DeidError, match="nested deeper"):
        Deidentifier("safe-harbor").apply({"resourceType": "Patient", "extension": [ext]})
    item: dict = {"linkId": "q"}
    for _ in range(5000):
        item = {"linkId": "q", "item": [item]}
    with pytest.raises(DeidError, match="nested deeper"):
        Deidentifier("safe-harbor").apply(
            {"resourceType": "Questionnaire", "status": "active", "item": [item]})


def test_files_reject_oversized_lines_bad_bundles_and_keep_going(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    from healthmesh.privacy.deid import files

    monkeypatch.setattr(files, "MAX_LINE_BYTES", 2000)
    big = orjson.dumps(_patient(id="big", name=[{"family": "X" * 5000}]))
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.ndjson.gz").write_bytes(gzip.compress(b"\n".join(
        [orjson.dumps(_patient()), big, orjson.dumps(_observation())]) + b"\n"))
    (src / "b.json").write_text('{"resourceType": "Bundle", "entry": [{"resource": 7}]')
    (src / "c.json").write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "collection",
                                               "entry": [{"resource": _patient(id="p2")},
                                                         {"request": {"url": "x"}}]}))
    report = files.deidentify_files([src], tmp_path / "out",
                                    Deidentifier("safe-harbor", DeidKey(SECRET)))
    assert report.written == {"Patient": 2, "Observation": 1}
    rejects = [orjson.loads(x) for x in report.rejects_file.read_bytes().splitlines()]
    reasons = {(Path(r["source"]).name, r["line"]): r["reason"] for r in rejects}
    assert set(reasons) == {("a.ndjson.gz", 2), ("b.json", None), ("c.json#entry[1]", None)}
    assert "longer than the limit" in reasons[("a.ndjson.gz", 2)]
    assert "not valid JSON" in reasons[("b.json", None)]
    assert b"XXXX" not in report.rejects_file.read_bytes()


def test_cli_profiles_match_the_package() -> None:
    from healthmesh.cli_deid import PROFILE_NAMES
    from healthmesh.privacy.deid import PROFILES

    assert tuple(PROFILES) == PROFILE_NAMES


def test_cli_truncated_gzip_is_an_input_error(tmp_path: Path) -> None:
    import gzip

    data = gzip.compress(b"\n".join(orjson.dumps(_patient(id=f"p{i}")) for i in range(200)))
    (tmp_path / "cut.ndjson.gz").write_bytes(data[: len(data) // 2])
    result = run_cli("deid", str(tmp_path / "cut.ndjson.gz"), "--out", str(tmp_path / "out"))
    assert result.returncode == 4 and "cannot read" in result.stderr


# -- date shift, pseudonyms, age at event ------------------------------------------------


def test_date_shift_is_per_patient_and_keeps_intervals() -> None:
    deid = Deidentifier("date-shift", DeidKey(SECRET), today=TODAY)
    patient = deid.apply(_patient())
    obs = deid.apply(_observation())
    born = date.fromisoformat(patient["birthDate"])
    seen = date.fromisoformat(obs["effectiveDateTime"][:10])
    assert (seen - born).days == (date(2020, 3, 14) - date(1980, 3, 4)).days
    shift = (born - date(1980, 3, 4)).days
    assert shift != 0 and abs(shift) <= 365
    assert obs["effectiveDateTime"][10:] == "T10:30:00+01:00"
    assert obs["issued"] == (date(2020, 3, 15) + (born - date(1980, 3, 4))).isoformat() \
        + "T08:00:00Z"
    other = deid.apply(_patient(id="p2"))
    assert other["birthDate"] != patient["birthDate"] or other["id"] != patient["id"]
    again = Deidentifier("date-shift", DeidKey(SECRET), today=TODAY).apply(_patient())
    assert again["birthDate"] == patient["birthDate"]
    assert "MASKED" in {c["code"] for c in obs["meta"]["security"]}


def test_profiles_that_need_a_key_refuse_to_run_without_one() -> None:
    with pytest.raises(DeidConfigError):
        Deidentifier("date-shift")
    with pytest.raises(DeidConfigError):
        Deidentifier("k-anonymous", DeidKey(SECRET))


def test_pseudonyms_are_consistent_in_a_project_and_unlinkable_across() -> None:
    a = Deidentifier("pseudonymize", DeidKey(SECRET))
    b = Deidentifier("pseudonymize", DeidKey(bytes(32)))
    pa, oa = a.apply(_patient()), a.apply(_observation())
    assert oa["subject"]["reference"] == f"Patient/{pa['id']}"
    assert b.apply(_patient())["id"] != pa["id"]
    [ident] = pa["identifier"]
    subkey = hmac.new(SECRET, b"healthmesh-deid-v1:identifiers", hashlib.sha256).digest()
    expected = hmac.new(subkey, b"http://hospital.example/mrn|MRN0001",
                        hashlib.sha256).hexdigest()[:32]
    assert ident["value"] == expected and "hospital.example" not in ident["system"]
    assert validate(pa) == []


def test_age_at_event_replaces_birth_dates() -> None:
    deid = Deidentifier("safe-harbor", age_at_event=True, birth_dates={"p1": "1930-05-01"},
                        today=TODAY)
    assert "birthDate" not in deid.apply(_patient())
    obs = deid.apply(_observation())
    [ext] = [e for e in obs["extension"] if e["url"].endswith("age-at-event")]
    assert ext["valueAge"]["value"] == 89  # 2020-03-14 is before the 90th birthday
    later = deid.apply(_observation(effectiveDateTime="2020-06-01"))
    [ext] = [e for e in later["extension"] if e["url"].endswith("age-at-event")]
    assert ext["valueAge"]["value"] == 90 and ext["valueAge"]["comparator"] == ">="
    assert validate(later) == []


def test_contained_resources_and_local_references_stay_consistent() -> None:
    med = {"resourceType": "Medication", "id": "m1",
           "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                "code": "197361"}]}}
    request = {"resourceType": "MedicationRequest", "id": "r1", "status": "active",
               "intent": "order", "contained": [med],
               "medicationReference": {"reference": "#m1"},
               "subject": {"reference": "Patient/p1"},
               "requester": {"reference": "http://other.example/fhir/Practitioner/dr7"},
               "performer": {"reference": "Practitioner?identifier=123"}}
    out = Deidentifier("safe-harbor", DeidKey(SECRET)).apply(request)
    [contained] = out["contained"]
    assert out["medicationReference"] == {"reference": f"#{contained['id']}"}
    assert contained["id"] not in ("m1", _expected_id(SECRET, "Medication/m1"))
    assert out["requester"] == {"reference":
                                f"Practitioner/{_expected_id(SECRET, 'Practitioner/dr7')}"}
    assert "performer" not in out  # a conditional reference names an identifier
    assert "meta" not in contained or "security" not in contained["meta"]
    assert validate(out) == []


# -- keys -------------------------------------------------------------------------------


def test_key_files_are_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "project.key"
    key = generate_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path).secret == key.secret
    with pytest.raises(DeidKeyError, match="already exists"):
        generate_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(DeidKeyError, match="other users"):
        load_key_file(path)
    bad = tmp_path / "bad.key"
    bad.write_text("not hex\n")
    os.chmod(bad, 0o600)
    with pytest.raises(DeidKeyError, match="not a key file"):
        load_key_file(bad)
    short = tmp_path / "short.key"
    short.write_text("abcd\n")
    os.chmod(short, 0o600)
    with pytest.raises(DeidKeyError, match="2 bytes"):
        load_key_file(short)


# -- scrubber ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("given 123-45-6789.", "given [SSN]."),
    ("SSN: 123-45-6789", "[ID]"),
    ("mail ann.smith@mail.example.com now", "mail [EMAIL] now"),
    ("see https://portal.example.com/p?id=1 or 10.0.0.12", "see [URL] or [IP]"),
    ("call (617) 555-0101", "call [PHONE]"),
    ("seen on March 3, 2021 and 2021-03-04", "seen on [DATE] and [DATE]"),
    ("MRN: A12345 admitted", "[ID] admitted"),
    ("Dr. Gregory House saw a 93 year old", "[NAME] saw a 90+ year old"),
    ("BP 120/80 mmHg, HR 72", "BP 120/80 mmHg, HR 72"),
])
def test_scrubber_patterns(text: str, expected: str) -> None:
    assert scrub_text(text)[0] == expected


def test_scrubber_is_linear_on_hostile_input() -> None:
    import time

    hostile = ("1-" * 20000) + "@" + ("a." * 20000)
    start = time.perf_counter()
    scrub_text(hostile)
    assert time.perf_counter() - start < 5


# -- command line -----------------------------------------------------------------------


def _write_ndjson(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_cli_deid_ndjson_with_bad_lines(tmp_path: Path) -> None:
    src = _write_ndjson(tmp_path / "in.ndjson", [
        orjson.dumps(_patient()), b"{not json", orjson.dumps(_observation()),
        b'["an array"]', b'{"resourceType": "Bogus", "name": "Ann Smith"}'])
    result = run_cli("deid", str(src), "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["written"] == {"Patient": 1, "Observation": 1} and report["rejected"] == 3
    rejects = [json.loads(line) for line in Path(report["rejects_file"]).read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 4, 5]
    assert "Smith" not in Path(report["rejects_file"]).read_text()
    written = (tmp_path / "out" / "Patient.ndjson").read_text()
    assert "Smith" not in written and "02139" not in written


def test_cli_deid_bundle_resolves_uuid_references(tmp_path: Path) -> None:
    key = tmp_path / "p.key"
    assert run_cli("deid-keygen", str(key)).returncode == 0
    pid = "urn:uuid:11111111-2222-4333-8444-555555555555"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": pid, "resource": {k: v for k, v in _patient().items() if k != "id"}},
        {"fullUrl": "urn:uuid:11111111-2222-4333-8444-666666666666",
         "resource": _observation(id="o9", subject={"reference": pid})}]}
    (tmp_path / "b.json").write_bytes(orjson.dumps(bundle))
    out = tmp_path / "out"
    result = run_cli("deid", str(tmp_path / "b.json"), "--out", str(out), "--profile",
                     "pseudonymize", "--key-file", str(key))
    assert result.returncode == 0, result.stderr
    patient = orjson.loads((out / "Patient.ndjson").read_bytes())
    obs = orjson.loads((out / "Observation.ndjson").read_bytes())
    assert obs["subject"]["reference"] == f"Patient/{patient['id']}"


def test_cli_deid_usage_and_key_errors(tmp_path: Path) -> None:
    src = _write_ndjson(tmp_path / "in.ndjson", [orjson.dumps(_patient())])
    no_key = run_cli("deid", str(src), "--out", str(tmp_path / "o1"), "--profile", "date-shift")
    assert no_key.returncode == 2 and "key" in no_key.stderr
    bad_profile = run_cli("deid", str(src), "--out", str(tmp_path / "o2"), "--profile", "x")
    assert bad_profile.returncode == 2
    key = tmp_path / "open.key"
    key.write_text(SECRET.hex() + "\n")
    os.chmod(key, 0o644)
    open_key = run_cli("deid", str(src), "--out", str(tmp_path / "o3"), "--profile",
                       "date-shift", "--key-file", str(key))
    assert open_key.returncode == 3 and "chmod 600" in open_key.stderr
    missing = run_cli("deid", str(tmp_path / "nope.ndjson"), "--out", str(tmp_path / "o4"))
    assert missing.returncode == 4
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    full = run_cli("deid", str(src), "--out", str(tmp_path / "full"))
    assert full.returncode == 2 and "empty" in full.stderr


def test_cli_reidentify_needs_the_key_and_is_audited(tmp_path: Path) -> None:
    node = tmp_path / "node"
    assert run_cli("node", "init", str(node)).returncode == 0
    src = _write_ndjson(tmp_path / "in.ndjson", [orjson.dumps(_patient())])
    assert run_cli("ingest", str(node), str(src), "-q").returncode == 0
    key = tmp_path / "p.key"
    generate_key_file(key)
    pseudonym = _expected_id(load_key_file(key).secret, "Patient/p1")
    result = run_cli("deid-reidentify", pseudonym, "--key-file", str(key), "--node", str(node),
                     "--requester", "Organization/steward", "--reason", "safety signal",
                     "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["found"] == {pseudonym: ["p1"]}
    other = tmp_path / "other.key"
    generate_key_file(other)
    miss = run_cli("deid-reidentify", pseudonym, "--key-file", str(other), "--node", str(node))
    assert miss.returncode == 1
    with AuditLog(node, readonly=True) as log:
        entries = [e.record for e in log.entries() if e.record.action == "reidentify"]
    assert len(entries) == 2
    [found] = [e for e in entries if e.actor == "Organization/steward"]
    assert found.patients == ("p1",) and found.reason == "safety signal"
    assert found.detail["key"] == load_key_file(key).fingerprint
