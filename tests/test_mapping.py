"""Flat-file mappings: the YAML schema, CSV/Parquet reading, row typing and filters, the
shipped mappings end to end, rejects, reruns and ``healthmesh ingest --mapping``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthmesh.mapping import MappingError, load, parse_mapping, run_mapping, shipped_mappings
from healthmesh.mapping.readers import read_csv
from healthmesh.node import Node
from healthmesh.terminology import LOINC
from tests.conftest import run_cli

# -- helpers -------------------------------------------------------------------------------

MINI = """\
id: mini
title: Mini
timezone: "+01:00"
columns:
  pid: {type: string, required: true}
  when: {type: datetime}
  day: {type: date, format: "%d/%m/%Y"}
  glucose: {type: decimal}
  unit: {type: string}
  kind: {type: code, values: {fasting: F, random: R}}
filter:
  - {column: kind, not_equals: R}
resources:
  - name: obs
    type: Observation
    key: [pid, day]
    template:
      status: final
      code: {$concept: {system: loinc, code: 2339-0}}
      subject: {reference: "Patient/{pid}"}
      effectiveDateTime: "{when}"
      issued: "{when}"
      note: [{text: "kind {kind} on {day}"}]
      valueQuantity: {$quantity: {value: "{glucose}", unit: "{unit}", default_unit: mg/dL,
                                  to: mmol/L, analyte: glucose}}
