"""The official SQL on FHIR v2 test suite, every test, against ``healthmesh.views``.

Each case of ``../shared/conformance/sql-on-fhir-v2/tests/*.json`` is one pytest case:

- ``expect``: the rows must match as a multiset (row order is not part of the
  contract; e.g. ``row_index.json`` lists rows grouped by union branch, not by
  resource), with numbers compared by value (``5 == 5.0``);
- ``expectCount``: the number of rows;
- ``expectError``: compiling or evaluating must raise a :class:`ViewError`;
- ``expectColumns``: the compiled view's column names, in order.

The report in the suite's test-report format is written by ``tools/sof_test_report.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from healthmesh.views import (
    ViewDefinitionError,
    ViewError,
    ViewEvaluationError,
    compile_view,
    evaluate,
)
from healthmesh.views.conformance import run_case, suite_cases

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO.parent / "shared" / "conformance" / "sql-on-fhir-v2" / "tests"

def _cases() -> list[Any]:
    cases = [pytest.param(name, suite, test, id=f"{name[:-5]}-{test['title']}")
             for name, suite, test in suite_cases(SUITE)]
    return cases or [pytest.param(None, None, None, id="suite-missing")]


@pytest.mark.parametrize(("file", "suite", "test"), _cases())
def test_sql_on_fhir(file: str | None, suite: dict[str, Any], test: dict[str, Any]) -> None:
    if file is None:
        pytest.fail(f"SQL on FHIR v2 test suite not found at {SUITE}")
    run_case(suite, test)


def test_suite_is_complete() -> None:
    """The whole suite is present: 22 files, 134 tests (update if the suite grows)."""
    files = sorted(SUITE.glob("*.json"))
    assert len(files) >= 22, f"SQL on FHIR v2 suite missing or incomplete at {SUITE}"
    total = sum(len(json.loads(p.read_text(encoding="utf-8"))["tests"]) for p in files)
    assert total >= 134


# ------------------------------------------------------------------ beyond the suite

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "name": [{"use": "official", "family": "Doe", "given": ["Ann", "B"]}, {"family": "X"}],
    "deceasedBoolean": False,
}


def _one_column(path: str, **extra: Any) -> dict[str, Any]:
    column = {"name": "v", "path": path, **extra}
    return {"resource": "Patient", "select": [{"column": [column]}]}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("name.where(use = 'official').given.join(' ')", "Ann B"),
        ("name.given.count()", 2),
        ("name.family | name.family", None),  # two distinct values: error, tested below
        ("(1 + 2) * 3 - 4 / 2", 7.0),
        ("7 div 2 + 7 mod 2", 4),
        ("'a' & {} & 'b'", "ab"),
        ("deceased.ofType(boolean).not()", True),
        ("name[1].family", "X"),
        ("name.first().given.last()", "B"),
        ("name.exists(family = 'X') and active.empty().not()", True),
        ("true implies {}", None),
        ("false implies {}", True),
        ("'Ann' in name.given", True),
        ("name.given contains 'Zed'", False),
        ("name.select(given.first()).join(',')", "Ann"),
        ("Patient.name.family.first()", "Doe"),
        ("name.family ~ name.family", True),
        ("%resource.id", "p1"),
        ("@1970-06.lowBoundary()", "1970-06-01"),
        ("getResourceKey()", "p1"),
    ],
)
def test_fhirpath_subset(path: str, value: Any) -> None:
    if path == "name.family | name.family":
        with pytest.raises(ViewError, match="collection"):
            compile_view(_one_column(path)).rows([PATIENT]).__next__()
        return
    rows = list(compile_view(_one_column(path)).rows([PATIENT]))
    assert rows == [{"v": value}]


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ([], "JSON object"),
        ({"select": []}, "resource"),
        ({"resource": "Patient"}, "select"),
        (_one_column("name.frobnicate()"), "unsupported function frobnicate"),
        (_one_column("name.("), "FHIRPath"),
        (_one_column("%nope"), "undefined constant %nope"),
        (_one_column("id", collection="yes"), "collection must be a boolean"),
        ({"resource": "Patient", "select": [{"column": [{"name": "1x", "path": "id"}]}]}, "1x"),
        ({"resource": "Patient", "select": [{"forEach": "a", "forEachOrNull": "b"}]}, "both"),
        ({"resource": "Patient", "select": [{"colum": []}]}, "unknown keys: colum"),
        (
            {"resource": "Patient", "select": [{"column": [{"name": "a", "path": "id"}]}] * 2},
            "duplicate column names: a",
        ),
        (
            {"resource": "Patient", "constant": [{"name": "c"}], "select": [{"column": []}]},
            "exactly one value",
        ),
    ],
)
def test_invalid_views_name_the_problem(view: Any, message: str) -> None:
    with pytest.raises(ViewDefinitionError, match=re.escape(message)):
        compile_view(view)


def test_compiled_view_is_reusable_and_lazy() -> None:
    view = compile_view(
        {
            "resource": "Patient",
            "select": [
                {"column": [{"name": "id", "path": "id"}]},
                {"forEach": "name", "column": [{"name": "i", "path": "%rowIndex"}]},
            ],
        }
    )
    assert view.columns == ("id", "i")
    other = {"resourceType": "Observation", "id": "o1"}
    rows = view.rows(iter([PATIENT, other, PATIENT]))
    assert next(rows) == {"id": "p1", "i": 0}
    assert list(rows) == [{"id": "p1", "i": 1}, {"id": "p1", "i": 0}, {"id": "p1", "i": 1}]
    assert evaluate({"resource": "Patient", "select": [{"column": []}]}, [PATIENT]) == [{}]


def test_where_must_be_boolean() -> None:
    view = _one_column("id") | {"where": [{"path": "name.family.first()"}]}
    with pytest.raises(ViewEvaluationError, match="boolean"):
        evaluate(view, [PATIENT])
