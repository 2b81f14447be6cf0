"""``healthmesh ingest`` through the real command: counts, rejects, idempotence, crashes."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthmesh.node import open_node
from tests.conftest import run_cli


def ndjson(path: Path, items: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(i) + b"\n" for i in items))
    return path


def obs(i: int, patient: str = "p1") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "valueQuantity": {"value": 60 + i % 40, "unit": "/min"}}


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "node"
    assert run_cli("node", "init", str(folder)).returncode == 0
    return folder


def ingest_json(node_dir: Path, *paths: Path, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    result = run_cli("ingest", str(node_dir), *map(str, paths), "--json", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def test_synthea_loads_with_zero_rejects_and_reloads_idempotently(
    synthea_node: Path, shared: Path
) -> None:
    with open_node(synthea_node) as node:
        counts = node.store.counts()
        assert counts["Patient"] == 16 and counts["Observation"] > 4000
        obs_before = node.store.read("Observation", next(
            s.id for s in node.store.compartment(
                next(iter(_patient_ids(node))), ["Observation"])))
    code, stats = ingest_json(synthea_node, shared / "data/synthea")
    assert code == 0
    assert stats["rejected"] == 0 and stats["created"] == 0 and stats["updated"] == 0
    assert stats["unchanged"] == stats["read"] > 15000
    with open_node(synthea_node) as node:
        assert node.store.counts() == counts
        assert node.store.read(obs_before.type, obs_before.id).version == obs_before.version


def _patient_ids(node: Any) -> list[str]:
    from healthmesh.fhir.search_query import parse_search

    return [s.id for s in node.store.search(parse_search("Patient", [])).matches]


def test_synthea_references_point_to_stored_resources(synthea_node: Path) -> None:
    with open_node(synthea_node) as node:
        from healthmesh.fhir.search_query import parse_search

        query = parse_search("Encounter", [("_count", "50")])
        for enc in node.store.search(query).matches:
            body = enc.resource()
            for ref in (body["subject"]["reference"], body["serviceProvider"]["reference"]):
                rtype, rid = ref.split("/")
                assert node.store.read(rtype, rid) is not None, ref


def test_bad_lines_go_to_rejects_with_reasons(node_dir: Path, tmp_path: Path) -> None:
    good = [obs(i) for i in range(5)]
    lines = [orjson.dumps(r) for r in good]
    lines.insert(1, b'{"resourceType": "Observation", "id": "broken"')  # malformed JSON
    lines.insert(2, orjson.dumps({"resourceType": "NotAType", "id": "x"}))
    lines.insert(3, orjson.dumps({"resourceType": "Observation", "id": "o-bad",
                                  "status": "final"}))  # missing code
    lines.insert(4, b'{"resourceType": "Patient", "id": "p\xff\xfe"}')  # not UTF-8
    lines.insert(5, b"[1, 2, 3]")  # not a resource
    source = tmp_path / "mixed.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    code, stats = ingest_json(node_dir, source)
    assert code == 1
    assert stats["created"] == 5 and stats["rejected"] == 5 and stats["read"] == 10
    rejects = [json.loads(x) for x in Path(stats["rejects_file"]).read_text().splitlines()]
    by_line = {r["line"]: r["reason"] for r in rejects}
    assert "not valid JSON" in by_line[2]
    assert "NotAType" in by_line[3]
    assert "Observation.code" in json.dumps([r for r in rejects if r["line"] == 4])
    assert "UTF-8" in by_line[5]
    assert "not a FHIR resource" in by_line[6]
    assert all(r["source"] == str(source) for r in rejects)


def test_huge_line_is_rejected_without_reading_it_whole(node_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "huge.ndjson"
    with source.open("wb") as handle:
        handle.write(orjson.dumps(obs(1)) + b"\n")
        handle.write(b'{"resourceType":"Observation","note":"' + b"x" * (80 * 1024 * 1024))
        handle.write(b'"}\n' + orjson.dumps(obs(2)) + b"\n")
    code, stats = ingest_json(node_dir, source)
    assert code == 1 and stats["created"] == 2 and stats["rejected"] == 1
    reject = json.loads(Path(stats["rejects_file"]).read_text().splitlines()[0])
    assert reject["line"] == 2 and "longer than the limit" in reject["reason"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", b'{"resourceType": "Bundle", "entry": [', "not valid JSON"),
        ("notes.txt", b"hello", "unknown file type"),
        ("missing.ndjson", None, "no such file"),
        ("bad.ndjson.gz", b"not gzip at all", "cannot read"),
    ],
)
def test_unreadable_files_give_one_line_errors(
    node_dir: Path, tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = run_cli("ingest", str(node_dir), str(path))
    assert result.returncode == 4
    assert message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_not_a_node_folder(tmp_path: Path) -> None:
    result = run_cli("ingest", str(tmp_path / "nowhere"), str(tmp_path))
    assert result.returncode == 3 and "not a healthmesh node folder" in result.stderr


def test_reference_loop_loads_and_everything_terminates(node_dir: Path, tmp_path: Path) -> None:
    patient = {"resourceType": "Patient", "id": "p1",
               "link": [{"other": {"reference": "Patient/p2"}, "type": "seealso"}]}
    other = {"resourceType": "Patient", "id": "p2",
             "link": [{"other": {"reference": "Patient/p1"}, "type": "seealso"}]}
    a = {"resourceType": "Observation", "id": "a", "status": "final", "code": {"text": "a"},
         "subject": {"reference": "Patient/p1"}, "hasMember": [{"reference": "Observation/b"}]}
    b = {**a, "id": "b", "hasMember": [{"reference": "Observation/a"}]}
    code, stats = ingest_json(node_dir, ndjson(tmp_path / "loop.ndjson", [patient, other, a, b]))
    assert code == 0 and stats["created"] == 4
    with open_node(node_dir) as node:
        ids = sorted(f"{s.type}/{s.id}" for s in node.fhir.everything("p1"))
    assert ids == ["Observation/a", "Observation/b", "Patient/p1", "Patient/p2"]


def test_gzip_ndjson_and_single_resource_json(node_dir: Path, tmp_path: Path) -> None:
    gz = tmp_path / "obs.ndjson.gz"
    gz.write_bytes(gzip.compress(b"".join(orjson.dumps(obs(i)) + b"\n" for i in range(3))))
    single = tmp_path / "patient.json"
    single.write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p1"}))
    code, stats = ingest_json(node_dir, gz, single)
    assert code == 0 and stats["created"] == 4 and stats["files"] == 2


def test_changed_content_bumps_version_once(node_dir: Path, tmp_path: Path) -> None:
    ingest_json(node_dir, ndjson(tmp_path / "a.ndjson", [obs(1), obs(2)]))
    changed = obs(2)
    changed["status"] = "amended"
    code, stats = ingest_json(node_dir, ndjson(tmp_path / "b.ndjson", [obs(1), changed]))
    assert (stats["unchanged"], stats["updated"]) == (1, 1)
    with open_node(node_dir) as node:
        assert node.store.read("Observation", "o1").version == 1
        assert node.store.read("Observation", "o2").version == 2


def test_killed_ingest_leaves_a_consistent_store_and_rerun_completes(
    node_dir: Path, tmp_path: Path
) -> None:
    n = 60_000
    source = ndjson(tmp_path / "big.ndjson", [obs(i, f"p{i % 500}") for i in range(n)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthmesh", "ingest", str(node_dir), str(source), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    store_file = node_dir / "store.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        with open_node(node_dir) as node:
            if node.store.counts().get("Observation", 0) > 5000:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "ingest finished before it could be killed; raise n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store_file.exists()
    with open_node(node_dir) as node:
        partial = node.store.counts().get("Observation", 0)
        assert 0 < partial < n
        assert partial % node.settings.ingest_batch_size == 0  # whole batches only
        _assert_index_consistent(node, partial)
    code, stats = ingest_json(node_dir, source)
    assert code == 0 and stats["created"] == n - partial and stats["unchanged"] == partial
    with open_node(node_dir) as node:
        assert node.store.counts()["Observation"] == n
        _assert_index_consistent(node, n)


def _assert_index_consistent(node: Any, expected: int) -> None:
    from healthmesh.fhir.search_query import parse_search

    query = parse_search("Observation", [("code", "http://loinc.org|8867-4")])
    assert node.store.count(query) == expected


def test_worker_processes_and_inline_load_the_same(make_node: Any, tmp_path: Path) -> None:
    from healthmesh.ingest.loader import ingest

    items: list[Any] = [obs(i, f"p{i % 7}") for i in range(3000)]
    items[10] = {"resourceType": "Observation", "id": "bad", "status": "final"}
    items[20] = {"resourceType": "Patient", "id": "p1", "gender": "female",
                 "managingOrganization": {"reference": "Organization?identifier=urn:org|1"}}
    items.insert(0, {"resourceType": "Organization", "id": "org1",
                     "identifier": [{"system": "urn:org", "value": "1"}]})
    source = ndjson(tmp_path / "mixed.ndjson", items)
    results = []
    for workers in (0, 2):
        node = make_node(f"n{workers}")
        stats = ingest(node, [source], rejects_path=tmp_path / f"rej{workers}.ndjson",
                       workers=workers)
        contents = {(s.type, s.id): s.resource() for s in _all(node)}
        results.append((stats.created, stats.rejected, contents))
    assert results[0][:2] == results[1][:2] == (3000, 1)
    strip = _strip_server_meta
    assert {k: strip(v) for k, v in results[0][2].items()} == \
        {k: strip(v) for k, v in results[1][2].items()}
    assert results[1][2][("Patient", "p1")]["managingOrganization"]["reference"] == \
        "Organization/org1"


def _all(node: Any) -> list[Any]:
    from healthmesh.fhir.search_query import parse_search

    out = []
    for rtype in node.store.counts():
        out.extend(node.store.stream(parse_search(rtype, [])))
    return out


def _strip_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def test_ingest_is_audited(node_dir: Path, tmp_path: Path) -> None:
    ingest_json(node_dir, ndjson(tmp_path / "a.ndjson", [obs(1), obs(2)]))
    with open_node(node_dir) as node:
        records = [e.record for e in node.audit.entries(action="ingest", limit=5)]
    assert records and records[0].detail is not None
    assert records[0].detail["created"] == 2 and records[0].actor == "system"
