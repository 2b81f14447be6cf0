"""``healthmesh ingest`` of .hl7 files and folders: batches, rejects with positions, reruns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthmesh.hl7v2 import split_messages
from healthmesh.node import open_node
from tests.conftest import run_cli
from tests.test_hl7v2_messages import adt, message, msh, oru, pid, vxu


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "node"
    assert run_cli("node", "init", str(folder)).returncode == 0
    return folder


def ingest(node_dir: Path, *paths: Path) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    result = run_cli("ingest", str(node_dir), *map(str, paths), "--json", "-q")
    stats = json.loads(result.stdout)
    rejects = []
    if stats["rejects_file"]:
        rejects = [json.loads(line) for line in Path(stats["rejects_file"]).read_text()
                   .splitlines()]
    return result.returncode, stats, rejects


def test_folder_of_hl7_and_ndjson(node_dir: Path, tmp_path: Path, shared: Path) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "admissions.hl7").write_bytes(adt("A01", "ADT0001") + b"\r\n"
                                          + adt("A03", "ADT0002", p45="20240320110000+0100"))
    (feed / "results.hl7").write_bytes(oru("LAB0001").replace(b"\r", b"\n"))
    (feed / "extra.ndjson").write_bytes(orjson.dumps(
        {"resourceType": "Patient", "id": "from-ndjson", "gender": "male"}) + b"\n")
    code, stats, rejects = ingest(node_dir, feed, shared / "data/hl7v2/microsoft-fhir-converter/"
                                  "VXU.hl7")
    assert code == 0 and rejects == []
    # 2 + 1 + 1 messages and 1 NDJSON line
    assert (stats["files"], stats["read"], stats["rejected"]) == (4, 5, 0)
    with open_node(node_dir) as node:
        counts = node.store.counts()
    assert counts["Observation"] == 5 and counts["DiagnosticReport"] == 1
    assert counts["Encounter"] == 1 and counts["Immunization"] == 3
    assert counts["Provenance"] == 4  # one per message


def test_rerun_writes_nothing_new(node_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "lab.hl7"
    path.write_bytes(oru("LAB0001"))
    first = ingest(node_dir, path)[1]
    second = ingest(node_dir, path)[1]
    assert first["created"] == 12  # org, patient, 2 practitioners, visit, report, 5 obs, prov
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 0)


def test_batch_file_with_a_bad_message_rejects_only_that_one(node_dir: Path,
                                                             tmp_path: Path) -> None:
    bad = message(msh("ADT^A01^ADT_A01", "BAD0001"), pid(p7="20241301"))
    batch = b"\r".join([
        b"FHS|^~\\&|EPIC|CITYHOSP|||20240315", b"BHS|^~\\&|EPIC|CITYHOSP|||20240315",
        adt("A28", "B1"), bad, vxu("B3"), b"BTS|3", b"FTS|1",
    ])
    path = tmp_path / "batch.hl7"
    path.write_bytes(batch)
    bad_line = batch[: batch.index(bad)].count(b"\r") + 1  # FHS, BHS, 4 segments of B1
    code, stats, rejects = ingest(node_dir, path)
    assert code == 1 and (stats["read"], stats["rejected"]) == (3, 1)
    reject, = rejects
    assert reject["source"] == str(path) and reject["line"] == bad_line == 7
    assert reject["reason"].startswith("message BAD0001: AE at PID-7:")
    assert "'20241301'" in reject["reason"]
    assert reject["raw"] == bad.decode()


def test_text_outside_messages_and_oversized_messages(node_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "odd.hl7"
    huge = adt("A28", "HUGE") + b"\rNTE|1||" + b"y" * (2 * 1024 * 1024)
    path.write_bytes(b"this is a cover note\r\n" + adt("A28", "OK1") + b"\r" + huge + b"\r"
                     + adt("A31", "OK2"))
    code, stats, rejects = ingest(node_dir, path)
    assert code == 1 and stats["rejected"] == 2
    assert rejects[0]["line"] == 1 and "outside any message" in rejects[0]["reason"]
    assert "larger than the limit of 1048576" in rejects[1]["reason"]
    with open_node(node_dir) as node:
        assert node.store.counts()["Provenance"] == 2  # OK1 and OK2


def test_binary_garbage_is_rejected_not_fatal(node_dir: Path, tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "garbage.hl7"
    path.write_bytes(gzip.compress(b"MSH|^~\\&|" * 1000) + b"\x00\xff\xfe")
    code, stats, rejects = ingest(node_dir, path)
    assert code == 1 and stats["rejected"] >= 1
    assert all("outside any message" in r["reason"] for r in rejects)


def test_split_messages_handles_cr_lf_and_crlf_across_read_chunks(tmp_path: Path) -> None:
    import io

    messages = [adt("A01", f"M{i}") for i in range(3)]
    data = b"\r\n".join(m.replace(b"\r", b"\r\n") for m in messages)
    found = [m for m in split_messages(io.BytesIO(data), 1 << 20)]
    assert [m.data for m in found] == messages  # type: ignore[union-attr]
    from healthmesh.hl7v2.message import _lines

    small = list(_lines(io.BytesIO(data), 1 << 20, chunk_size=7))  # CRLF split by chunks
    assert [line for _, line in small] == data.split(b"\r\n")
