"""The healthmesh command as a user runs it: outputs, --json and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_synth_command_writes_sites_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = run_cli("synth", "--out", str(out), "--patients", "30", "--sites",
                     "hospital,insurer", "--seed", "3", "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert set(manifest["sites"]) >= {"hospital", "insurer"}
    assert (out / "hospital" / "Patient.ndjson").exists()
    assert (out / "truth" / "linkage.csv").exists()


def test_synth_bad_arguments_exit_with_usage(tmp_path: Path) -> None:
    bad_site = run_cli("synth", "--out", str(tmp_path / "a"), "--sites", "moon-base")
    assert bad_site.returncode == 2 and "moon-base" in bad_site.stderr
    bad_date = run_cli("synth", "--out", str(tmp_path / "b"), "--start", "2020-02-30")
    assert bad_date.returncode == 2 and "invalid date" in bad_date.stderr
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep me")
    not_empty = run_cli("synth", "--out", str(tmp_path / "c"), "--patients", "5")
    assert not_empty.returncode == 2
    assert (tmp_path / "c" / "x").read_text() == "keep me"
    for result in (bad_site, bad_date, not_empty):
        assert "Traceback" not in result.stderr


def test_synth_output_loads_into_a_node_without_rejects(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert run_cli("synth", "--out", str(out), "--patients", "40", "-q").returncode == 0
    node = tmp_path / "node"
    assert run_cli("node", "init", str(node)).returncode == 0
    for site in ("hospital", "clinic", "lab", "insurer", "pharmacy", "dental", "public-health"):
        result = run_cli("ingest", str(node), str(out / site), "--json")
        assert result.returncode == 0, (site, result.stdout, result.stderr)
        assert json.loads(result.stdout)["rejected"] == 0


def test_node_init_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "other.txt").write_text("not a node")
    result = run_cli("node", "init", str(tmp_path))
    assert result.returncode == 3 and "not empty" in result.stderr


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("ingest", str(tmp_path), "--no-such-flag")
    assert result.returncode == 2


def test_node_status_json(tmp_path: Path) -> None:
    node = tmp_path / "node"
    run_cli("node", "init", str(node), "--name", "Clinic A")
    result = run_cli("node", "status", str(node), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"name": "Clinic A", "resources": {}, "total": 0}
