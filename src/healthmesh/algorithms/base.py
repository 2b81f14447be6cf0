"""What every vetted algorithm shares: its result shape, parameter checks, strata, queries.

An algorithm's **local part** runs on one node's analytic tables inside the consent scope
(``allowed``/``denied`` temp tables, see :func:`healthmesh.cohorts.load_consent_scope`) and
returns a :class:`LocalResult`: declared columns, rows, and ``sensitivity`` — the most one
patient can change any one count cell (for noise calibration by the disclosure control
that runs next). The **hub part**, :meth:`Algorithm.pool`, combines the released results
of several sites (see :mod:`.pooling`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, Literal, TypeVar

import duckdb

from healthmesh.cohorts import Cohort, CohortError, CompiledCohort, parse_cohort
from healthmesh.cohorts.compile import AGE_SQL
from healthmesh.cohorts.model import AnyOf, Event

from .errors import AlgorithmError

__all__ = [
    "AGE_BANDS",
    "Algorithm",
    "Column",
    "LocalResult",
    "check_keys",
    "run_query",
]

T = TypeVar("T")
Kind = Literal["stratum", "count", "statistic", "sketch"]
GENDERS = ("female", "male", "other", "unknown")
AGE_BANDS = (*(f"{lo}-{lo + 9}" for lo in range(0, 90, 10)), "90+", "unknown")
_AGE = AGE_SQL.format(birth="p.birth_date", index="c.index_date")
# Strata the algorithms may group by: SQL over the cohort row ``c`` and its patient ``p``.
STRATA_SQL = {
    "sex": "coalesce(p.gender, 'unknown')",
    "age_band": f"CASE WHEN p.birth_date IS NULL OR p.birth_date > c.index_date THEN 'unknown' "
                f"WHEN {_AGE} >= 90 THEN '90+' ELSE CAST({_AGE} // 10 * 10 AS VARCHAR) || '-' "
                f"|| CAST({_AGE} // 10 * 10 + 9 AS VARCHAR) END",
    "year": "CAST(year(c.index_date) AS VARCHAR)",
    "state": "coalesce(p.state, 'unknown')",
    "city": "coalesce(p.city, 'unknown')",
    "postal_code": "coalesce(p.postal_code, 'unknown')",
    "country": "coalesce(p.country, 'unknown')",
}
STRATA = ("site", *STRATA_SQL)
# Strata whose values are public and fixed: the only ones zero rows may be listed for.
FIXED_DOMAINS: dict[str, tuple[str, ...]] = {"sex": GENDERS, "age_band": AGE_BANDS}


class Column(dict[str, str]):
    """A declared output column: a ``stratum`` label, a ``count`` of patients, a
    ``statistic`` (a sum, sum of squares) or a ``sketch`` (a list of bin counts).

    A dict ``{"name", "kind"}`` (so a result's columns are JSON as they are) with
    ``name`` and ``kind`` attributes."""

    def __init__(self, name: str, kind: Kind) -> None:
        super().__init__(name=name, kind=kind)

    @property
    def name(self) -> str:
        return self["name"]

    @property
    def kind(self) -> Kind:
        return self["kind"]  # type: ignore[return-value]

    def to_dict(self) -> dict[str, str]:
        return dict(self)


@dataclass(slots=True)
class LocalResult:
    """One site's answer before disclosure control."""

    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    sensitivity: int
    algorithm: str = ""
    version: str = ""
    site: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that travels to the hub (after disclosure control)."""
        return {"algorithm": self.algorithm, "version": self.version, "site": self.site,
                "columns": [c.to_dict() for c in self.columns], "rows": self.rows,
                "sensitivity": self.sensitivity, "meta": self.meta}


class Algorithm:
    """Base of the vetted algorithms; subclasses set the class attributes and the hooks."""

    name: ClassVar[str]
    version: ClassVar[str]
    title: ClassVar[str]

    def check_params(self, params: Any) -> dict[str, Any]:
        """Checked, normalised parameters; :class:`AlgorithmError` names the bad one.

        Checking already checked parameters returns them unchanged."""
        if isinstance(params, Checked):
            return params
        return Checked(self.parse(params))

    def check(self, params: Any) -> dict[str, Any]:
        """The same as :meth:`check_params`."""
        return self.check_params(params)

    def parse(self, params: Any) -> dict[str, Any]:
        """Subclasses check and normalise the parameters here."""
        raise NotImplementedError

    def tables_used(self, params: Any) -> set[str]:
        """The analytic tables the local part reads (for an agreement's minimisation)."""
        checked = self.check_params(params)
        return {"patient", *self.tables(checked)}

    def tables(self, checked: dict[str, Any]) -> set[str]:
        return cohort_tables(checked["cohort"]) if "cohort" in checked else set()

    def strata_used(self, params: Any) -> set[str]:
        """What the result is stratified by (``year``/``month`` for a split period)."""
        checked = self.check_params(params)
        return set(checked.get("strata", ())) | ({checked["by"]} if checked.get("by") else set())

    def disclose(self, local: LocalResult, rules: Any, **options: Any) -> Any:
        """Disclosure control of a local result (see :mod:`.disclose`)."""
        from .disclose import disclose

        return disclose(local, rules, **options)

    def output_schema(self, params: Any) -> tuple[Column, ...]:
        """The columns :meth:`run_local` returns for these parameters."""
        return self.schema(self.check_params(params))

    def schema(self, checked: dict[str, Any]) -> tuple[Column, ...]:
        """The output columns for already checked parameters."""
        raise NotImplementedError

    def run_local(self, con: Any, params: Any, *, site: str, allowed: str = "allowed_patient",
                  denied: str = "denied_resource") -> LocalResult:
        """Run on this node's tables (a DuckDB connection) within the consent scope."""
        checked = self.check_params(params)
        rows, sensitivity, meta = self.compute(con, checked, site, allowed, denied)
        return LocalResult(self.schema(checked), rows, sensitivity, self.name,
                           self.version, site, meta)

    def compute(self, con: Any, params: dict[str, Any], site: str, allowed: str,
                denied: str) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        raise NotImplementedError

    def pool(self, results: Sequence[Mapping[str, Any] | LocalResult]) -> list[dict[str, Any]]:
        """Combine several sites' released results (see :mod:`.pooling`)."""
        from .pooling import pool_counts

        return pool_counts(results)

    def __repr__(self) -> str:
        return f"<Algorithm {self.name} {self.version}>"


class Checked(dict[str, Any]):
    """Parameters that have passed :meth:`Algorithm.check_params`."""


def cohort_tables(cohort: Cohort, extra: Iterable[Any] = ()) -> set[str]:
    """The event tables a parsed cohort (and ``extra`` criteria) reads."""
    found: set[str] = set()
    todo = [*cohort.include, *cohort.exclude, *extra]
    if cohort.index_event is not None:
        todo.append(cohort.index_event)
    while todo:
        criterion = todo.pop()
        if isinstance(criterion, AnyOf):
            todo.extend(criterion.items)
        elif isinstance(criterion, Event):
            found.add(criterion.kind)
    return found


# --- parameter checks ---------------------------------------------------------------------

def check_keys(params: Any, allowed: Iterable[str], required: Iterable[str] = (),
               path: str = "params") -> Mapping[str, Any]:
    """``params`` as a mapping with only ``allowed`` keys and every ``required`` one."""
    if not isinstance(params, Mapping):
        raise AlgorithmError(f"{path}: expected an object")
    allowed = tuple(allowed)
    for key in params:
        if key not in allowed:
            raise AlgorithmError(f"{path}: unknown parameter {str(key)[:60]!r} "
                                 f"(expected {', '.join(map(repr, allowed))})")
    for key in required:
        if key not in params:
            raise AlgorithmError(f"{path}: missing parameter {key!r}")
    return params


def check_strata(value: Any, choices: Sequence[str], path: str, *, low: int = 0,
                 high: int = 4) -> tuple[str, ...]:
    """A list of distinct stratum names from ``choices``, ``low`` to ``high`` of them."""
    if not isinstance(value, list | tuple) or not low <= len(value) <= high:
        raise AlgorithmError(f"{path}: expected an array of {low} to {high} of "
                             f"{', '.join(map(repr, choices))}")
    for i, name in enumerate(value):
        if name not in choices:
            raise AlgorithmError(f"{path}[{i}]: unknown stratum {str(name)[:60]!r} "
                                 f"(expected one of {', '.join(map(repr, choices))})")
    if len(set(value)) != len(value):
        raise AlgorithmError(f"{path}: a stratum is repeated")
    return tuple(value)


def check_int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AlgorithmError(f"{path}: expected an integer from {low} to {high}")
    return value


def check_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise AlgorithmError(f"{path}: expected true or false")
    return value


def check_date(value: Any, path: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise AlgorithmError(f"{path}: expected a date YYYY-MM-DD") from None


def cohort_param(value: Any, path: str = "params.cohort") -> Cohort:
    """A parsed cohort definition; a cohort error becomes an :class:`AlgorithmError`."""
    return translate(lambda: parse_cohort(value, path))


def translate(build: Callable[[], T]) -> T:
    """Run ``build``, turning a :class:`CohortError` into an :class:`AlgorithmError`."""
    try:
        return build()
    except CohortError as exc:
        raise AlgorithmError(str(exc)) from exc


# --- queries ----------------------------------------------------------------------------------

def strata_select(strata: Sequence[str]) -> list[str]:
    """SELECT items for the SQL strata (``site`` is added in Python)."""
    return [f"{STRATA_SQL[s]} AS {s}" for s in strata if s != "site"]


def wrap(cohort: CompiledCohort, select: str, tail: str = "") -> str:
    """A query over the cohort rows as ``c`` joined to their patient row ``p``."""
    return (f"WITH cohort AS ({cohort.sql}) SELECT {select} FROM cohort c "
            f"JOIN patient p ON p.patient_id = c.patient_id {tail}")


def run_query(con: Any, sql: str, params: Mapping[str, Any],
              algorithm: str) -> list[dict[str, Any]]:
    """Rows as dicts; a DuckDB error becomes an :class:`AlgorithmError`."""
    try:
        cursor = con.execute(sql, dict(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except duckdb.Error as exc:
        raise AlgorithmError(f"{algorithm}: the local query failed: {exc}") from exc


def add_site(rows: list[dict[str, Any]], strata: Sequence[str], site: str) -> list[dict[str, Any]]:
    """Put the ``site`` stratum in place and order each row's keys as declared."""
    if "site" not in strata:
        return rows
    return [{**{s: site if s == "site" else row[s] for s in strata},
             **{k: v for k, v in row.items() if k not in strata}} for row in rows]


def fill_zeros(rows: list[dict[str, Any]], strata: Sequence[str],
               levels: Mapping[str, Sequence[str]], counts: Sequence[str]) -> list[dict[str, Any]]:
    """Every combination of ``levels`` as a row, with zero ``counts`` where none was found."""
    from itertools import product

    found = {tuple(r[s] for s in strata): r for r in rows}
    out = []
    for combo in product(*(levels[s] for s in strata)):
        out.append(found.get(combo) or {**dict(zip(strata, combo, strict=True)),
                                        **dict.fromkeys(counts, 0)})
    return out


def sort_rows(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple("" if r[k] is None else str(r[k]) for k in keys))
