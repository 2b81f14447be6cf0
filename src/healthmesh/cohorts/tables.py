"""The analytic tables the cohort compiler and the algorithms read: names, columns, types.

This is the contract with the view layer (``healthmesh.views``), which builds the real
tables; :func:`create_analytic_tables` makes empty ones with the same columns (tests, a
node with no data yet). Every table starts with ``resource_id`` ("Type/id") and
``patient_id`` (the bare Patient id).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ANALYTIC_TABLES", "create_analytic_tables"]

_KEY = (("resource_id", "VARCHAR"), ("patient_id", "VARCHAR"))
_CODED = (("system", "VARCHAR"), ("code", "VARCHAR"), ("display", "VARCHAR"))

ANALYTIC_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "patient": (*_KEY, ("gender", "VARCHAR"), ("birth_date", "DATE"), ("deceased", "BOOLEAN"),
                ("deceased_date", "DATE"), ("postal_code", "VARCHAR"), ("city", "VARCHAR"),
                ("state", "VARCHAR"), ("country", "VARCHAR")),
    "condition": (*_KEY, *_CODED, ("onset", "DATE"), ("abatement", "DATE"), ("recorded", "DATE"),
                  ("clinical_status", "VARCHAR"), ("verification_status", "VARCHAR"),
                  ("category", "VARCHAR")),
    "observation": (*_KEY, *_CODED, ("effective", "TIMESTAMP"), ("value_number", "DOUBLE"),
                    ("unit", "VARCHAR"), ("value_system", "VARCHAR"), ("value_code", "VARCHAR"),
                    ("status", "VARCHAR"), ("category", "VARCHAR"), ("is_component", "BOOLEAN")),
    "medication": (*_KEY, ("source", "VARCHAR"), *_CODED, ("start", "DATE"),
                   ("status", "VARCHAR")),
    "procedure": (*_KEY, *_CODED, ("performed", "DATE"), ("status", "VARCHAR")),
    "encounter": (*_KEY, ("class_code", "VARCHAR"), ("type_system", "VARCHAR"),
                  ("type_code", "VARCHAR"), ("start", "TIMESTAMP"), ("end", "TIMESTAMP"),
                  ("status", "VARCHAR"), ("service_provider", "VARCHAR")),
    "immunization": (*_KEY, *_CODED, ("occurrence", "DATE"), ("status", "VARCHAR")),
}


def create_analytic_tables(con: Any) -> None:
    """Create every table of :data:`ANALYTIC_TABLES` (empty) on a DuckDB connection."""
    for table, columns in ANALYTIC_TABLES.items():
        cols = ", ".join(f'"{name}" {kind}' for name, kind in columns)
        con.execute(f'CREATE TABLE "{table}" ({cols})')
