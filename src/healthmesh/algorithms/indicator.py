"""``indicator``: a named public-health indicator per site and period.

The definitions ship in ``healthmesh/cohorts/data/indicators.json``: a denominator cohort
and the extra criteria of the numerator, evaluated with the index date at each period's
end and ``"window": "period"`` meaning the period (see that file's notes for each one:
``hypertension-control``, ``diabetes-control``, ``immunisation-coverage``,
``influenza-coverage-65``). Params::

    {"indicator": "hypertension-control",
     "period": "2024",            # "2024", "2024-03" or {"from", "to"}
     "by": "month",               # optional: split by "year" or "month"
     "strata": ["sex"]}           # optional: sex, age_band, state, city, postal_code, country

Output: ``site``, ``period`` and the strata (stratum), ``numerator`` and ``denominator``
(counts); one query per period. Strata with an empty denominator are not listed.
Sensitivity 1. Pooled: adds ``rate`` (numerator / denominator, a proportion), None when
either part is incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from healthmesh.cohorts import Cohort, compile_cohort, parse_cohort
from healthmesh.cohorts.model import Criterion
from healthmesh.cohorts.schema import parse_criteria
from healthmesh.cohorts.valuesets import load_data

from .base import (
    Algorithm,
    Column,
    LocalResult,
    check_keys,
    check_strata,
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

__all__ = ["Indicator", "IndicatorDefinition", "indicators"]

INDICATOR_STRATA = ("sex", "age_band", "state", "city", "postal_code", "country")


@dataclass(frozen=True, slots=True)
class IndicatorDefinition:
    name: str
    title: str
    source: str
    notes: str
    denominator: Cohort
    numerator: tuple[Criterion, ...]


@cache
def indicators() -> dict[str, IndicatorDefinition]:
    """The shipped indicator definitions by name (checked when first read)."""
    out = {}
    for name, raw in load_data("indicators.json").items():
        if name.startswith("_"):
            continue
        out[name] = IndicatorDefinition(
            name, raw["title"], raw["source"], raw["notes"],
            parse_cohort(raw["denominator"], f"{name}.denominator"),
            parse_criteria(raw["numerator"], f"{name}.numerator"))
    return out


class Indicator(Algorithm):
    name = "indicator"
    version = "1.0.0"
    title = "Named public-health indicator: numerator and denominator per site and period"

    def parse(self, params: Any) -> dict[str, Any]:
        p = check_keys(params, ("indicator", "period", "by", "strata"), ("indicator", "period"))
        definition = indicators().get(p["indicator"]) if isinstance(p["indicator"], str) \
            else None
        if definition is None:
            raise AlgorithmError(f"params.indicator: unknown indicator "
                                 f"{str(p['indicator'])[:60]!r} "
                                 f"(known: {', '.join(sorted(indicators()))})")
        return {"definition": definition, "by": p.get("by"),
                "periods": split_period(parse_period(p["period"]), p.get("by")),
                "strata": check_strata(p.get("strata", []), INDICATOR_STRATA, "params.strata")}

    def tables(self, checked: dict[str, Any]) -> set[str]:
        definition: IndicatorDefinition = checked["definition"]
        return cohort_tables(definition.denominator, definition.numerator)

    def strata_used(self, params: Any) -> set[str]:
        return {"site", *super().strata_used(params)}

    def schema(self, checked: dict[str, Any]) -> tuple[Column, ...]:
        return (Column("site", "stratum"), Column("period", "stratum"),
                *(Column(s, "stratum") for s in checked["strata"]),
                Column("numerator", "count"), Column("denominator", "count"))

    def compute(self, con: Any, params: dict[str, Any], site: str, allowed: str,
                denied: str) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        keys = ("site", "period", *params["strata"])
        rows = []
        for period in params["periods"]:
            found = self._period(con, params, period, allowed, denied)
            rows += [{"site": site, "period": period.label, **r} for r in found]
        meta = {"indicator": params["definition"].name,
                "periods": [p.label for p in params["periods"]]}
        return sort_rows(rows, keys), 1, meta

    def _period(self, con: Any, params: dict[str, Any], period: Period, allowed: str,
                denied: str) -> list[dict[str, Any]]:
        definition: IndicatorDefinition = params["definition"]
        compiled = translate(lambda: compile_cohort(
            definition.denominator, allowed=allowed, denied=denied, index_date=period.end,
            period=(period.start, period.end), flags={"in_numerator": definition.numerator}))
        select = strata_select(params["strata"])
        sql = wrap(compiled, ", ".join([*select, "count(*) FILTER (WHERE c.in_numerator) "
                                        "AS numerator", "count(*) AS denominator"]),
                   "GROUP BY ALL" if select else "")
        rows = run_query(con, sql, compiled.params, self.name)
        return [r for r in rows if r["denominator"]]

    def pool(self, results: Sequence[Mapping[str, Any] | LocalResult]) -> list[dict[str, Any]]:
        return pool_counts(results, _rate)


def _rate(row: dict[str, Any], incomplete: set[str]) -> dict[str, Any]:
    ok = not incomplete & {"numerator", "denominator"} and row["denominator"] > 0
    return {"rate": row["numerator"] / row["denominator"] if ok else None}
