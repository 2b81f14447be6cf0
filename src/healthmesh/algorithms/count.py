"""``count`` and ``crosstab``: how many cohort members, by strata.

count params::

    {"cohort": {...},                 # a cohort definition (healthmesh.cohorts)
     "strata": ["sex", "age_band"],   # optional; site, sex, age_band, year, state, city,
                                      # postal_code, country (at most 4)
     "index_date": "2024-12-31",      # optional: the cohort's index date
     "zeros": false}                  # list zero strata (only with site/sex/age_band)

Output: the strata (``stratum``) and ``count`` (``count``); sensitivity 1 (a patient is in
one stratum). ``age_band`` is the age at the index date in 10-year bands ``0-9`` ...
``80-89``, ``90+`` (``unknown`` without a birth date); ``year`` is the index date's year;
a missing value is ``unknown``. Strata with no member are left out, unless ``zeros`` is
true: then every combination is listed, which is only honest when each stratum has a fixed,
public list of values (site, sex, age_band); listing zero rows for ``state`` or ``city``
would disclose which places occur in the node's data, so ``zeros`` refuses them.

crosstab params: ``{"cohort", "columns": [2 or 3 strata], "index_date"?}``. Output: the
full grid of the levels seen in the cohort (a fixed-domain stratum: all its levels) with
``count``, zeros included; the levels are those already disclosed by the non-zero cells.
"""

from __future__ import annotations

from typing import Any

from healthmesh.cohorts import compile_cohort

from .base import (
    FIXED_DOMAINS,
    STRATA,
    Algorithm,
    Column,
    add_site,
    check_bool,
    check_date,
    check_keys,
    check_strata,
    cohort_param,
    fill_zeros,
    run_query,
    sort_rows,
    strata_select,
    translate,
    wrap,
)
from .errors import AlgorithmError

__all__ = ["Count", "Crosstab"]


class Count(Algorithm):
    name = "count"
    version = "1.0.0"
    title = "Cohort count by strata"

    def parse(self, params: Any) -> dict[str, Any]:
        p = check_keys(params, ("cohort", "strata", "index_date", "zeros"), ("cohort",))
        out = {"cohort": cohort_param(p["cohort"]),
               "strata": check_strata(p.get("strata", []), STRATA, "params.strata"),
               "index_date": check_date(p.get("index_date"), "params.index_date"),
               "zeros": check_bool(p.get("zeros", False), "params.zeros")}
        open_domain = [s for s in out["strata"] if s != "site" and s not in FIXED_DOMAINS]
        if out["zeros"] and open_domain:
            raise AlgorithmError(f"params.zeros: zero rows can only be listed for site, sex and "
                                 f"age_band; {open_domain[0]!r} takes its values from the data")
        return out

    def schema(self, checked: dict[str, Any]) -> tuple[Column, ...]:
        return (*(Column(s, "stratum") for s in checked["strata"]), Column("count", "count"))

    def compute(self, con: Any, params: dict[str, Any], site: str, allowed: str,
                denied: str) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        strata = params["strata"]
        rows = count_rows(con, params, strata, allowed, denied, self.name)
        rows = add_site(rows, strata, site)
        if params["zeros"] or not [s for s in strata if s != "site"]:
            levels = {**FIXED_DOMAINS, "site": (site,)}
            rows = fill_zeros(rows, strata, levels, ("count",))
        return sort_rows(rows, strata), 1, {"index_date": _iso(params["index_date"])}


class Crosstab(Algorithm):
    name = "crosstab"
    version = "1.0.0"
    title = "Cross-tabulation of 2 or 3 categorical columns over a cohort"

    def parse(self, params: Any) -> dict[str, Any]:
        p = check_keys(params, ("cohort", "columns", "index_date"), ("cohort", "columns"))
        return {"cohort": cohort_param(p["cohort"]),
                "strata": check_strata(p["columns"], STRATA, "params.columns", low=2, high=3),
                "index_date": check_date(p.get("index_date"), "params.index_date")}

    def schema(self, checked: dict[str, Any]) -> tuple[Column, ...]:
        return (*(Column(s, "stratum") for s in checked["strata"]), Column("count", "count"))

    def compute(self, con: Any, params: dict[str, Any], site: str, allowed: str,
                denied: str) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        strata = params["strata"]
        rows = add_site(count_rows(con, params, strata, allowed, denied, self.name), strata, site)
        levels = {s: FIXED_DOMAINS.get(s) or sorted({r[s] for r in rows}) for s in strata}
        levels["site"] = (site,)
        rows = fill_zeros(rows, strata, levels, ("count",))
        return sort_rows(rows, strata), 1, {"index_date": _iso(params["index_date"])}


def count_rows(con: Any, params: dict[str, Any], strata: tuple[str, ...], allowed: str,
               denied: str, algorithm: str) -> list[dict[str, Any]]:
    """Members counted per combination of the SQL strata (no row when none)."""
    compiled = translate(lambda: compile_cohort(params["cohort"], allowed=allowed, denied=denied,
                                                index_date=params["index_date"]))
    select = strata_select(strata)
    group = " GROUP BY ALL" if select else ""
    sql = wrap(compiled, ", ".join([*select, "count(*) AS count"]), group)
    rows = run_query(con, sql, compiled.params, algorithm)
    return [r for r in rows if r["count"]]


def _iso(day: Any) -> str | None:
    return day.isoformat() if day is not None else None
