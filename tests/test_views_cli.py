"""``healthmesh views run``: over NDJSON files, and over a node through its consent gate."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import orjson

from healthmesh.node import init_node, open_node
from tests.conftest import run_cli
from tests.test_gate import consent, obs

VIEW = {"resourceType": "ViewDefinition", "resource": "Observation", "status": "active",
        "select": [{"column": [
            {"name": "id", "path": "getResourceKey()"},
            {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
            {"name": "code", "path": "code.coding.first().code"}]}]}


def write(path: Path, data: Any) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def test_view_over_ndjson_files_as_csv(tmp_path: Path) -> None:
    view = write(tmp_path / "view.json", VIEW)
    data = tmp_path / "obs.ndjson"
    data.write_bytes(b"".join(orjson.dumps(obs(f"o{i}", f"p{i}")) + b"\n" for i in range(3)))
    result = run_cli("views", "run", str(view), str(data))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["id"] for r in rows] == ["o0", "o1", "o2"]
    assert rows[0]["patient"] == "p0" and rows[0]["code"] == "8867-4"


def test_view_over_a_node_applies_consent_and_is_audited(tmp_path: Path) -> None:
    folder = init_node(tmp_path / "node")
    with open_node(folder) as node:
        node.store.put_many([{"resourceType": "Patient", "id": "p1"},
                             {"resourceType": "Patient", "id": "p2"},
                             obs("o1", "p1"), obs("o2", "p2"),
                             consent("c1", "p1", "HRESCH")])
    view = write(tmp_path / "view.json", VIEW)
    result = run_cli("views", "run", str(view), str(folder), "--format", "json",
                     "--requester", "Organization/uni-research", "--purpose", "HRESCH")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["patient"] for r in rows] == ["p1"]  # p2 did not opt in to research
    with open_node(folder) as node:
        audited = node.audit.entries(action="view", limit=5)
    assert audited and audited[0].record.purpose == "HRESCH"


def test_view_errors(tmp_path: Path) -> None:
    folder = init_node(tmp_path / "node")
    good = write(tmp_path / "view.json", VIEW)
    no_purpose = run_cli("views", "run", str(good), str(folder))
    assert no_purpose.returncode == 2 and "purpose" in no_purpose.stderr.lower()
    bad = write(tmp_path / "bad.json", {"resource": "Observation",
                                        "select": [{"column": [{"name": "x",
                                                                "path": "frobnicate()"}]}]})
    invalid = run_cli("views", "run", str(bad), str(folder), "--purpose", "TREAT")
    assert invalid.returncode == 4 and "frobnicate" in invalid.stderr
    for result in (no_purpose, invalid):
        assert "Traceback" not in result.stderr


def test_view_as_parquet_reads_back_with_duckdb(tmp_path: Path) -> None:
    import duckdb

    view = write(tmp_path / "view.json", VIEW)
    data = tmp_path / "obs.ndjson"
    data.write_bytes(b"".join(orjson.dumps(obs(f"o{i}", f"p{i}")) + b"\n" for i in range(5)))
    out = tmp_path / "rows.parquet"
    result = run_cli("views", "run", str(view), str(data), "--format", "parquet",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = duckdb.sql(f"SELECT id, patient, code FROM '{out}' ORDER BY id").fetchall()
    assert rows == [(f"o{i}", f"p{i}", "8867-4") for i in range(5)]
    no_out = run_cli("views", "run", str(view), str(data), "--format", "parquet")
    assert no_out.returncode == 2 and "--out" in no_out.stderr
