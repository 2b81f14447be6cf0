"""Analytic tables in DuckDB, checked against the synthetic source files they came from.

Expected values are computed here from the NDJSON the node ingested (never from the
tables code), so a wrong view or a wrong conversion shows up as a mismatch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

import healthmesh.views.tables as tables_module
from healthmesh.node import Node, init_node, open_node
from healthmesh.synth import generate
from healthmesh.views.tables import AnalyticsBusy, AnalyticsError, AnalyticTables

SITES = ("hospital", "clinic", "insurer", "pharmacy")
Source = dict[tuple[str, str], dict[str, Any]]

# The published schema: cohort SQL is written against these names, order and types.
SCHEMA = {
    "patient": "resource_id VARCHAR, patient_id VARCHAR, gender VARCHAR, birth_date DATE, "
    "deceased BOOLEAN, deceased_date DATE, postal_code VARCHAR, city VARCHAR, state VARCHAR, "
    "country VARCHAR",
    "condition": "resource_id VARCHAR, patient_id VARCHAR, system VARCHAR, code VARCHAR, "
    "display VARCHAR, onset DATE, abatement DATE, recorded DATE, clinical_status VARCHAR, "
    "verification_status VARCHAR, category VARCHAR",
    "observation": "resource_id VARCHAR, patient_id VARCHAR, system VARCHAR, code VARCHAR, "
    "display VARCHAR, effective TIMESTAMP, value_number DOUBLE, unit VARCHAR, "
    "value_system VARCHAR, value_code VARCHAR, status VARCHAR, category VARCHAR, "
    "is_component BOOLEAN",
    "medication": "resource_id VARCHAR, patient_id VARCHAR, source VARCHAR, system VARCHAR, "
    "code VARCHAR, display VARCHAR, start DATE, status VARCHAR",
    "procedure": "resource_id VARCHAR, patient_id VARCHAR, system VARCHAR, code VARCHAR, "
    "display VARCHAR, performed DATE, status VARCHAR",
    "encounter": "resource_id VARCHAR, patient_id VARCHAR, class_code VARCHAR, "
    "type_system VARCHAR, type_code VARCHAR, start TIMESTAMP, end TIMESTAMP, status VARCHAR, "
    "service_provider VARCHAR",
    "immunization": "resource_id VARCHAR, patient_id VARCHAR, system VARCHAR, code VARCHAR, "
    "display VARCHAR, occurrence DATE, status VARCHAR",
    "claim": "resource_id VARCHAR, patient_id VARCHAR, source VARCHAR, status VARCHAR, "
    "created DATE, total DOUBLE, currency VARCHAR, insurer VARCHAR, provider VARCHAR",
    "questionnaire_answer": "resource_id VARCHAR, patient_id VARCHAR, questionnaire VARCHAR, "
    "authored DATE, link_id VARCHAR, value_number DOUBLE, value_code VARCHAR, "
    "value_string VARCHAR",
    "consent": "resource_id VARCHAR, patient_id VARCHAR, status VARCHAR, scope_code VARCHAR, "
    "category_code VARCHAR, date_time TIMESTAMP, policy_rule VARCHAR",
}


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "out"
    generate(out, patients=60, sites=SITES, seed=11)
    return out


@pytest.fixture(scope="module")
def source(source_dir: Path) -> Source:
    """Every resource of the source files by (type, id), the last copy winning as in ingest."""
    out: Source = {}
    for site in SITES:
        for path in sorted((source_dir / site).glob("*.ndjson")):
            for line in path.read_bytes().splitlines():
                resource = orjson.loads(line)
                out[(resource["resourceType"], resource["id"])] = resource
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, source: Source) -> Path:
    """A node folder holding the synthetic sites, its tables refreshed once."""
    folder = init_node(tmp_path_factory.mktemp("analytics") / "node")
    with open_node(folder) as node:
        node.store.put_many(list(source.values()))  # straight into the store: ingest is slower
        stats = AnalyticTables(folder, node.store).refresh()
    assert stats.full and not stats.warnings
    return folder


@pytest.fixture(scope="module")
def tables(built: Path) -> Iterator[AnalyticTables]:
    with open_node(built) as node:
        yield AnalyticTables(built, node.store)


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Iterator[tuple[Node, AnalyticTables]]:
    """A private copy of the built node, for tests that change it."""
    folder = tmp_path / "node"
    shutil.copytree(built, folder)
    with open_node(folder) as node:
        yield node, AnalyticTables(folder, node.store)


def of_type(source: Source, rtype: str) -> list[dict[str, Any]]:
    return [r for (t, _i), r in source.items() if t == rtype]


def scalar(tables: AnalyticTables, sql: str, *params: Any) -> Any:
    return tables.query(sql, list(params) or None)[1][0][0]


def snapshot(tables: AnalyticTables, *exclude: str) -> dict[str, tuple[int, int]]:
    """Rows and a sum of row hashes per table, leaving out the rows of ``exclude``."""
    conn = tables.connect()
    try:
        return {name: conn.execute(
            f'SELECT count(*), sum(hash(t)::HUGEINT) FROM "{name}" AS t '
            "WHERE resource_id NOT IN (SELECT unnest(?::VARCHAR[]))", [list(exclude)],
        ).fetchone() for name in SCHEMA}
    finally:
        conn.close()


# -- content against the source --------------------------------------------------------


def test_schema_is_the_published_one(tables: AnalyticTables) -> None:
    _cols, rows = tables.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY table_name, ordinal_position"
    )
    found: dict[str, list[str]] = {}
    for table, column, sql_type in rows:
        found.setdefault(table, []).append(f"{column} {sql_type}")
    assert {t: ", ".join(c) for t, c in found.items()} == SCHEMA
    assert tables.tables() == {
        t: [c.split()[0] for c in cols.split(", ")] for t, cols in SCHEMA.items()
    }


def test_one_patient_row_per_patient(tables: AnalyticTables, source: Source) -> None:
    patients = of_type(source, "Patient")
    _c, rows = tables.query("SELECT resource_id, patient_id, birth_date, deceased, "
                            "deceased_date, postal_code FROM patient")
    assert len(rows) == len(patients) > 40
    by_id = {r[1]: r for r in rows}
    for p in patients:
        row = by_id[p["id"]]
        assert row[0] == f"Patient/{p['id']}"
        assert row[2] == date.fromisoformat(p["birthDate"])
        dead = "deceasedDateTime" in p or p.get("deceasedBoolean") is True
        assert row[3] is dead
        when = p.get("deceasedDateTime")
        assert row[4] == (date.fromisoformat(when[:10]) if when else None)
        assert row[5] == (p.get("address") or [{}])[0].get("postalCode")
    assert any(r[3] for r in rows), "the sample should hold someone deceased"


def test_one_condition_row_per_coding(tables: AnalyticTables, source: Source) -> None:
    expected = Counter(
        (f"Condition/{c['id']}", c["subject"]["reference"].split("/")[1], cd["code"],
         date.fromisoformat(c["onsetDateTime"][:10]) if "onsetDateTime" in c else None)
        for c in of_type(source, "Condition") for cd in c["code"]["coding"]
    )
    _c, rows = tables.query("SELECT resource_id, patient_id, code, onset FROM condition")
    assert Counter(rows) == expected
    assert len(rows) > len(of_type(source, "Condition"))  # several codings per condition


def test_systolic_pressure_of_every_panel(tables: AnalyticTables, source: Source) -> None:
    expected = Counter()
    for obs in of_type(source, "Observation"):
        codes = {c["code"] for c in obs["code"]["coding"]}
        if "85354-9" in codes:
            for comp in obs["component"]:
                if any(c["code"] == "8480-6" for c in comp["code"]["coding"]):
                    value = comp["valueQuantity"]["value"]
                    expected[(f"Observation/{obs['id']}", value, True)] += 1
        if "8480-6" in codes:
            value = obs["valueQuantity"]["value"]
            expected[(f"Observation/{obs['id']}", value, False)] += 1
    _c, rows = tables.query(
        "SELECT resource_id, value_number, is_component FROM observation WHERE code='8480-6'"
    )
    assert len(expected) > 20
    assert Counter(rows) == expected


def test_observation_rows_and_timestamps(tables: AnalyticTables, source: Source) -> None:
    observations = of_type(source, "Observation")
    codings = sum(len(o["code"]["coding"]) for o in observations)
    codings += sum(len(c["code"]["coding"]) for o in observations for c in o.get("component", []))
    assert scalar(tables, "SELECT count(*) FROM observation") == codings
    obs = next(o for o in observations if "effectiveDateTime" in o)
    effective = scalar(tables, "SELECT effective FROM observation WHERE resource_id=? LIMIT 1",
                       f"Observation/{obs['id']}")
    # the local clock time as written, offset dropped
    assert effective == datetime.fromisoformat(obs["effectiveDateTime"]).replace(tzinfo=None)


def test_medication_claim_and_answers(tables: AnalyticTables, source: Source) -> None:
    meds = Counter(
        r["resourceType"]
        for t in ("MedicationRequest", "MedicationDispense") for r in of_type(source, t)
        for _c in r["medicationCodeableConcept"]["coding"]
    )
    _c, rows = tables.query("SELECT source, count(*) FROM medication GROUP BY source")
    assert dict(rows) == dict(meds) and len(meds) == 2
    eob = of_type(source, "ExplanationOfBenefit")
    assert dict(tables.query("SELECT source, count(*) FROM claim GROUP BY source")[1]) == {
        "Claim": len(of_type(source, "Claim")), "ExplanationOfBenefit": len(eob)}
    submitted = next(t["amount"]["value"] for t in eob[0]["total"]
                     if t["category"]["coding"][0]["code"] == "submitted")
    assert scalar(tables, "SELECT total FROM claim WHERE resource_id=?",
                  f"ExplanationOfBenefit/{eob[0]['id']}") == pytest.approx(submitted)

    def answers(items: list[dict[str, Any]]) -> int:
        return sum(len(i.get("answer", [])) + answers(i.get("item", []))
                   + sum(answers(a.get("item", [])) for a in i.get("answer", [])) for i in items)

    expected = sum(answers(r.get("item", [])) for r in of_type(source, "QuestionnaireResponse"))
    assert scalar(tables, "SELECT count(*) FROM questionnaire_answer") == expected > 0


# -- incremental refresh ---------------------------------------------------------------


def test_update_changes_exactly_that_resources_rows(
    copy: tuple[Node, AnalyticTables], source: Source
) -> None:
    node, tables = copy
    condition = dict(of_type(source, "Condition")[0])
    key = f"Condition/{condition['id']}"
    before = snapshot(tables, key)
    condition["code"] = {"coding": [{"system": "urn:test", "code": "A"},
                                    {"system": "urn:test", "code": "B"},
                                    {"system": "urn:test", "code": "C"}]}
    condition["onsetDateTime"] = "2019-05"
    node.store.put(condition)
    stats = tables.refresh()
    assert stats.resources_seen == 1 and not stats.full
    assert snapshot(tables, key) == before
    _c, rows = tables.query("SELECT code, onset FROM condition WHERE resource_id=? ORDER BY 1",
                            [key])
    assert rows == [("A", date(2019, 5, 1)), ("B", date(2019, 5, 1)), ("C", date(2019, 5, 1))]


def test_delete_and_create(copy: tuple[Node, AnalyticTables], source: Source) -> None:
    node, tables = copy
    panel = next(o for o in of_type(source, "Observation") if o.get("component"))
    key = f"Observation/{panel['id']}"
    before = snapshot(tables, key, "Patient/new-one")
    assert scalar(tables, "SELECT count(*) FROM observation WHERE resource_id=?", key) == 3
    node.store.delete("Observation", panel["id"])
    new = {"resourceType": "Patient", "id": "new-one", "gender": "other", "birthDate": "1990",
           "deceasedBoolean": True}
    node.store.put(new)
    stats = tables.refresh()
    assert stats.resources_seen == 2
    assert snapshot(tables, key, "Patient/new-one") == before
    assert scalar(tables, "SELECT count(*) FROM observation WHERE resource_id=?", key) == 0
    assert tables.query("SELECT * FROM patient WHERE patient_id='new-one'")[1] == [
        ("Patient/new-one", "new-one", "other", date(1990, 1, 1), True, None, None, None,
         None, None)
    ]


def test_refresh_with_nothing_new_is_fast_and_changes_nothing(
    copy: tuple[Node, AnalyticTables],
) -> None:
    _node, tables = copy
    before = snapshot(tables)
    mtime = tables.path.stat().st_mtime_ns
    started = time.perf_counter()
    stats = tables.refresh()
    assert time.perf_counter() - started < 1.0
    assert stats.resources_seen == 0 and not any(stats.rows_written.values())
    assert snapshot(tables) == before
    assert stats.tables == {name: rows for name, (rows, _hash) in before.items()}
    assert tables.path.stat().st_mtime_ns == mtime


def test_incremental_result_equals_a_full_rebuild(
    copy: tuple[Node, AnalyticTables], source: Source
) -> None:
    node, tables = copy
    for obs in of_type(source, "Observation")[:30]:
        node.store.put({**obs, "status": "amended"})
    for enc in of_type(source, "Encounter")[:10]:
        node.store.delete("Encounter", enc["id"])
    assert tables.refresh().resources_seen == 40
    incremental = snapshot(tables)
    assert tables.refresh(full=True).full
    assert snapshot(tables) == incremental


def test_a_failed_refresh_keeps_the_previous_state(
    copy: tuple[Node, AnalyticTables], source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, tables = copy
    before = snapshot(tables)
    patient = of_type(source, "Patient")[0]
    node.store.put({**patient, "gender": "unknown"})
    node.store.delete("Condition", of_type(source, "Condition")[0]["id"])

    def crash(*args: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tables_module, "_insert", crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        tables.refresh()
    assert snapshot(tables) == before
    monkeypatch.undo()
    assert tables.refresh().resources_seen == 2  # the watermark did not move either
    assert scalar(tables, "SELECT gender FROM patient WHERE patient_id=?",
                  patient["id"]) == "unknown"


# -- the node's own views --------------------------------------------------------------


BP_VIEW = {
    "resourceType": "ViewDefinition", "name": "bp_reading", "status": "active",
    "resource": "Observation",
    "where": [{"path": "code.coding.where(code = '85354-9').exists()"}],
    "select": [{"column": [
        {"name": "patient_id", "path": "subject.getReferenceKey(Patient)"},
        {"name": "taken", "path": "effective.ofType(dateTime)", "type": "dateTime"},
        {"name": "systolic", "type": "decimal", "path": "component.where(code.coding.code "
         "contains '8480-6').value.ofType(Quantity).value"},
    ]}],
}


def test_user_views_become_tables_and_bad_ones_are_reported(
    copy: tuple[Node, AnalyticTables], source: Source
) -> None:
    _node, tables = copy
    views = tables.folder / "views"
    views.mkdir()
    (views / "bp.json").write_bytes(orjson.dumps(BP_VIEW))
    (views / "broken.json").write_text("{not json")
    (views / "clash.json").write_bytes(orjson.dumps({**BP_VIEW, "name": "patient"}))
    (views / "bad_name.json").write_bytes(orjson.dumps({**BP_VIEW, "name": "drop table x"}))
    (views / "bad_path.json").write_bytes(orjson.dumps(
        {**BP_VIEW, "name": "other", "select": [{"column": [{"name": "x", "path": "a..b"}]}]}))
    (views / "cases.json").write_bytes(orjson.dumps({**BP_VIEW, "name": "cases", "select": [
        {"column": [{"name": "Code", "path": "id"}, {"name": "code", "path": "id"}]}]}))
    # a valid view that cannot flatten some resources (several codes for a scalar column)
    (views / "codes.json").write_bytes(orjson.dumps({
        "resourceType": "ViewDefinition", "name": "condition_codes", "resource": "Condition",
        "select": [{"column": [{"name": "code", "path": "code.coding.code"}]}]}))
    before = snapshot(tables)
    stats = tables.refresh()
    conditions = of_type(source, "Condition")
    assert not stats.full
    assert stats.resources_seen == len(of_type(source, "Observation")) + len(conditions)
    assert len(stats.warnings) == 6, stats.warnings
    for name in ("broken.json", "clash.json", "bad_name.json", "bad_path.json", "cases.json"):
        assert any(name in w and "skipped" in w for w in stats.warnings), name
    single = sum(1 for c in conditions if len(c["code"]["coding"]) == 1)
    assert stats.tables["condition_codes"] == single < len(conditions)
    assert any(w.startswith(f"condition_codes: {len(conditions) - single} Condition resource(s) "
                            "could not be flattened") for w in stats.warnings), stats.warnings
    assert snapshot(tables) == before  # the shipped tables are untouched
    panels = [o for o in of_type(source, "Observation")
              if any(c["code"] == "85354-9" for c in o["code"]["coding"])]
    columns, rows = tables.query("SELECT * FROM bp_reading")
    assert columns == ["resource_id", "patient_id", "taken", "systolic"]
    assert len(rows) == len(panels) == stats.tables["bp_reading"]
    assert tables.query("SELECT typeof(taken), typeof(systolic) FROM bp_reading LIMIT 1")[1] == [
        ("TIMESTAMP", "DOUBLE")]
    assert "bp_reading" in tables.tables()

    changed = {**BP_VIEW, "select": [*BP_VIEW["select"], {"column": [
        {"name": "status", "path": "status"}]}]}
    (views / "bp.json").write_bytes(orjson.dumps(changed))  # a view changed: its table rebuilt
    stats = tables.refresh()
    assert stats.resources_seen == len(of_type(source, "Observation"))
    assert stats.rows_written == {**dict.fromkeys(stats.tables, 0), "bp_reading": len(panels)}
    assert tables.tables()["bp_reading"][-1] == "status"
    assert scalar(tables, "SELECT count(*) FROM bp_reading WHERE status='final'") == len(panels)

    (views / "bp.json").unlink()  # a view removed: its table goes
    tables.refresh()
    assert "bp_reading" not in tables.tables()
    with pytest.raises(AnalyticsError, match="bp_reading"):
        tables.query("SELECT * FROM bp_reading")


# -- empty node, locking ---------------------------------------------------------------


def test_an_empty_node_has_empty_typed_tables(make_node: Callable[..., Node]) -> None:
    node = make_node()
    tables = AnalyticTables(node.folder, node.store)
    assert tables.query("SELECT count(*) FROM observation WHERE effective > ?",
                        [datetime(2020, 1, 1)]) == (["count_star()"], [(0,)])
    stats = tables.refresh()
    assert stats.tables == dict.fromkeys(SCHEMA, 0)
    _c, rows = tables.query("SELECT table_name, column_name, data_type FROM "
                            "information_schema.columns WHERE table_name='patient'")
    assert ("patient", "birth_date", "DATE") in rows


def test_a_locked_file_gives_a_clear_error(copy: tuple[Node, AnalyticTables]) -> None:
    _node, tables = copy
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "sys.stdin.read()", str(tables.path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(AnalyticsBusy, match=f"PID {holder.pid}.*retry"):
            tables.refresh()
        with pytest.raises(AnalyticsBusy, match=str(holder.pid)):
            tables.query("SELECT 1")
    finally:
        holder.communicate("", timeout=30)
    assert tables.query("SELECT 1")[1] == [(1,)]
