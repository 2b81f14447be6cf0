"""``prevalence`` and ``incidence`` of a condition over time, per 1,000.

Params::

    {"condition": {"valueset": "diabetes"},   # or "codes"; optional "status" (clinical)
     "period": {"from": "2020", "to": "2024"}, # "2024", "2024-03" or {"from", "to"}
     "by": "year",                             # optional: split by "year" or "month"
     "population": {...},                      # optional cohort, evaluated at each period's
                                               # end (its windows may say "period")
     "strata": ["sex", "age_band"]}            # site, sex, age_band, state, city, ...

For each period: **denominator** = the population alive in the period (born on or before
its end, not dead before its start; a patient marked deceased without a date counts as
dead, one without a birth date is left out); **numerator** = those of them with the
condition — prevalence: a condition dated on or before the period end; incidence: the
first dated condition falls within the period. Dates are onset, else recorded date;
undated conditions are ignored. The rate is the crude rate per 1,000 population, not per
person-time at risk (prevalent cases stay in the incidence denominator). ``age_band`` is
the age at the period end.

Output: ``period`` and the strata (stratum), ``numerator`` and ``denominator`` (counts);
strata with an empty denominator are not listed. Sensitivity 1 per cell: a patient is in
one stratum per period (but in every period). Pooled: adds ``rate_per_1000``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from healthmesh.cohorts import Cohort, compile_cohort
from healthmesh.cohorts.model import Window
from healthmesh.cohorts.schema import parse_event

from .base import (
    STRATA,
    Algorithm,
    Column,
    LocalResult,
    add_site,
    check_keys,
    check_strata,
    cohort_param,
    cohort_tables,
    run_query,
    sort_rows,
    strata_select,
    translate,
    wrap,
)
from .errors import AlgorithmError
from .periods import Period, parse_period, split_period
from .pooling import pool_counts

__all__ = ["Incidence", "Prevalence"]

RATE_STRATA = tuple(s for s in STRATA if s != "year")
_DEAD_BEFORE_START = ("((p.deceased_date IS NOT NULL AND p.deceased_date < $r_start) OR "
                      "(p.deceased_date IS NULL AND coalesce(p.deceased, false)))")


class _Rate(Algorithm):
    incident: bool = False

    def parse(self, params: Any) -> dict[str, Any]:
        p = check_keys(params, ("condition", "period", "by", "population", "strata"),
                       ("condition", "period"))
        population = cohort_param(p["population"], "params.population") \
            if "population" in p else Cohort("population")
        if population.index_event is not None:
            raise AlgorithmError("params.population.index: the index date is each period's "
                                 "end; an event index cannot be used here")
        condition = translate(lambda: parse_event(p["condition"], "condition",
                                                  "params.condition",
                                                  ("codes", "valueset", "status")))
        return {"condition": condition, "population": population, "by": p.get("by"),
                "periods": split_period(parse_period(p["period"]), p.get("by")),
                "strata": check_strata(p.get("strata", []), RATE_STRATA, "params.strata")}

    def tables(self, checked: dict[str, Any]) -> set[str]:
        return {"condition", *cohort_tables(checked["population"])}

    def schema(self, checked: dict[str, Any]) -> tuple[Column, ...]:
        return (Column("period", "stratum"), *(Column(s, "stratum") for s in checked["strata"]),
                Column("numerator", "count"), Column("denominator", "count"))

    def compute(self, con: Any, params: dict[str, Any], site: str, allowed: str,
                denied: str) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        keys = ("period", *params["strata"])
        rows = []
        for period in params["periods"]:
            found = self._period(con, params, period, allowed, denied)
            rows += [{"period": period.label, **r} for r in found]
        rows = sort_rows(add_site(rows, keys, site), keys)
        return rows, 1, {"periods": [p.label for p in params["periods"]]}

    def _period(self, con: Any, params: dict[str, Any], period: Period, allowed: str,
                denied: str) -> list[dict[str, Any]]:
        condition = params["condition"]
        before = period.start - timedelta(days=1)
        if self.incident:
            flags = {"is_case": [replace(condition, window=Window("absolute", period.start,
                                                                  period.end))],
                     "is_prior": [replace(condition, window=Window("absolute", None, before))]}
            numerator = "c.is_case AND NOT c.is_prior"
        else:
            flags = {"is_case": [replace(condition, window=Window("absolute", None, period.end))]}
            numerator = "c.is_case"
        compiled = translate(lambda: compile_cohort(
            params["population"], allowed=allowed, denied=denied, index_date=period.end,
            period=(period.start, period.end), flags=flags))
        select = ", ".join([*strata_select(params["strata"]),
                            f"count(*) FILTER (WHERE {numerator}) AS numerator",
                            "count(*) AS denominator"])
        tail = (f"WHERE p.birth_date <= $r_end AND NOT {_DEAD_BEFORE_START}"
                + (" GROUP BY ALL" if strata_select(params["strata"]) else ""))
        sql_params = {**compiled.params, "r_start": period.start, "r_end": period.end}
        rows = run_query(con, wrap(compiled, select, tail), sql_params, self.name)
        return [r for r in rows if r["denominator"]]

    def pool(self, results: Sequence[Mapping[str, Any] | LocalResult]) -> list[dict[str, Any]]:
        return pool_counts(results, _rate_per_1000)


def _rate_per_1000(row: dict[str, Any], incomplete: set[str]) -> dict[str, Any]:
    ok = not incomplete & {"numerator", "denominator"} and row["denominator"] > 0
    return {"rate_per_1000": 1000 * row["numerator"] / row["denominator"] if ok else None}


class Prevalence(_Rate):
    name = "prevalence"
    version = "1.0.0"
    title = "Prevalence of a condition per period, per 1,000 alive"
    incident = False


class Incidence(_Rate):
    name = "incidence"
    version = "1.0.0"
    title = "Incidence (first onset in the period) of a condition, per 1,000 alive"
    incident = True
