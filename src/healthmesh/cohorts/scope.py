"""Load the consent scope of one query into DuckDB temp tables.

The caller (the node, after its consent decision) says which patients may be used and
which of their resources may not (records of partially consented patients); every query
the cohort compiler and the algorithms generate reads patients only from the first table
and ignores rows whose ``resource_id`` is in the second.

Bulk loading goes through a registered pandas DataFrame: 100,000 ids load in about 0.1 s,
where ``executemany`` takes about 0.5 ms per id (measured on DuckDB 2.0).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import count
from typing import Any

import pandas as pd

from .compile import quote

__all__ = ["load_consent_scope"]

_views = count()


def load_consent_scope(con: Any, allowed_patient_ids: Iterable[str],
                       denied_resource_ids: Iterable[str] = (), *,
                       allowed: str = "allowed_patient", denied: str = "denied_resource",
                       everyone: bool = False) -> None:
    """(Re)create the temp tables ``allowed(patient_id)`` and ``denied(resource_id)``.

    Ids are deduplicated; None is skipped. Both tables have a primary key. With
    ``everyone`` (the consent scope is every patient of the node, e.g. public health
    permitted by law) ``allowed`` is a view of the ``patient`` table instead: loading
    every id would be the largest cost of a task."""
    is_view = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ? "
                          "AND temporary", [allowed]).fetchone()[0]
    if everyone:
        con.execute(f"DROP TABLE IF EXISTS {quote(allowed)}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(allowed)} AS "
                    "SELECT DISTINCT patient_id FROM patient")
        return _load(con, quote(denied), "resource_id", denied_resource_ids)
    if is_view:
        con.execute(f"DROP VIEW {quote(allowed)}")
    _load(con, quote(allowed), "patient_id", allowed_patient_ids)
    _load(con, quote(denied), "resource_id", denied_resource_ids)


def _load(con: Any, table: str, column: str, ids: Iterable[str]) -> None:
    values = [i for i in dict.fromkeys(ids) if i is not None]
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({column} VARCHAR PRIMARY KEY)")
    if not values:
        return
    view = f"_healthmesh_scope_{next(_views)}"
    frame = pd.DataFrame({column: pd.Series(values, dtype=object)})
    con.register(view, frame)
    try:
        con.execute(f"INSERT INTO {table} SELECT CAST({column} AS VARCHAR) FROM {view}")
    finally:
        con.unregister(view)
