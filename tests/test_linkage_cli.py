"""``healthmesh linkage``: secret, encode (NDJSON and node), match, evaluate, steward commands."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from healthmesh.cli import app
from healthmesh.synth import generate
from tests.conftest import run_cli as run_process

SITES = ("hospital", "clinic", "insurer")


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "pop"
    generate(out, patients=300, sites=list(SITES), seed=8)
    return out


def run_cli(*args: str) -> SimpleNamespace:
    """The command in-process (a subprocess costs seconds on a loaded machine)."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout,
                           stderr=result.stderr)


def _json(done) -> dict:  # noqa: ANN001
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def test_linkage_end_to_end(tmp_path: Path, population: Path) -> None:
    secret = tmp_path / "secret.key"
    assert run_process("linkage", "secret", str(secret)).returncode == 0
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    assert run_cli("linkage", "secret", str(secret)).returncode == 3  # never overwritten

    files = []
    for site in SITES:
        enc = tmp_path / "enc" / f"{site}.json"
        done = run_cli("linkage", "encode", "--ndjson", str(population / site / "Patient.ndjson"),
                       "--secret-file", str(secret), "--site", site, "--out", str(enc), "--json")
        assert done.returncode == 0, done.stderr
        files.append(str(enc))
    links = tmp_path / "links"
    done = run_cli("linkage", "match", *files, "--state", str(tmp_path / "unit"),
                   "--out", str(links), "--json")
    assert done.returncode == 0, done.stderr
    summary = _json(done)
    assert summary["new_people"] > 0 and set(summary["link_tables"]) == set(SITES)
    with open(links / "clinic.links.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"site", "local_id", "person_id"}
    assert all(r["person_id"].startswith("P-") and r["site"] == "clinic" for r in rows)

    done = run_cli("linkage", "evaluate", *map(str, sorted(links.glob("*.csv"))), "--truth",
                   str(population / "truth" / "linkage.csv"), "--json")
    assert done.returncode == 0, done.stderr
    assert _json(done)["f1"] >= 0.97

    person = rows[0]["person_id"]
    state = str(tmp_path / "unit")
    done = run_cli("linkage", "split", "--state", state, "--site", "clinic", "--record",
                   rows[0]["local_id"], "--steward", "steward:kim", "--reason", "test", "--json")
    assert done.returncode == 0, done.stderr
    new = _json(done)["person"]
    done = run_cli("linkage", "merge", person, new, "--state", state, "--steward", "steward:kim",
                   "--reason", "undo", "--json")
    assert done.returncode == 0, done.stderr and _json(done)["records"] == 1
    assert run_cli("linkage", "merge", person, person, "--state", state, "--steward", "s",
                   "--reason", "r").returncode == 3
    trail = _json(run_cli("linkage", "audit", "--state", state, "--json"))["entries"]
    assert [e["action"] for e in trail] == ["link", "split", "merge"]

    done = run_cli("linkage", "sweep", *files, "--truth", str(population / "truth/linkage.csv"),
                   "--thresholds", "0.6,0.9", "--json")
    rows_sweep = _json(done)["rows"]
    assert [r["threshold"] for r in rows_sweep] == [0.6, 0.9]
    assert rows_sweep[0]["recall"] >= rows_sweep[1]["recall"]


def test_encode_rejects_bad_lines_and_bad_secrets(tmp_path: Path, population: Path) -> None:
    secret = tmp_path / "secret.key"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    data = tmp_path / "p.ndjson"
    good = (population / "hospital" / "Patient.ndjson").read_text().splitlines()[:5]
    data.write_text("\n".join([*good, "{not json", '{"resourceType": "Observation"}']) + "\n")
    out = tmp_path / "enc.json"
    args = ["linkage", "encode", "--ndjson", str(data), "--secret-file", str(secret),
            "--site", "hospital", "--out", str(out)]
    done = run_cli(*args, "--json")
    assert done.returncode == 1, done.stderr
    result = _json(done)
    assert result["encoded"] == 5 and result["rejected"] == 2
    reasons = [json.loads(line)["reason"] for line in
               Path(result["rejects_file"]).read_text().splitlines()]
    assert any("not JSON" in r for r in reasons) and any("not a Patient" in r for r in reasons)

    secret.chmod(0o644)
    done = run_cli(*args)
    assert done.returncode == 3 and "chmod 600" in done.stderr
    secret.chmod(0o600)
    assert run_cli(*args[:-2], "--site", "../x", "--out", str(out)).returncode == 4
    assert run_cli("linkage", "encode", str(tmp_path), "--ndjson", str(data), "--secret-file",
                   str(secret), "--site", "a", "--out", str(out)).returncode == 2
    assert run_cli("linkage", "encode", "--ndjson", str(tmp_path / "none.ndjson"),
                   "--secret-file", str(secret), "--site", "a", "--out",
                   str(out)).returncode == 4
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert run_cli("linkage", "match", str(bad), "--state", str(tmp_path / "u"), "--out",
                   str(tmp_path / "l")).returncode == 4


def test_encode_from_a_node_goes_through_the_gate(tmp_path: Path, population: Path) -> None:
    node = tmp_path / "node"
    assert run_cli("node", "init", str(node)).returncode == 0
    toml = node / "node.toml"
    toml.write_text(toml.read_text().replace("[node]\n", '[node]\norganization = '
                                                         '"Organization/hospital"\n', 1))
    patients = population / "hospital" / "Patient.ndjson"
    assert run_cli("ingest", str(node), str(patients), "-q").returncode == 0
    secret = tmp_path / "secret.key"
    run_cli("linkage", "secret", str(secret))
    base = ["linkage", "encode", "--secret-file", str(secret), "--site", "hospital", "--json"]
    from_node = _json(run_cli(*base[:2], str(node), *base[2:], "--out", str(tmp_path / "a.json")))
    from_file = _json(run_cli(*base, "--ndjson", str(patients), "--out", str(tmp_path / "b.json")))
    assert from_node["encoded"] == from_file["encoded"] == len(patients.read_text().splitlines())
    a = json.loads((tmp_path / "a.json").read_text())["records"]
    b = json.loads((tmp_path / "b.json").read_text())["records"]
    assert sorted((r["id"], r["clk"]) for r in a) == sorted((r["id"], r["clk"]) for r in b)
    # another organisation may not read for HOPERAT: nothing is encoded
    other = _json(run_cli(*base[:2], str(node), *base[2:], "--out", str(tmp_path / "c.json"),
                          "--requester", "Organization/elsewhere"))
    assert other["encoded"] == 0
