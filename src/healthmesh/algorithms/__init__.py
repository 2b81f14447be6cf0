"""The vetted federated algorithms: their local part and the hub's pooling.

A researcher's question names an algorithm and its parameters; each node runs the local
part on its own analytic tables (DuckDB) inside the consent scope and hands the result to
disclosure control (suppression, noise: :mod:`healthmesh.privacy`); the hub pools the
released results of all sites::

    algorithm = ALGORITHMS["count"]
    load_consent_scope(con, allowed_ids, denied_ids)        # healthmesh.cohorts
    local = algorithm.run_local(con, {"cohort": cohort, "strata": ["sex"]}, site="north")
    ...                                                      # disclosure control, transport
    pooled = algorithm.pool([released_north, released_south])

Registry (name: what it answers):

* ``count``: cohort count by strata (site, sex, age_band, year, state, city, ...);
* ``crosstab``: full grid of 2-3 categorical columns over a cohort;
* ``summary``: n, mean, variance and quantiles (mergeable histogram) of an observation;
* ``prevalence`` / ``incidence``: a condition per year or month, per 1,000 alive;
* ``indicator``: named indicators (hypertension-control, diabetes-control, ...).

Each :class:`Algorithm` has ``name``, ``version``, ``check_params(params)`` (alias
``check``; raises :class:`AlgorithmError` naming the parameter; checked parameters may be
passed on as they are), ``output_schema(params)`` (columns of kind stratum / count /
statistic / sketch), ``tables_used(params)`` and ``strata_used(params)`` (what an
agreement must allow), ``run_local(con, params, *, site, allowed, denied)`` returning a
:class:`LocalResult`, ``disclose(local, rules)`` (disclosure control with
:mod:`healthmesh.privacy`, see :mod:`.disclose`) and ``pool(results)`` (see
:mod:`.pooling`).
"""

from types import MappingProxyType

from healthmesh.cohorts import load_consent_scope

from .base import Algorithm, Column, LocalResult
from .count import Count, Crosstab
from .errors import AlgorithmError
from .indicator import Indicator, indicators
from .periods import Period, parse_period, split_period
from .pooling import pool_counts, released
from .rates import Incidence, Prevalence
from .sketch import Histogram
from .summary import Summary

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmError",
    "Column",
    "Histogram",
    "LocalResult",
    "Period",
    "get_algorithm",
    "indicators",
    "load_consent_scope",
    "parse_period",
    "pool_counts",
    "released",
    "split_period",
]

ALGORITHMS: MappingProxyType[str, Algorithm] = MappingProxyType({
    a.name: a for a in (Count(), Crosstab(), Summary(), Prevalence(), Incidence(), Indicator())
})


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name``, or :class:`AlgorithmError`."""
    algorithm = ALGORITHMS.get(name)
    if algorithm is None:
        raise AlgorithmError(f"unknown algorithm {str(name)[:60]!r} "
                             f"(known: {', '.join(sorted(ALGORITHMS))})")
    return algorithm
