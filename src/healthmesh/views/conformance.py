"""Run the official SQL on FHIR v2 test suite and write its test report.

Used by ``tests/test_sql_on_fhir.py`` (one pytest case per suite test) and by
``tools/sof_test_report.py`` (the report in the suite's ``test_report`` format, so
healthmesh can be listed beside the other implementations).

Comparison rules: ``expect`` rows must match as a multiset (row order is not part
of the contract; ``row_index.json`` lists rows grouped by union branch), numbers by
value (``5 == 5.0``); ``expectCount`` the number of rows; ``expectError`` compiling
or evaluating must raise a :class:`~healthmesh.views.errors.ViewError`;
``expectColumns`` the compiled view's column names, in order.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthmesh.views.engine import compile_view
from healthmesh.views.errors import ViewError

__all__ = ["run_case", "suite_cases", "test_report"]


def suite_cases(folder: Path) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file name, suite, test) for every test of every suite file in ``folder``."""
    for path in sorted(folder.glob("*.json")):
        suite = json.loads(path.read_text(encoding="utf-8"))
        for test in suite["tests"]:
            yield path.name, suite, test


def _norm(value: Any) -> Any:
    """A hashable, order-insensitive-for-keys form of a row value."""
    if isinstance(value, dict):
        return tuple(sorted((k, _norm(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_norm(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float):
        return round(value, 9)
    return value


def run_case(suite: dict[str, Any], test: dict[str, Any]) -> None:
    """Run one suite test; raise AssertionError (with details) if it does not pass."""
    resources = suite["resources"]
    if test.get("expectError"):
        try:
            rows = list(compile_view(test["view"]).rows(resources))
        except ViewError:
            return
        raise AssertionError(f"expected an error, got rows {rows!r}")
    view = compile_view(test["view"])
    rows = list(view.rows(resources))
    if "expectColumns" in test:
        assert list(view.columns) == test["expectColumns"]
    if "expectCount" in test:
        assert len(rows) == test["expectCount"]
    if "expect" in test:
        got, want = Counter(map(_norm, rows)), Counter(map(_norm, test["expect"]))
        assert got == want, f"rows differ:\n got  {rows!r}\n want {test['expect']!r}"


def test_report(folder: Path) -> dict[str, Any]:
    """Run the whole suite; the results in the suite's ``test_report`` format."""
    report: dict[str, Any] = {}
    for name, suite, test in suite_cases(folder):
        try:
            run_case(suite, test)
            passed = True
        except (AssertionError, ViewError):
            passed = False
        report.setdefault(name, {"tests": []})["tests"].append(
            {"name": test["title"], "result": {"passed": passed}}
        )
    return report
