"""`healthmesh views refresh` and `healthmesh sql`: the node administrator's analytic tables."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.conftest import run_cli


def test_refresh_builds_tables_that_match_the_store(synthea_node: Path) -> None:
    refreshed = run_cli("views", "refresh", str(synthea_node), "--json")
    assert refreshed.returncode == 0, refreshed.stderr
    tables = json.loads(refreshed.stdout)["tables"]
    status = json.loads(run_cli("node", "status", str(synthea_node), "--json").stdout)
    assert tables["patient"] == status["resources"]["Patient"]
    again = json.loads(run_cli("views", "refresh", str(synthea_node), "--json").stdout)
    assert again["resources_seen"] == 0 and again["tables"] == tables  # nothing new to read


def test_sql_answers_read_only_and_is_audited(synthea_node: Path) -> None:
    status = json.loads(run_cli("node", "status", str(synthea_node), "--json").stdout)
    counted = run_cli("sql", str(synthea_node), "SELECT count(*) AS n FROM patient",
                      "--format", "csv")
    assert counted.returncode == 0, counted.stderr
    rows = list(csv.DictReader(io.StringIO(counted.stdout)))
    assert rows == [{"n": str(status["resources"]["Patient"])}]

    write = run_cli("sql", str(synthea_node), "DELETE FROM patient")
    assert write.returncode == 4 and "read-only" in write.stderr
    bad = run_cli("sql", str(synthea_node), "SELEC 1")
    assert bad.returncode == 4 and "syntax error" in bad.stderr.lower()
    after = run_cli("sql", str(synthea_node), "SELECT count(*) AS n FROM patient",
                    "--format", "json")
    assert json.loads(after.stdout.splitlines()[0])["n"] == status["resources"]["Patient"]

    exported = run_cli("audit", "export", str(synthea_node))
    events = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    assert sum("DELETE FROM patient" in json.dumps(e) for e in events) == 1
