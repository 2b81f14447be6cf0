"""What the dashboard can show: the shipped indicators, and disease prevalence and
incidence per 1,000 for a few conditions — each a federated task the nodes know.

Every measure has a numerator and a denominator per site and period (the ``indicator``,
``prevalence`` and ``incidence`` algorithms all answer that way), so one table, CSV and
chart layout serves them all; only the unit differs (a proportion, or per 1,000).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from healthmesh.algorithms.indicator import indicators
from healthmesh.cohorts.valuesets import load_data

__all__ = ["Measure", "measures", "task_params"]

# conditions with prevalence and incidence on the dashboard: (value set, display name)
RATE_CONDITIONS = (("hypertension", "essential hypertension"), ("diabetes", "diabetes"),
                   ("ckd", "chronic kidney disease"))
RATE_NOTES = {
    "prevalence": "Denominator: everyone alive in the period (born by its end, not dead "
                  "before its start). Numerator: those of them with the condition dated on "
                  "or before the period's end. Crude rate per 1,000.",
    "incidence": "Denominator: everyone alive in the period. Numerator: those whose first "
                 "dated condition falls within the period. Crude rate per 1,000 "
                 "population (not per person-time at risk).",
}


@dataclass(frozen=True)
class Measure:
    """One dashboard measure: the task that computes it and how to read it."""

    name: str
    title: str
    algorithm: str  # indicator | prevalence | incidence
    notes: str
    source: str
    unit: str  # proportion | per1000
    definition: dict[str, Any] = field(default_factory=dict)
    condition: str | None = None


@functools.cache
def measures() -> dict[str, Measure]:
    """Every measure by name: the indicators first, then prevalence and incidence."""
    out: dict[str, Measure] = {}
    raw = load_data("indicators.json")
    for name, found in indicators().items():
        out[name] = Measure(name, found.title, "indicator", found.notes, found.source,
                            "proportion", {"denominator": raw[name]["denominator"],
                                           "numerator": raw[name]["numerator"]})
    for valueset, label in RATE_CONDITIONS:
        for kind in ("prevalence", "incidence"):
            out[f"{valueset}-{kind}"] = Measure(
                f"{valueset}-{kind}", f"{kind.capitalize()} of {label} (per 1,000)", kind,
                RATE_NOTES[kind], f"healthmesh value set '{valueset}'", "per1000",
                {"condition": {"valueset": valueset},
                 "population": "everyone alive in the period"}, valueset)
    return out


def task_params(measure: Measure, period: str, strata: list[str]) -> dict[str, Any]:
    """The federated task's parameters for ``measure`` over ``period``."""
    params: dict[str, Any] = {"period": period, "strata": strata}
    if len(period) == 4:
        params["by"] = "month"
    if measure.algorithm == "indicator":
        return {"indicator": measure.name, **params}
    return {"condition": {"valueset": measure.condition}, **params}
