"""``healthmesh anonymize`` as a user runs it: CSV and Parquet, rejects, refusal, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from healthmesh.errors import InputError
from healthmesh.privacy.anonymize import tableio
from tests.conftest import run_cli

CONFIG = {
    "quasi_identifiers": {"birth": {"builder": "date"}, "zip": {"builder": "zip"}},
    "sensitive": ["dx"], "identifiers": ["name"],
    "models": [{"type": "k-anonymity", "k": 2}], "suppression_limit": 0.0,
}
ROWS = [
    ("name", "birth", "zip", "dx"),
    ("Ann", "1980-01-05", "02139", "E11"),
    ("Bob", "1980-02-11", "02141", "I10"),
    ("Cat", "1982-07-30", "02139", "E11"),
    ("Dan", "1983-03-03", "02144", "J45"),
]


def _write(tmp_path: Path, rows: list[tuple[str, ...]] = ROWS, config: dict | None = None,
           sep: str = ",") -> tuple[Path, Path]:
    data = tmp_path / "in.csv"
    data.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps(config or CONFIG))
    return data, conf


def test_anonymize_csv_json_output(tmp_path: Path) -> None:
    data, conf = _write(tmp_path)
    out = tmp_path / "out.csv"
    proc = run_cli("anonymize", str(data), "--config", str(conf), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    # 2-anonymous at least loss: birth to 5-year band (1980-1984), ZIP to ZIP-3 (021**)
    assert summary["released"] is True and summary["levels"] == {"birth": 3, "zip": 1}
    lines = out.read_text().splitlines()
    assert lines[0] == "birth,zip,dx"  # the identifier "name" is removed
    assert lines[1:] == ["1980-1984,021**,E11", "1980-1984,021**,I10",
                         "1980-1984,021**,E11", "1980-1984,021**,J45"]
    assert summary["risk_before"]["prosecutor_highest"] == 1.0
    assert summary["risk_after"]["prosecutor_highest"] == pytest.approx(0.25)


def test_anonymize_human_output_and_semicolons(tmp_path: Path) -> None:
    data, conf = _write(tmp_path, sep=";")
    out = tmp_path / "out.tsv"
    proc = run_cli("anonymize", str(data), "--config", str(conf), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "released 4 records" in proc.stdout and "birth 3, zip 1" in proc.stdout
    assert out.read_text().splitlines()[0] == "birth\tzip\tdx"


def test_anonymize_parquet_in_and_out(tmp_path: Path) -> None:
    data, conf = _write(tmp_path)
    parquet = tmp_path / "in.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * FROM read_csv('{data}', all_varchar=true)) "
                    f"TO '{parquet}' (FORMAT parquet)")
    out = tmp_path / "out.parquet"
    proc = run_cli("anonymize", str(parquet), "--config", str(conf), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT birth, zip FROM '{out}'").fetchall()
    assert rows == [("1980-1984", "021**")] * 4


def test_refused_release_writes_nothing(tmp_path: Path) -> None:
    data, conf = _write(tmp_path, config={**CONFIG, "release": {"max_highest_risk": 0.2}})
    out = tmp_path / "out.csv"
    proc = run_cli("anonymize", str(data), "--config", str(conf), "--out", str(out), "--json")
    # the best release has one class of 4: highest risk 1/4 = 0.25 > 0.2
    assert proc.returncode == 1
    assert "release refused" in proc.stderr and "nothing was written" in proc.stderr
    assert json.loads(proc.stdout)["violations"][0]["value"] == pytest.approx(0.25)
    assert set(tmp_path.iterdir()) == {data, conf}  # no output, no temporary, no rejects


def test_no_solution_exits_1(tmp_path: Path) -> None:
    data, conf = _write(tmp_path, config={**CONFIG,
                                          "models": [{"type": "k-anonymity", "k": 5}]})
    proc = run_cli("anonymize", str(data), "--config", str(conf), "--out",
                   str(tmp_path / "o.csv"))
    assert proc.returncode == 1 and "no generalisation satisfies 5-anonymity" in proc.stderr


def test_rejected_rows_go_to_the_rejects_file(tmp_path: Path) -> None:
    rows = [*ROWS, ("Eve", "1981-13-01", "02139", "E11"), ("Fay", "1981-01-01", "02139"),
            ("Gus", "1981-04-04", "2139", "E11"), ("Hal", "1984-06-06", "02139", "")]
    data, conf = _write(tmp_path, rows=rows)
    out = tmp_path / "out.csv"
    proc = run_cli("anonymize", str(data), "--config", str(conf), "--out", str(out), "--json")
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    rejects = [json.loads(line) for line in Path(summary["rejects_file"]).read_text().splitlines()]
    by_line = {r["line"]: r["reason"] for r in rejects}
    assert by_line[7] == "3 fields, the header has 4"
    assert by_line[6] == "birth: '1981-13-01' is not a date (YYYY-MM-DD)"
    assert by_line[8] == "zip: '2139' is not a ZIP code (12345 or 12345-6789)"
    assert set(by_line) == {6, 7, 8}  # an empty sensitive value is a value, not missing
    assert len(out.read_text().splitlines()) == 1 + 5


@pytest.mark.parametrize("config_text, code, message", [
    ("{broken", 3, "not valid JSON"),
    (json.dumps({**CONFIG, "models": [{"type": "k-anonymity", "k": 0}]}), 3, "k >= 1"),
    (json.dumps({**CONFIG, "quasi_identifiers": {"nope": {"builder": "zip"}}}), 3,
     "not in the table"),
    (json.dumps({**CONFIG, "quasi_identifiers": {"zip": {"file": "missing.csv"}},
                 "undeclared": "drop"}), 3,
     "cannot read hierarchy"),
])
def test_bad_configuration_exits_3(tmp_path: Path, config_text: str, code: int,
                                   message: str) -> None:
    data, conf = _write(tmp_path)
    conf.write_text(config_text)
    proc = run_cli("anonymize", str(data), "--config", str(conf), "--out",
                   str(tmp_path / "o.csv"))
    assert proc.returncode == code and message in proc.stderr, proc.stderr


def test_unreadable_input_exits_4(tmp_path: Path) -> None:
    data, conf = _write(tmp_path)
    for path, message in [(tmp_path / "absent.csv", "no such file"),
                          (tmp_path / "x.xlsx", "unknown table kind")]:
        proc = run_cli("anonymize", str(path), "--config", str(conf), "--out",
                       str(tmp_path / "o.csv"))
        assert proc.returncode == 4 and message in proc.stderr
    (tmp_path / "bin.csv").write_bytes(b"a,b\n\xff\xfe,\x00\n")
    proc = run_cli("anonymize", str(tmp_path / "bin.csv"), "--config", str(conf), "--out",
                   str(tmp_path / "o.csv"))
    assert proc.returncode == 4 and "not UTF-8" in proc.stderr
    (tmp_path / "fake.parquet").write_text("not parquet")
    proc = run_cli("anonymize", str(tmp_path / "fake.parquet"), "--config", str(conf), "--out",
                   str(tmp_path / "o.csv"))
    assert proc.returncode == 4 and "not a readable Parquet" in proc.stderr


def test_unknown_output_kind_is_a_usage_error(tmp_path: Path) -> None:
    data, conf = _write(tmp_path)
    proc = run_cli("anonymize", str(data), "--config", str(conf), "--out",
                   str(tmp_path / "out.xlsx"))
    assert proc.returncode == 2 and "unknown table kind" in proc.stderr
    assert not (tmp_path / "out.xlsx").exists()


def test_table_reader_limits(tmp_path: Path) -> None:
    data, _ = _write(tmp_path)
    with pytest.raises(InputError, match="row limit"):
        tableio.read_table(data, max_rows=2)
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    with pytest.raises(InputError, match="name each column once"):
        tableio.read_table(tmp_path / "dup.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        tableio.read_table(tmp_path / "empty.csv")
    huge = tmp_path / "huge.csv"
    huge.write_text("a,b\n" + "x" * (tableio.MAX_FIELD + 10) + ",1\n")
    with pytest.raises(InputError, match="malformed CSV"):
        tableio.read_table(huge)
    frame, rejects = tableio.read_table(data)
    assert frame.index.tolist() == [2, 3, 4, 5] and rejects == []
    parquet = tmp_path / "t.parquet"
    tableio.write_table(frame, parquet)
    with pytest.raises(InputError, match="over the 2 row limit"):
        tableio.read_table(parquet, max_rows=2)
    back, _ = tableio.read_table(parquet)
    assert back["name"].tolist() == ["Ann", "Bob", "Cat", "Dan"]
