"""Compile a cohort definition into one DuckDB query over the analytic tables.

The query yields ``patient_id, index_date`` of the cohort members. Its shape::

    WITH k0 AS (codes), ...,                      -- one code list per distinct code set
         base AS MATERIALIZED (patients in scope with their index date),
         c0 AS (patient ids meeting criterion 0), ...
    SELECT b.patient_id, b.index_date FROM base b
    WHERE EXISTS (c0 ...) AND NOT EXISTS (c1 ...)

Every criterion is a CTE of patient ids (grouped joins, window functions for ``last``), so
DuckDB runs hash joins and semi/anti joins, never a per-row subquery. Every literal is a
named parameter (``$p0``, ...); identifiers come only from the fixed vocabulary below, and
the consent tables' names are checked against :data:`IDENTIFIER`.

Consent: patients come only from the ``allowed`` table, and no row whose ``resource_id`` is
in the ``denied`` table qualifies a patient (nor does a denied Patient row: that patient is
left out). Records in error never count (see :data:`TABLES`, ``errors``). A record with no
date fails every windowed criterion. See :mod:`healthmesh.cohorts` for the language.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from .errors import CohortError
from .model import AnyOf, CodeSet, Cohort, Criterion, Demographics, Event, Offset, Window
from .schema import parse_cohort, parse_criteria, parse_event

__all__ = ["IDENTIFIER", "TABLES", "CompiledCohort", "Table", "compile_cohort", "compile_values"]

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class Table:
    """How one event kind maps onto its analytic table."""

    name: str
    day: str  # SQL for the event's date (DATE)
    order: str  # SQL ordering events in time (for 'last' and 'first')
    system: str
    code: str
    status: str
    error_column: str
    errors: tuple[str, ...]


_ONSET = "coalesce(e.onset, e.recorded)"
TABLES = {
    "condition": Table("condition", _ONSET, _ONSET, "e.system", "e.code", "e.clinical_status",
                       "e.verification_status", ("refuted", "entered-in-error")),
    "observation": Table("observation", "CAST(e.effective AS DATE)", "e.effective", "e.system",
                         "e.code", "e.status", "e.status", ("cancelled", "entered-in-error")),
    "medication": Table("medication", 'e."start"', 'e."start"', "e.system", "e.code", "e.status",
                        "e.status", ("cancelled", "entered-in-error", "not-taken")),
    "procedure": Table("procedure", "e.performed", "e.performed", "e.system", "e.code",
                       "e.status", "e.status", ("entered-in-error", "not-done")),
    "immunization": Table("immunization", "e.occurrence", "e.occurrence", "e.system", "e.code",
                          "e.status", "e.status", ("entered-in-error", "not-done")),
    "encounter": Table("encounter", 'CAST(e."start" AS DATE)', 'e."start"', "e.type_system",
                       "e.type_code", "e.status", "e.status", ("cancelled", "entered-in-error")),
}
_OPS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "=": "="}
_INTERVAL = {"d": ("to_days", 1), "w": ("to_days", 7), "m": ("to_months", 1), "y": ("to_years", 1)}
AGE_SQL = "date_sub('year', {birth}, {index})"
_PATIENT_COLUMNS = ("gender", "birth_date", "deceased", "deceased_date", "state", "city",
                    "postal_code", "country")


@dataclass(frozen=True, slots=True)
class CompiledCohort:
    """A query and its named parameters: ``con.execute(c.sql, c.params)``."""

    sql: str
    params: dict[str, Any]

    def run(self, con: Any) -> list[tuple[Any, ...]]:
        """Execute on a DuckDB connection and fetch every row."""
        return con.execute(self.sql, self.params).fetchall()


def compile_cohort(cohort: dict[str, Any] | Cohort, *, allowed: str = "allowed_patient",
                   denied: str = "denied_resource", index_date: date | str | None = None,
                   period: tuple[date, date] | None = None,
                   flags: Mapping[str, Sequence[Any]] | None = None) -> CompiledCohort:
    """SQL yielding ``patient_id, index_date`` of the members of ``cohort``.

    ``index_date`` (algorithms pass the period end) overrides the cohort's fixed index date;
    without either, the index date is today. ``period`` is what ``"window": "period"``
    means. A cohort indexed on an event (``"index": {"first": ...}``) cannot take
    ``index_date``.

    ``flags`` adds one boolean column per name, true for the members who also meet all of
    its criteria (JSON criteria or parsed ones): an indicator's numerator in one query.
    """
    builder = _Builder(allowed, denied, period)
    builder.members(_parsed(cohort), index_date)
    columns = ["b.patient_id", "b.index_date"]
    for name, criteria in (flags or {}).items():
        if name in ("patient_id", "index_date"):
            raise CohortError(f"flags: {name!r} is a reserved column name")
        test = builder.all_of(_criteria(criteria, f"flags.{name}"))
        columns.append(f"{test} AS {quote(name, 'flag name')}")
    return builder.finish(f"SELECT {', '.join(columns)} FROM members b")


def compile_values(cohort: dict[str, Any] | Cohort, observation: Event | dict[str, Any], *,
                   allowed: str = "allowed_patient", denied: str = "denied_resource",
                   index_date: date | str | None = None, period: tuple[date, date] | None = None,
                   per_patient: int | None = None, unit: str | None = None) -> CompiledCohort:
    """SQL yielding ``patient_id, index_date, value``: the numeric values of the cohort
    members' observations matching ``observation`` (its window relative to each member's
    index date), in ``unit`` if given, at most ``per_patient`` most recent ones per
    patient. An observation coded with several matching codings counts once."""
    if not isinstance(observation, Event):
        observation = parse_event(observation, "observation", "observation",
                                  ("codes", "valueset", "window", "status"))
    builder = _Builder(allowed, denied, period)
    builder.members(_parsed(cohort), index_date)
    filters = builder.event_filters(observation, pre_last=True)
    if unit is not None:
        filters.append(f"e.unit = {builder.bind(unit)}")
    where = " AND ".join([*filters, "e.value_number IS NOT NULL"])
    rows = (f"SELECT e.patient_id, b.index_date, e.value_number AS value, e.effective, "
            f"e.resource_id FROM observation e JOIN members b ON b.patient_id = e.patient_id "
            f"WHERE {where} QUALIFY row_number() OVER "
            "(PARTITION BY e.resource_id, e.is_component, e.value_number) = 1")
    ranked = ("SELECT d.patient_id, d.index_date, d.value, row_number() OVER (PARTITION BY "
              "d.patient_id ORDER BY d.effective DESC NULLS LAST, d.resource_id DESC) AS rank "
              f"FROM ({rows}) d")
    limit = f" WHERE v.rank <= {builder.bind(per_patient)}" if per_patient else ""
    sql = f"SELECT v.patient_id, v.index_date, v.value FROM ({ranked}) v{limit}"
    return builder.finish(sql)


def _parsed(cohort: dict[str, Any] | Cohort) -> Cohort:
    return cohort if isinstance(cohort, Cohort) else parse_cohort(cohort)


def _criteria(items: Sequence[Any], path: str) -> tuple[Criterion, ...]:
    if all(isinstance(c, Event | Demographics | AnyOf) for c in items):
        return tuple(items)
    return parse_criteria(items, path)


def quote(identifier: str, what: str = "table name") -> str:
    """A checked, quoted SQL identifier (the consent tables' names, flag names)."""
    if not isinstance(identifier, str) or not IDENTIFIER.match(identifier):
        raise CohortError(f"invalid {what} {str(identifier)[:60]!r}")
    return f'"{identifier}"'


class _Builder:
    """Accumulates CTEs and named parameters for one query."""

    def __init__(self, allowed: str, denied: str, period: tuple[date, date] | None) -> None:
        self.allowed, self.denied = quote(allowed), quote(denied)
        self.period = period
        self.params: dict[str, Any] = {}
        self.ctes: list[str] = []
        self.code_ctes: dict[CodeSet, tuple[str | None, str | None]] = {}

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    def cte(self, prefix: str, sql: str, *, materialized: bool = False) -> str:
        name = f"{prefix}{len(self.ctes)}"
        self.ctes.append(f"{name} AS {'MATERIALIZED ' if materialized else ''}({sql})")
        return name

    def finish(self, select: str) -> CompiledCohort:
        return CompiledCohort(f"WITH {', '.join(self.ctes)}\n{select}", self.params)

    # --- the cohort -------------------------------------------------------------------

    def members(self, cohort: Cohort, index_date: date | str | None) -> None:
        self.base(cohort, index_date)
        tests = [self.all_of(cohort.include)] if cohort.include else []
        tests += [f"NOT {self.holds(c)}" for c in cohort.exclude]
        where = f" WHERE {' AND '.join(tests)}" if tests else ""
        self.ctes.append(f"members AS (SELECT b.patient_id, b.index_date FROM base b{where})")

    def holds(self, criterion: Criterion) -> str:
        """A test on ``b.patient_id``: the patient meets ``criterion`` (a semi join)."""
        return f"EXISTS (SELECT 1 FROM {self.criterion(criterion)} c " \
               "WHERE c.patient_id = b.patient_id)"

    def all_of(self, criteria: Sequence[Criterion]) -> str:
        return "(" + " AND ".join([self.holds(c) for c in criteria] or ["true"]) + ")"

    def base(self, cohort: Cohort, index_date: date | str | None) -> None:
        columns = ", ".join(f"p.{c}" for c in _PATIENT_COLUMNS)
        scope = (f"EXISTS (SELECT 1 FROM {self.allowed} a WHERE a.patient_id = p.patient_id) "
                 f"AND NOT EXISTS (SELECT 1 FROM {self.denied} d "
                 "WHERE d.resource_id = p.resource_id)")
        if cohort.index_event is None:
            fixed = _as_date(index_date) or cohort.index_date or date.today()
            sql = (f"SELECT p.patient_id, {columns}, CAST({self.bind(fixed)} AS DATE) "
                   f"AS index_date FROM patient p WHERE {scope}")
        else:
            if index_date is not None:
                raise CohortError(f"{cohort.name}: index: the index date is set by an event "
                                  "('first'), so the cohort cannot be run at a fixed date")
            ix = self.index_event(cohort.index_event)
            sql = (f"SELECT p.patient_id, {columns}, ix.index_date FROM patient p "
                   f"JOIN {ix} ix ON ix.patient_id = p.patient_id WHERE {scope}")
        self.ctes.append(f"base AS MATERIALIZED ({sql})")

    def index_event(self, event: Event) -> str:
        t = TABLES[event.kind]
        where = " AND ".join([
            f"EXISTS (SELECT 1 FROM {self.allowed} a WHERE a.patient_id = e.patient_id)",
            *self.event_filters(event, pre_last=False), f"{t.day} IS NOT NULL"])
        return self.cte("ix", f"SELECT e.patient_id, min({t.day}) AS index_date "
                              f"FROM {t.name} e WHERE {where} GROUP BY e.patient_id")

    # --- criteria ------------------------------------------------------------------------

    def criterion(self, criterion: Criterion) -> str:
        if isinstance(criterion, AnyOf):
            parts = [f"SELECT patient_id FROM {self.criterion(c)}" for c in criterion.items]
            return self.cte("c", " UNION ".join(parts))
        if isinstance(criterion, Demographics):
            return self.cte("c", "SELECT b.patient_id FROM base b WHERE "
                                 f"coalesce({self.demographics(criterion)}, false)")
        if criterion.last:
            return self.last_event(criterion)
        return self.event(criterion)

    def event(self, event: Event) -> str:
        t = TABLES[event.kind]
        where = " AND ".join(self.event_filters(event, pre_last=False))
        sql = (f"SELECT e.patient_id FROM {t.name} e JOIN base b ON b.patient_id = e.patient_id "
               f"WHERE {where} GROUP BY e.patient_id")
        if event.min_count > 1:
            sql += f" HAVING count(DISTINCT e.resource_id) >= {self.bind(event.min_count)}"
        return self.cte("c", sql)

    def last_event(self, event: Event) -> str:
        t = TABLES[event.kind]
        pre = " AND ".join(self.event_filters(event, pre_last=True))
        post = " AND ".join(self.value_tests(event)) or "true"
        order = f"{t.order} DESC NULLS LAST, e.resource_id DESC, e.is_component, e.system, e.code"
        sql = (f"SELECT e.patient_id FROM (SELECT e.* FROM {t.name} e JOIN base b "
               f"ON b.patient_id = e.patient_id WHERE {pre} QUALIFY row_number() OVER "
               f"(PARTITION BY e.patient_id ORDER BY {order}) = 1) e WHERE {post}")
        return self.cte("c", sql)

    def event_filters(self, event: Event, *, pre_last: bool) -> list[str]:
        """Row filters of an event criterion over alias ``e`` (``b`` has the index date).

        ``pre_last``: only what selects candidate rows (the value tests come after)."""
        t = TABLES[event.kind]
        out = [f"NOT EXISTS (SELECT 1 FROM {self.denied} d WHERE d.resource_id = e.resource_id)",
               f"NOT coalesce(list_contains({self.bind(list(t.errors))}::VARCHAR[], "
               f"{t.error_column}), false)"]
        if event.codes is not None:
            out.append(self.code_match(event.codes, t.system, t.code))
        if event.status is not None:
            out.append(f"coalesce(list_contains({self.bind(list(event.status))}::VARCHAR[], "
                       f"{t.status}), false)")
        if event.classes is not None:
            out.append(f"coalesce(list_contains({self.bind(list(event.classes))}::VARCHAR[], "
                       "e.class_code), false)")
        if event.window is not None:
            out.extend(self.window(event.window, t.day))
        if event.value is not None and event.value.unit is not None:
            out.append(f"e.unit = {self.bind(event.value.unit)}")
        if pre_last:
            out += ["e.value_number IS NOT NULL"] if event.value is not None else []
            out += ["e.value_code IS NOT NULL"] if event.value_codes is not None else []
        else:
            out.extend(self.value_tests(event))
        return out

    def value_tests(self, event: Event) -> list[str]:
        out = []
        if event.value is not None:
            out.append(f"e.value_number {_OPS[event.value.op]} {self.bind(event.value.value)}")
        if event.value_codes is not None:
            out.append(self.code_match(event.value_codes, "e.value_system", "e.value_code"))
        for comp in event.components:
            tests = [self.code_match(comp.codes, "x.system", "x.code"),
                     f"x.value_number {_OPS[comp.value.op]} {self.bind(comp.value.value)}"]
            if comp.value.unit is not None:
                tests.append(f"x.unit = {self.bind(comp.value.unit)}")
            out.append("EXISTS (SELECT 1 FROM observation x WHERE x.resource_id = e.resource_id "
                       f"AND x.is_component AND {' AND '.join(tests)})")
        return out

    def code_match(self, codes: CodeSet, system: str, code: str) -> str:
        """Qualified codes by a hash semi join on (system, code), bare codes on code alone."""
        names = self.code_ctes.get(codes)
        if names is None:
            qualified = [(s, c) for s, c in zip(codes.systems, codes.codes, strict=True) if s]
            bare = sorted({c for s, c in zip(codes.systems, codes.codes, strict=True) if not s})
            names = (self.code_cte(qualified), self.code_cte([("", c) for c in bare]))
            self.code_ctes[codes] = names
        qualified_cte, bare_cte = names
        tests = []
        if qualified_cte:
            tests.append(f"EXISTS (SELECT 1 FROM {qualified_cte} k WHERE k.system = {system} "
                         f"AND k.code = {code})")
        if bare_cte:
            tests.append(f"{code} IN (SELECT k.code FROM {bare_cte} k)")
        return f"({' OR '.join(tests)})"

    def code_cte(self, pairs: list[tuple[str, str]]) -> str | None:
        if not pairs:
            return None
        systems, codes = self.bind([s for s, _ in pairs]), self.bind([c for _, c in pairs])
        return self.cte("k", f"SELECT DISTINCT unnest({systems}::VARCHAR[]) AS system, "
                             f"unnest({codes}::VARCHAR[]) AS code", materialized=True)

    def window(self, window: Window, day: str) -> list[str]:
        if window.kind == "period":
            if self.period is None:
                raise CohortError("window \"period\" needs an analysis period (given by the "
                                  "algorithm that runs the cohort)")
            lo, hi = self.period
            return [f"{day} >= {self.bind(lo)}", f"{day} <= {self.bind(hi)}"]
        out = []
        for bound, op in ((window.start, ">="), (window.end, "<=")):
            if isinstance(bound, Offset):
                fn, factor = _INTERVAL[bound.unit]
                out.append(f"{day} {op} CAST(b.index_date + "
                           f"{fn}(CAST({self.bind(bound.amount * factor)} AS INTEGER)) AS DATE)")
            elif isinstance(bound, date):
                out.append(f"{day} {op} {self.bind(bound)}")
        return out

    def demographics(self, d: Demographics) -> str:
        tests = []
        if d.gender is not None:
            tests.append(f"list_contains({self.bind(list(d.gender))}::VARCHAR[], b.gender)")
        age = AGE_SQL.format(birth="b.birth_date", index="b.index_date")
        if d.age_min is not None or d.age_max is not None:
            tests.append("b.birth_date <= b.index_date")
        if d.age_min is not None:
            tests.append(f"{age} >= {self.bind(d.age_min)}")
        if d.age_max is not None:
            tests.append(f"{age} <= {self.bind(d.age_max)}")
        if d.alive is not None:
            tests.append(f"{'' if d.alive else 'NOT '}coalesce({ALIVE_SQL}, false)")
        for column, values in d.places:
            tests.append(f"list_contains({self.bind(list(values))}::VARCHAR[], b.{column})")
        return "(" + " AND ".join(tests) + ")"


# Born by and not dead at the index date; deceased without a date counts as dead.
ALIVE_SQL = ("((b.birth_date IS NULL OR b.birth_date <= b.index_date) AND NOT ("
             "(b.deceased_date IS NOT NULL AND b.deceased_date <= b.index_date) OR "
             "(b.deceased_date IS NULL AND coalesce(b.deceased, false))))")


def _as_date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise CohortError(f"index_date: expected a date YYYY-MM-DD, got {str(value)[:40]!r}") \
            from None
