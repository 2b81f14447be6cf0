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


def _node_with_audit(tmp_path: Path) -> Path:
    from healthmesh.gate.requester import Requester
    from healthmesh.node import open_node

    folder = tmp_path / "node"
    run_cli("node", "init", str(folder))
    with open_node(folder) as node:
        node.store.put({"resourceType": "Patient", "id": "p1"})
        repo = node.gate.for_request(Requester("Organization/clinic", "TREAT"))
        for _ in range(3):
            repo.read("Patient", "p1")
    return folder


def test_audit_verify_and_export(tmp_path: Path) -> None:
    folder = _node_with_audit(tmp_path)
    ok = run_cli("audit", "verify", str(folder), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["checked"] == 3
    out = tmp_path / "events.ndjson"
    exported = run_cli("audit", "export", str(folder), "--out", str(out))
    assert exported.returncode == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(events) == 3 and all(e["resourceType"] == "AuditEvent" for e in events)


def test_audit_verify_reports_tampering_with_exit_5(tmp_path: Path) -> None:
    import sqlite3

    folder = _node_with_audit(tmp_path)
    db = sqlite3.connect(folder / "audit.sqlite")
    table, column = _record_column(db)
    for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        db.execute(f"DROP TRIGGER {trigger}")  # an attacker with file access can do this
    db.execute(f"UPDATE {table} SET {column} = replace({column}, 'clinic', 'cl1nic') "
               "WHERE seq = 2")
    db.commit()
    db.close()
    result = run_cli("audit", "verify", str(folder), "--json")
    assert result.returncode == 5
    assert json.loads(result.stdout)["first_bad"] == 2


def _record_column(db: object) -> tuple[str, str]:
    """The audit table and the column that holds each record's JSON."""
    tables = [r[0] for r in db.execute(  # type: ignore[attr-defined]
        "SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]  # type: ignore[attr-defined]
        if "seq" in cols and "record" in cols:
            return table, "record"
    raise AssertionError(f"no audit entries table among {tables}")


def test_patient_token_command(tmp_path: Path) -> None:
    folder = _node_with_audit(tmp_path)
    result = run_cli("patient", "token", str(folder), "p1", "--json")
    assert result.returncode == 0 and len(json.loads(result.stdout)["token"]) > 20
    missing = run_cli("patient", "token", str(folder), "nobody")
    assert missing.returncode == 4 and "no Patient/nobody" in missing.stderr