"""


def _mapping_file(tmp_path: Path, text: str = MINI) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text, "utf-8")
    return path


def _run(node: Node, mapping: Any, tmp_path: Path, name: str, data: str | bytes,
         ) -> tuple[Any, list[dict[str, Any]]]:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    rejects = tmp_path / f"{name}.rejects.ndjson"
    stats = run_mapping(node, mapping, [path], rejects_path=rejects)
    lines = rejects.read_bytes().splitlines() if rejects.exists() else []
    return stats, [orjson.loads(line) for line in lines]


def _all(node: Node, rtype: str) -> list[dict[str, Any]]:
    rows = node.store._connect().execute(  # test-only peek at what was written
        "SELECT content FROM resources WHERE type = ?", (rtype,)).fetchall()
    return [orjson.loads(r[0]) for r in rows]


# -- mapping files -------------------------------------------------------------------------


def test_shipped_mappings_load() -> None:
    assert set(shipped_mappings()) == {"claims", "wearables", "sdoh"}
    for name in shipped_mappings():
        assert load(name).id == name


@pytest.mark.parametrize(("change", "message"), [
    (("title: Mini\n", ""), "line 1: missing required key 'title'"),
    (("  glucose: {type: decimal}", "  glucose: {type: float}"), "line 8: columns.glucose.type:"
     " unknown type 'float'"),
    (('code: 2339-0}}', 'code: 2339-0, colour: red}}'), "line 19: resources[0].template.code"
     ".$concept.colour: unknown argument 'colour'"),
    (('"Patient/{pid}"', '"Patient/{patient}"'), "line 20: resources[0].template.subject."
     "reference: {patient} is not a declared column"),
    (("type: Observation", "type: Observation2"), "line 15: resources[0].type: "
     "'Observation2' is not a FHIR R4 resource type"),
    (("not_equals: R}", "not_equals: R, in: [F]}"), "line 12: filter[0]: a condition has "
     "exactly one of"),
    (("analyte: glucose", "analyte: sugar"), "line 25: resources[0].template.valueQuantity."
     "$quantity.analyte: unknown analyte 'sugar'"),
    (("timezone: \"+01:00\"", "timezone: CET"), "line 3: timezone: timezone is 'Z' or an "
     "offset"),
    (("    key: [pid, day]", "    key: [pid, nope]"), "line 16: resources[0].key[1]: 'nope' is "
     "not a declared column"),
    (("  kind: {type: code, values: {fasting: F, random: R}}",
      "  kind: {type: code, values: {yes: F}}"), "quote them"),
    (("    template:\n", "    template:\n      id: x\n"), "leave resourceType and id out"),
])
def test_schema_errors_name_the_line_and_key(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in MINI
    with pytest.raises(MappingError) as caught:
        parse_mapping(MINI.replace(old, new, 1), "m.yaml")
    assert str(caught.value).startswith("m.yaml: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(("text", "message"), [
    ("", "the mapping file is empty"),
    ("- a\n- b\n", "a mapping file is a YAML mapping"),
    ("id: [unclosed\n", "not valid YAML"),
    ("a: &x [1, 2]\nb: *x\n", "aliases"),
    ("id: x\n!!python/object:os.system {}\n", "not valid YAML"),
])
def test_hostile_or_broken_yaml_is_refused(text: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        parse_mapping(text, "m.yaml")


def test_mapping_file_limits(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(MappingError, match="larger than"):
        load(big)
    with pytest.raises(MappingError, match="shipped: claims, sdoh, wearables"):
        load(tmp_path / "nope.yaml")


# -- CSV reading ---------------------------------------------------------------------------


def test_csv_quoting_bom_blank_lines_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'\xef\xbb\xbfa,b\n"1, with comma","two\nlines"\n\n3\n4,5,6\n"x",""\n'
                     b"\xff\xfe,7\n")
    rows = list(read_csv(path))
    assert [r.number for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].values == {"a": "1, with comma", "b": "two\nlines"} and rows[0].line == 2
    assert rows[1].error == "1 fields, but the header has 2 columns" and rows[1].line == 5
    assert rows[2].error and "3 fields" in rows[2].error
    assert rows[3].values == {"a": "x", "b": None}
    assert rows[4].error and "not text in the file's encoding" in rows[4].error


def test_csv_fields_over_the_limit_are_rejected_and_the_limit_restored(tmp_path: Path) -> None:
    import csv

    before = csv.field_size_limit()
    path = tmp_path / "x.csv"
    path.write_text("a,b\n" + "y" * 5000 + ",1\nok,2\n")
    rows = list(read_csv(path, max_field_bytes=1000))
    assert rows[0].error and "field larger than field limit" in rows[0].error
    assert rows[-1].values == {"a": "ok", "b": "2"}
    assert csv.field_size_limit() == before


@pytest.mark.parametrize(("data", "message"), [
    (b"", "the file is empty"),
    (b"a,a\n1,2\n", "column 'a' appears twice"),
    (b",,\n1,2,3\n", "has no column names"),
])
def test_unusable_csv_files_are_input_errors(tmp_path: Path, data: bytes, message: str) -> None:
    from healthmesh.errors import InputError

    path = tmp_path / "x.csv"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message):
        list(read_csv(path))


# -- rows -> resources ---------------------------------------------------------------------


def test_rows_are_typed_converted_filtered_or_rejected(make_node: Any, tmp_path: Path) -> None:
    node = make_node()
    mapping = load(_mapping_file(tmp_path))
    data = ("pid,when,day,glucose,unit,kind\n"
            "p1,2024-03-01 08:30,01/03/2024,90,mg/dl,fasting\n"    # 1 ok: converted
            "p2,2024-03-01T08:30:00Z,02/03/2024,5.5,mmol/L,\n"     # 2 ok: already mmol/L
            "p3,2024-03-01,03/03/2024,100,,random\n"               # 3 skipped by filter
            "p4,2024-03-01,2024-03-04,100,,fasting\n"              # 4 bad date format
            "p5,2024-03-01,05/03/2024,lots,,fasting\n"             # 5 not a decimal
            "p6,2024-03-01,06/03/2024,100,,sometimes\n"            # 6 unknown code value
            ",2024-03-01,07/03/2024,100,,fasting\n"                # 7 required pid empty
            "p8,2024-03-01,08/03/2024,100,kg,fasting\n"            # 8 unit not convertible
            "p 9,2024-03-01,09/03/2024,100,,fasting\n")            # 9 invalid reference id
    stats, rejects = _run(node, mapping, tmp_path, "d.csv", data)
    assert (stats.rows, stats.skipped, stats.rejected, stats.created) == (9, 1, 6, 2)
    reasons = {r["row"]: r["reason"] for r in rejects}
    assert set(reasons) == {4, 5, 6, 7, 8, 9}
    assert "column 'day': '2024-03-04'" in reasons[4]
    assert "column 'glucose': 'lots' is not a valid decimal" in reasons[5]
    assert "'sometimes' is not one of the expected values (fasting, random)" in reasons[6]
    assert "column 'pid' is required but empty" in reasons[7]
    assert reasons[8].startswith("obs: ") and "different dimensions" in reasons[8]
    assert "not valid FHIR R4" in reasons[9]
    assert all(r["source"].endswith("d.csv") and r["record"] for r in rejects)
    assert rejects[0]["line"] == 5 and rejects[0]["record"]["pid"] == "p4"
    by_patient = {o["subject"]["reference"]: o for o in _all(node, "Observation")}
    p1 = by_patient["Patient/p1"]
    assert p1["effectiveDateTime"] == "2024-03-01T08:30:00+01:00"  # mapping timezone applied
    assert p1["valueQuantity"]["value"] == pytest.approx(90 * 10 / 180.156, rel=1e-5)
    assert p1["valueQuantity"]["code"] == "mmol/L"
    assert p1["note"] == [{"text": "kind F on 2024-03-01"}]
    assert p1["code"]["coding"][0] == {"system": LOINC, "code": "2339-0",
                                       "display": "Glucose [Mass/volume] in Blood"}
    assert by_patient["Patient/p2"]["valueQuantity"]["value"] == 5.5


def test_a_datetime_without_offset_needs_a_timezone(make_node: Any, tmp_path: Path) -> None:
    mapping = load(_mapping_file(tmp_path, MINI.replace('timezone: "+01:00"\n', "")))
    stats, rejects = _run(make_node(), mapping, tmp_path, "d.csv",
                          "pid,when,day,glucose,unit,kind\np1,2024-03-01 08:30,01/03/2024,,,\n")
    assert stats.rejected == 1 and "has no time zone offset" in rejects[0]["reason"]


def test_rerun_is_idempotent_and_ids_are_stable(make_node: Any, tmp_path: Path) -> None:
    node = make_node()
    mapping = load(_mapping_file(tmp_path))
    data = "pid,when,day,glucose,unit,kind\np1,,01/03/2024,90,,\np2,,01/03/2024,91,,\n"
    first, _ = _run(node, mapping, tmp_path, "d.csv", data)
    again, _ = _run(node, mapping, tmp_path, "d.csv", data)
    assert (first.created, again.created, again.unchanged) == (2, 0, 2)
    changed, _ = _run(node, mapping, tmp_path, "e.csv", data.replace(",90,", ",95,"))
    assert (changed.updated, changed.unchanged) == (1, 1)
    assert len(_all(node, "Observation")) == 2


def test_parquet_files_are_read_like_csv(make_node: Any, tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "d.parquet"
    with duckdb.connect() as con:
        con.execute(f"""COPY (SELECT * FROM (VALUES
            ('p1', TIMESTAMPTZ '2024-03-01 08:30:00+00', '01/03/2024', 90.0, 'mg/dL', 'fasting'),
            ('p2', NULL, '02/03/2024', NULL, NULL, 'random'))
            t(pid, "when", day, glucose, unit, kind)) TO '{path}' (FORMAT parquet)""")
    stats = run_mapping(make_node(), load(_mapping_file(tmp_path)), [path],
                        rejects_path=tmp_path / "r.ndjson")
    assert (stats.rows, stats.created, stats.skipped, stats.rejected) == (2, 1, 1, 0)


def test_corrupt_parquet_is_an_input_error(make_node: Any, tmp_path: Path) -> None:
    from healthmesh.errors import InputError

    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        run_mapping(make_node(), load(_mapping_file(tmp_path)), [path],
                    rejects_path=tmp_path / "r.ndjson")


def test_huge_cells_are_cut_in_the_rejects_file(make_node: Any, tmp_path: Path) -> None:
    mapping = load(_mapping_file(tmp_path))
    stats, rejects = _run(make_node(), mapping, tmp_path, "d.csv",
                          "pid,when,day,glucose,unit,kind\np1,,01/03/2024," + "9" * 9000
                          + ",,\n")
    assert stats.rejected == 1
    cell = rejects[0]["record"]["glucose"]
    assert len(cell) < 4200 and cell.endswith("[4904 more characters]")


def test_local_lab_codes_are_normalised_at_ingest(make_node: Any, tmp_path: Path) -> None:
    node = make_node()
    (node.folder / "terminology").mkdir()
    (node.folder / "terminology" / "local-loinc.csv").write_text(
        "system,code,loinc,unit\nurn:lab,GLU,2339-0,mmol/L\n")
    text = MINI.replace("code: {$concept: {system: loinc, code: 2339-0}}",
                        "code: {coding: [{system: 'urn:lab', code: GLU}]}")
    text = text.replace(", to: mmol/L, analyte: glucose", "")
    stats, _ = _run(node, load(_mapping_file(tmp_path, text)), tmp_path, "d.csv",
                    "pid,when,day,glucose,unit,kind\np1,,01/03/2024,180.156,mg/dL,\n")
    assert stats.created == 1
    obs = _all(node, "Observation")[0]
    assert [c["code"] for c in obs["code"]["coding"]] == ["GLU", "2339-0"]
    assert obs["valueQuantity"]["value"] == pytest.approx(10.0)  # 180.156 mg/dL glucose


# -- shipped mappings ----------------------------------------------------------------------

CLAIMS_HEADER = ("claim_id,line_number,patient_id,member_id,payer_id,provider_npi,claim_type,"
                 "billed_date,service_date,diagnosis_1,diagnosis_2,diagnosis_3,procedure_code,"
                 "quantity,charge_amount,allowed_amount,paid_amount,currency,outcome\n")


def test_claims_lines_become_one_claim_and_eob_per_claim(make_node: Any, tmp_path: Path) -> None:
    node = make_node()
    data = CLAIMS_HEADER + textwrap.dedent("""\
        C1,1,p1,M1,PAY,1234567893,professional,2024-03-02,2024-03-01,I10,E11.9,,99213,1,120.00,90,72.00,USD,paid
        C1,2,p1,M1,PAY,1234567893,professional,2024-03-02,2024-03-01,I10,E11.9,,80053,1,45.50,30,24.25,USD,paid
        C2,1,p2,M2,PAY,1234567893,institutional,2024-03-05,2024-03-04,Z99.99,,,99214,2,150,,,EUR,pending
        C3,1,p3,M3,PAY,1234567893,dental,2024-03-05,2024-03-04,I10,,,99214,1,150,,,USD,
        C4,1,p4,M4,PAY,1234567893,professional,2024-03-05,2024-03-04,I10,,,99214,1,10,,,USD,
        C4,2,p4,M4,PAY,1234567893,professional,2024-03-05,2024-03-04,I10,,,99215,1,ten,,,USD,
        C1,3,p1,M1,PAY,1234567893,professional,2024-03-02,2024-03-01,I10,,,99999,1,10,,,USD,paid
        """)
    stats, rejects = _run(node, load("claims"), tmp_path, "claims.csv", data)
    assert stats.by_type == {"Claim": 2, "ExplanationOfBenefit": 2}
    assert stats.rejected == 4
    reasons = {r["row"]: r["reason"] for r in rejects}
    assert "'dental' is not one of the expected values" in reasons[4]
    assert "'ten' is not a valid decimal" in reasons[6]
    assert reasons[5].startswith("rejected with its group (claim_id=C4): row 6:")
    assert "sort the file by claim_id" in reasons[7]
    claims = {c["identifier"][0]["value"]: c for c in _all(node, "Claim")}
    c1 = claims["C1"]
    assert [i["sequence"] for i in c1["item"]] == [1, 2]
    assert c1["total"] == {"value": 165.5, "currency": "USD"}  # 120.00 + 45.50
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in c1["diagnosis"]] == [
        "I10", "E11.9"]
    eobs = {e["identifier"][0]["value"]: e for e in _all(node, "ExplanationOfBenefit")}
    e1 = eobs["C1"]
    assert e1["claim"] == {"reference": f"Claim/{c1['id']}"}
    assert e1["outcome"] == "complete" and eobs["C2"]["outcome"] == "queued"
    totals = {t["category"]["coding"][0]["code"]: t["amount"]["value"] for t in e1["total"]}
    assert totals == {"submitted": 165.5, "benefit": 96.25}  # 72.00 + 24.25
    assert [a["category"]["coding"][0]["code"] for a in e1["item"][0]["adjudication"]] == [
        "submitted", "eligible", "benefit"]
    assert stats.warnings == 2  # Z99.99 is not a listed ICD-10-CM code: Claim and EOB
    assert "unknown-code" in json.dumps(claims["C2"]["meta"])
    assert "meta" not in c1 or "tag" not in c1["meta"]


WEARABLE_HEADER = "patient_id,device_id,device_name,metric,value,diastolic,unit,start,end\n"


def test_wearable_exports_become_observations_with_the_device(make_node: Any,
                                                               tmp_path: Path) -> None:
    node = make_node()
    data = WEARABLE_HEADER + textwrap.dedent("""\
        p1,w1,Wrist band,steps,8500,,steps,2024-05-01T00:00:00Z,2024-05-02T00:00:00Z
        p1,w1,Wrist band,hr,72,,bpm,2024-05-01T09:00:00Z,
        p1,w1,Wrist band,sleep,450,,min,2024-05-01T23:00:00Z,2024-05-02T06:30:00Z
        p1,cuff1,,bp,16,10.5,kPa,2024-05-01T08:00:00Z,
        p1,cuff1,,bp,130,85,,2024-05-02T08:00:00Z,
        p1,w1,Wrist band,calories,2100,,kcal,2024-05-01T00:00:00Z,
        p1,w1,Wrist band,mood,3,,,2024-05-01T00:00:00Z,
        p1,w1,Wrist band,hr,72,,kg,2024-05-03T09:00:00Z,
        """)
    stats, rejects = _run(node, load("wearables"), tmp_path, "w.csv", data)
    assert (stats.rows, stats.skipped, stats.rejected) == (8, 1, 2)
    reasons = {r["row"]: r["reason"] for r in rejects}
    assert "'mood' is not one of the expected values" in reasons[7]
    assert reasons[8].startswith("heart-rate: ")
    obs = _all(node, "Observation")
    by_code = {}
    for o in obs:
        by_code.setdefault(o["code"]["coding"][0]["code"], []).append(o)
    assert by_code["55423-8"][0]["valueQuantity"] == {
        "value": 8500, "unit": "{steps}", "system": "http://unitsofmeasure.org",
        "code": "{steps}"}
    assert by_code["8867-4"][0]["valueQuantity"]["code"] == "/min"
    assert by_code["93832-4"][0]["valueQuantity"]["value"] == 7.5  # 450 min
    bps = sorted(by_code["85354-9"], key=lambda o: o["effectiveDateTime"])
    sys_kpa = bps[0]["component"][0]["valueQuantity"]
    assert sys_kpa["code"] == "mm[Hg]"
    assert sys_kpa["value"] == pytest.approx(16 * 1000 / 133.322387415, rel=1e-5)
    assert bps[1]["component"][1]["valueQuantity"]["value"] == 85
    devices = {d["identifier"][0]["value"]: d for d in _all(node, "Device")}
    assert set(devices) == {"w1", "cuff1"}
    assert by_code["8867-4"][0]["device"] == {"reference": f"Device/{devices['w1']['id']}"}
    assert devices["w1"]["deviceName"] == [{"name": "Wrist band", "type": "user-friendly-name"}]
    assert stats.warnings == 0


def test_sdoh_sheets_become_one_observation_per_answer(make_node: Any, tmp_path: Path) -> None:
    node = make_node()
    data = ("patient_id,screening_date,food_worry,food_did_not_last,housing,"
            "transportation_problem,education\n"
            "p1,2024-02-01,Often true,never,I have housing,yes,\n"
            "p2,2024-02-01,LA6729-3,,,No,high school\n"
            "p3,2024-02-01,maybe,,,,\n")
    stats, rejects = _run(node, load("sdoh"), tmp_path, "s.csv", data)
    assert (stats.created, stats.rejected, stats.warnings) == (7, 1, 0)
    assert "column 'food_worry': 'maybe'" in rejects[0]["reason"]
    answers = {(o["subject"]["reference"], o["code"]["coding"][0]["code"]):
               o["valueCodeableConcept"]["coding"][0] for o in _all(node, "Observation")}
    assert answers[("Patient/p1", "88122-7")]["code"] == "LA28397-0"
    assert answers[("Patient/p1", "88123-5")]["code"] == "LA28398-8"
    assert answers[("Patient/p1", "93030-5")] == {"system": LOINC, "code": "LA33-6",
                                                  "display": "Yes"}
    assert answers[("Patient/p2", "93030-5")]["code"] == "LA32-8"
    assert answers[("Patient/p2", "82589-3")]["code"] == "LA30190-5"


# -- the command ---------------------------------------------------------------------------


def test_cli_ingest_with_a_shipped_mapping(tmp_path: Path) -> None:
    folder = tmp_path / "node"
    assert run_cli("node", "init", str(folder)).returncode == 0
    data = tmp_path / "claims.csv"
    data.write_text(CLAIMS_HEADER + "C1,1,p1,M1,PAY,1234567893,professional,2024-03-02,"
                    "2024-03-01,I10,,,99213,1,120,,,USD,paid\n")
    result = run_cli("ingest", str(folder), str(data), "--mapping", "claims", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["rows"], report["created"], report["rejected"]) == (1, 2, 0)
    data.write_text(CLAIMS_HEADER + "C2,1,p1,M1,PAY,1234567893,alien,2024-03-02,"
                    "2024-03-01,I10,,,99213,1,120,,,USD,paid\n")
    rejects = tmp_path / "rejects.ndjson"
    result = run_cli("ingest", str(folder), str(data), "--mapping", "claims",
                     "--rejects", str(rejects), "-q")
    assert result.returncode == 1
    assert "rejected 1" in result.stdout
    assert orjson.loads(rejects.read_bytes().splitlines()[0])["row"] == 1


def test_cli_ingest_mapping_errors_exit_4(tmp_path: Path) -> None:
    folder = tmp_path / "node"
    assert run_cli("node", "init", str(folder)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntitle: y\ncolumns: {a: {type: blob}}\nresources: []\n")
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    result = run_cli("ingest", str(folder), str(data), "--mapping", str(bad))
    assert result.returncode == 4
    assert "line 3: columns.a.type: unknown type 'blob'" in result.stderr
    result = run_cli("ingest", str(folder), str(tmp_path / "missing.csv"), "--mapping", "sdoh")
    assert result.returncode == 4 and "no such file" in result.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = run_cli("ingest", str(folder), str(empty), "--mapping", "sdoh")
    assert result.returncode == 4 and "the file is empty" in result.stderr


def test_the_how_to_example_mapping_is_valid() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs/how-to/map-flat-files.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    mapping = parse_mapping(example, "how-to example")
    assert mapping.id == "lab-results" and mapping.resources[0].template.conditional


def test_conditional_references_resolve_or_reject(make_node: Any, tmp_path: Path) -> None:
    node = make_node()
    node.fhir.update("Patient", "pat-1", {
        "resourceType": "Patient", "id": "pat-1",
        "identifier": [{"system": "urn:mrn", "value": "A1"}]})
    text = MINI.replace('"Patient/{pid}"', '"Patient?identifier=urn:mrn|{pid}"')
    stats, rejects = _run(node, load(_mapping_file(tmp_path, text)), tmp_path, "d.csv",
                          "pid,when,day,glucose,unit,kind\nA1,,01/03/2024,90,,\n"
                          "B2,,01/03/2024,90,,\n")
    assert (stats.created, stats.rejected) == (1, 1)
    assert _all(node, "Observation")[0]["subject"] == {"reference": "Patient/pat-1"}
    assert rejects[0]["row"] == 2 and "matches no resource" in rejects[0]["reason"]
