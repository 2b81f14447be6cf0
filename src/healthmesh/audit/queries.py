"""Read queries on the audit file: filtered pages of entries, newest or oldest first.

Filters use the indexes of :mod:`healthmesh.audit.schema`: ``patient`` the
``entry_patients`` table (who looked at that patient's data), ``actor`` the
``(actor, seq)`` index, ``since``/``until`` the time index. Records are parsed (and
validated) as they are read.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from healthmesh.audit.errors import AuditError
from healthmesh.audit.records import AuditEntry, AuditRecord

__all__ = ["select_entries", "select_page"]


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(row[0], AuditRecord.from_json(row[1]), bytes(row[2]).hex())


def _filters(
    patient: str | None, actor: str | None, since: int | None, until: int | None,
    action: str | None,
) -> tuple[str, str, list[Any]]:
    """The JOIN, WHERE and parameters of a filtered query."""
    join, clauses, params = "", [], list[Any]()
    if patient is not None:
        join = " JOIN entry_patients p ON p.seq = e.seq"
        clauses.append("p.patient = ?")
        params.append(patient.removeprefix("Patient/"))
    for column, value, op in (("actor", actor, "="), ("time", since, ">="),
                              ("time", until, "<"), ("action", action, "=")):
        if value is not None:
            clauses.append(f"e.{column} {op} ?")
            params.append(value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return join, where, params


def select_entries(
    conn: sqlite3.Connection, *, patient: str | None, actor: str | None,
    since: int | None, until: int | None, action: str | None,
    limit: int, offset: int, newest_first: bool,
) -> list[AuditEntry]:
    """One page of entries matching every given filter (``since <= time < until``)."""
    if limit < 0 or offset < 0:
        raise AuditError("limit and offset must not be negative")
    join, where, params = _filters(patient, actor, since, until, action)
    order = "DESC" if newest_first else "ASC"
    key = "p.seq" if join else "e.seq"  # p.seq walks the patient index in order, no sort
    sql = (f"SELECT e.seq, e.record, e.hash FROM entries e{join}{where} "
           f"ORDER BY {key} {order} LIMIT ? OFFSET ?")
    return [_entry(row) for row in conn.execute(sql, [*params, limit, offset]).fetchall()]


def select_page(
    conn: sqlite3.Connection, after: int, since: int | None, batch: int
) -> list[AuditEntry]:
    """Up to ``batch`` entries after position ``after`` (time at or after ``since``)."""
    sql = "SELECT seq, record, hash FROM entries WHERE seq > ?"
    params: list[Any] = [after]
    if since is not None:
        sql += " AND time >= ?"
        params.append(since)
    rows = conn.execute(f"{sql} ORDER BY seq LIMIT ?", [*params, batch]).fetchall()
    return [_entry(row) for row in rows]
