"""``summary``: a numeric observation over a cohort, by strata, poolable exactly.

Params::

    {"cohort": {...},
     "observation": {"valueset": "systolic-bp",      # or "codes"; which values
                     "unit": "mm[Hg]",               # optional: only values in this unit
                     "window": {"start": "-365d", "end": "0d"},  # optional, from the index
                     "status": ["final"]},           # optional
     "range": [50, 250],        # required: the histogram's range (same at every site)
     "bins": 50,                # optional (1-1000), default 50
     "use": "last",             # "last" (default): each patient's most recent value;
                                # "all": up to max_per_patient most recent values
     "max_per_patient": 20,     # with "all" (1-1000), default 20
     "clip": false,             # clip values into range before every statistic
     "quantiles": [0.25, 0.5, 0.75],
     "strata": ["sex"], "index_date": "2024-12-31"}

Local output per stratum: ``n`` (count), ``sum`` and ``sum_sq`` (statistics) and
``histogram`` (sketch: ``bins + 2`` counts, see :mod:`.sketch`). Sensitivity: the most
values one patient adds (1 with ``last``, else ``max_per_patient``); the sums are bounded
only with ``clip``. Pooled: ``n``, ``mean``, ``variance`` (sample, exact from n, sum,
sum of squares), ``sd`` and the quantiles (``p25``, ``p50``, ...: at most one bin width
off; ``out_of_range`` names those that fell outside the range).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from healthmesh.cohorts import compile_values
from healthmesh.cohorts.schema import parse_event

from .base import (
    STRATA,
    Algorithm,
    Column,
    LocalResult,
    add_site,
    check_bool,
    check_date,
    check_int,
    check_keys,
    check_strata,
    cohort_param,
    run_query,
    sort_rows,
    strata_select,
    translate,
)
from .errors import AlgorithmError
from .pooling import pool_counts
from .sketch import Histogram, bin_index_sql

__all__ = ["Summary"]

_KEYS = ("cohort", "observation", "range", "bins", "use", "max_per_patient", "clip",
         "quantiles", "strata", "index_date")


class Summary(Algorithm):
    name = "summary"
    version = "1.0.0"
    title = "Mean, variance and quantiles of an observation, by strata"

    def parse(self, params: Any) -> dict[str, Any]:
        p = check_keys(params, _KEYS, ("cohort", "observation", "range"))
        use = p.get("use", "last")
        if use not in ("last", "all"):
            raise AlgorithmError("params.use: expected 'last' or 'all'")
        if "max_per_patient" in p and use != "all":
            raise AlgorithmError("params.max_per_patient: only with \"use\": \"all\"")
        out = {"cohort": cohort_param(p["cohort"]), "use": use,
               "bins": check_int(p.get("bins", 50), "params.bins", 1, 1000),
               "max_per_patient": check_int(p.get("max_per_patient", 20),
                                            "params.max_per_patient", 1, 1000),
               "clip": check_bool(p.get("clip", False), "params.clip"),
               "quantiles": _quantiles(p.get("quantiles", [0.25, 0.5, 0.75])),
               "strata": check_strata(p.get("strata", []), STRATA, "params.strata"),
               "index_date": check_date(p.get("index_date"), "params.index_date"),
               "range": _range(p["range"])}
        out.update(_observation(p["observation"]))
        return out

    def tables(self, checked: dict[str, Any]) -> set[str]:
        return {"observation", *super().tables(checked)}

    def schema(self, checked: dict[str, Any]) -> tuple[Column, ...]:
        return (*(Column(s, "stratum") for s in checked["strata"]), Column("n", "count"),
                Column("sum", "statistic"), Column("sum_sq", "statistic"),
                Column("histogram", "sketch"))

    def compute(self, con: Any, params: dict[str, Any], site: str, allowed: str,
                denied: str) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        per_patient = 1 if params["use"] == "last" else params["max_per_patient"]
        compiled = translate(lambda: compile_values(
            params["cohort"], params["event"], allowed=allowed, denied=denied,
            index_date=params["index_date"], per_patient=per_patient, unit=params["unit"]))
        lo, hi = params["range"]
        sql_params = {**compiled.params, "s_lo": lo, "s_hi": hi, "s_bins": params["bins"]}
        x = "greatest($s_lo, least($s_hi, v.value))" if params["clip"] else "v.value"
        strata = params["strata"]
        select = ", ".join([*strata_select(strata),
                            f"{bin_index_sql('c.x', '$s_lo', '$s_hi', '$s_bins')} AS bin",
                            "count(*) AS n", "sum(c.x) AS s", "sum(c.x * c.x) AS ss"])
        sql = (f"WITH vals AS ({compiled.sql}) SELECT {select} FROM (SELECT v.*, {x} AS x "
               "FROM vals v) c JOIN patient p ON p.patient_id = c.patient_id GROUP BY ALL")
        rows = _by_stratum(run_query(con, sql, sql_params, self.name), strata, params["bins"])
        meta = {"range": [lo, hi], "bins": params["bins"], "quantiles": params["quantiles"]}
        return sort_rows(add_site(rows, strata, site), strata), per_patient, meta

    def pool(self, results: Sequence[Mapping[str, Any] | LocalResult]) -> list[dict[str, Any]]:
        meta = _same_meta(results)
        if meta is None:
            return []
        lo, hi = meta["range"]
        quantiles = meta["quantiles"]
        return pool_counts(results, lambda row, inc: _derive(row, inc, lo, hi, meta["bins"],
                                                             quantiles))


def _observation(value: Any) -> dict[str, Any]:
    path = "params.observation"
    if not isinstance(value, Mapping):
        raise AlgorithmError(f"{path}: expected an object")
    unit = value.get("unit")
    if unit is not None and (not isinstance(unit, str) or not 0 < len(unit) <= 100):
        raise AlgorithmError(f"{path}.unit: expected a unit string")
    body = {k: v for k, v in value.items() if k != "unit"}
    keys = ("codes", "valueset", "window", "status")
    event = translate(lambda: parse_event(body, "observation", path, keys))
    if event.window is not None and event.window.kind == "period":
        raise AlgorithmError(f"{path}.window: summary has no period; use offsets or dates")
    return {"event": event, "unit": unit}


def _range(value: Any) -> tuple[float, float]:
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in value)
    if not ok or value[0] >= value[1]:
        raise AlgorithmError("params.range: expected [low, high] with low < high")
    return float(value[0]), float(value[1])


def _quantiles(value: Any) -> list[float]:
    ok = isinstance(value, list | tuple) and 0 < len(value) <= 20 and all(
        isinstance(q, int | float) and not isinstance(q, bool) and 0 <= q <= 1 for q in value)
    if not ok:
        raise AlgorithmError("params.quantiles: expected 1 to 20 numbers within [0, 1]")
    return [float(q) for q in value]


def _by_stratum(rows: list[dict[str, Any]], strata: Sequence[str],
                bins: int) -> list[dict[str, Any]]:
    sql_strata = [s for s in strata if s != "site"]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[s] for s in sql_strata)
        acc = out.setdefault(key, {**{s: r[s] for s in sql_strata}, "n": 0, "sum": 0.0,
                                   "sum_sq": 0.0, "histogram": [0] * (bins + 2)})
        acc["n"] += r["n"]
        acc["sum"] += r["s"]
        acc["sum_sq"] += r["ss"]
        acc["histogram"][r["bin"]] += r["n"]
    return list(out.values())


def _same_meta(results: Sequence[Mapping[str, Any] | LocalResult]) -> dict[str, Any] | None:
    metas = [r.meta if isinstance(r, LocalResult) else r.get("meta") for r in results]
    if not metas:
        return None
    first = metas[0]
    if not isinstance(first, Mapping) or not {"range", "bins", "quantiles"} <= set(first):
        raise AlgorithmError("results[0].meta: expected 'range', 'bins' and 'quantiles'")
    for i, meta in enumerate(metas[1:], 1):
        if not isinstance(meta, Mapping) or [meta.get(k) for k in ("range", "bins")] != \
                [first[k] for k in ("range", "bins")]:
            raise AlgorithmError(f"results[{i}].meta: histogram layout differs from results[0]")
    return dict(first)


def quantile_name(q: float) -> str:
    return f"p{q * 100:g}"


def _derive(row: dict[str, Any], incomplete: set[str], lo: float, hi: float, bins: int,
            quantiles: list[float]) -> dict[str, Any]:
    n, total, squares = row["n"], row["sum"], row["sum_sq"]
    moments_ok = not incomplete & {"n", "sum", "sum_sq"} and n > 0
    mean = total / n if moments_ok else None
    variance = max(0.0, (squares - total * total / n) / (n - 1)) if moments_ok and n > 1 \
        else None
    out: dict[str, Any] = {"mean": mean, "variance": variance,
                           "sd": math.sqrt(variance) if variance is not None else None}
    sketch_ok = "histogram" not in incomplete and row["histogram"] is not None
    outside = []
    for q in quantiles:
        estimate = Histogram(lo, hi, bins, row["histogram"]).quantile(q) if sketch_ok else None
        out[quantile_name(q)] = estimate[0] if estimate else None
        if estimate and not estimate[1]:
            outside.append(quantile_name(q))
    out["out_of_range"] = outside
    return out
