"""Query plans for SQLite searches: which criterion drives, how the others filter.

SQLite evaluates ``r.rid IN (subquery)`` by materialising the whole subquery,
which is wasteful when another criterion is far more selective (a patient's
300 Observations among a million). So a plan:

* picks a **driver**: a single-value equality on an index table (a reference to
  one resource, a token with system and code, an exact string, a uri). The
  driver's index rows are already ordered by row id for the fixed key, so
  ``FROM sp_x d CROSS JOIN resources r ... ORDER BY d.rid`` walks just the
  matches in order and stops at the page size (keyset paging, streaming);
* filters every other criterion per candidate row with ``EXISTS`` where an
  index makes that a point lookup (token equality via the primary key; dates,
  quantities and numbers via their ``rid`` index), and with ``IN`` otherwise.

Without a driver the first criterion is an ``IN`` (SQLite drives from it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from healthmesh.fhir.search_params import normalise_string, search_params
from healthmesh.fhir.search_query import (
    Criterion,
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    TokenValue,
)

__all__ = ["Plan", "build_plan"]

TABLE = {
    "token": "sp_token",
    "string": "sp_string",
    "date": "sp_date",
    "reference": "sp_reference",
    "quantity": "sp_quantity",
    "number": "sp_number",
    "uri": "sp_uri",
}
_RESOLVE_IS = re.compile(r"resolve\(\) is ([A-Za-z]+)")
_RID_INDEXED = {"date", "quantity", "number"}  # tables with an index on rid
# Which criterion drives when no estimate decides: references (a patient's data) are
# usually the most selective, then tokens with system and code, then exact strings and uris.
_DRIVER_RANK = {"reference": 0, "token": 1, "string": 2, "uri": 3}


@dataclass(slots=True)
class Plan:
    """FROM/WHERE of a search; ``key`` is the row-id column to page by."""

    source: str = "resources r"
    where: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    key: str = "r.rid"
    driver_table: str | None = None
    driver_sql: str = ""
    driver_args: list[Any] = field(default_factory=list)
    driver_unique: bool = True  # one driver row per resource at most
    only_driver: bool = False

    @property
    def where_sql(self) -> str:
        return " AND ".join(self.where)


def build_plan(pid_of: Any, query: SearchQuery, estimate: Any = None) -> Plan:
    """Plan ``query``; ``pid_of(type, code)`` gives parameter ids (None if unknown).

    ``estimate(sql, args)``, when given, counts (up to a cap) the index rows a
    criterion selects; with two or more indexed criteria the smallest one drives.
    """
    rtype = query.resource_type
    plan = Plan()
    criteria = _order_criteria(rtype, list(query.criteria), pid_of, estimate)
    driver = criteria[0] if criteria and _driver_form(rtype, criteria[0], pid_of) else None
    if driver is not None:
        criteria.remove(driver)
        table, sql, args, unique = _driver_form(rtype, driver, pid_of)  # type: ignore[misc]
        plan.source = f"{table} d CROSS JOIN resources r ON r.rid = d.rid"
        plan.key = "d.rid"
        plan.driver_table, plan.driver_sql, plan.driver_args = table, sql, args
        plan.driver_unique = unique
        plan.where.append(sql)
        plan.args.extend(args)
        plan.only_driver = not criteria
    plan.where += ["r.type = ?", "r.content IS NOT NULL"]
    plan.args.append(rtype)
    if query.restrict is not None:
        plan.where.append(query.restrict[0])
        plan.args.extend(query.restrict[1])
        plan.only_driver = False
    for n, c in enumerate(criteria):
        prefer_in = driver is None and n == 0
        sql, args = _filter(rtype, c, pid_of, prefer_in)
        plan.where.append(sql)
        plan.args.extend(args)
    return plan


def _order_criteria(
    rtype: str, criteria: list[Criterion], pid_of: Any, estimate: Any
) -> list[Criterion]:
    """Most promising driver first: by estimated rows when possible, else by kind."""
    indexed = [c for c in criteria if _estimable(c)]
    if estimate is None or len(indexed) < 2:
        ranked = sorted(criteria, key=lambda c: _DRIVER_RANK.get(c.type, 9))
        drivers = [c for c in ranked if _driver_form(rtype, c, pid_of)]
        return drivers[:1] + [c for c in criteria if c not in drivers[:1]]
    sizes = {id(c): _estimate(rtype, c, pid_of, estimate) for c in indexed}
    smallest = min(indexed, key=lambda c: (sizes[id(c)], _DRIVER_RANK.get(c.type, 9)))
    return [smallest] + [c for c in criteria if c is not smallest]


def _estimable(c: Criterion) -> bool:
    return c.type in TABLE and c.modifier not in ("missing", "not", "text")


def _estimate(rtype: str, c: Criterion, pid_of: Any, estimate: Any) -> int:
    pid = pid_of(rtype, c.name) or -1
    sql, args = _ors([_VALUE_SQL[c.type](v, c) for v in c.values])
    return int(estimate(f"SELECT 1 FROM {TABLE[c.type]} WHERE pid = ? AND {sql}", [pid, *args]))


# -- drivers ---------------------------------------------------------------------------


def _driver_form(
    rtype: str, c: Criterion, pid_of: Any
) -> tuple[str, str, list[Any], bool] | None:
    """(table, condition on alias d, args, unique per resource) or None."""
    if len(c.values) != 1 or c.type in ("id", "lastUpdated"):
        return None
    type_modifier = c.type == "reference" and (c.modifier or "")[:1].isupper()
    exact = c.type == "string" and c.modifier == "exact"
    if c.modifier is not None and not (type_modifier or exact):
        return None
    pid = pid_of(rtype, c.name)
    if pid is None:
        return None
    v = c.values[0]
    if c.type == "token" and isinstance(v, TokenValue) and v.system is not None and v.code:
        sql = "d.pid = ? AND d.code = ? AND d.system = ?"
        return "sp_token", sql, [pid, v.code, v.system], True
    if c.type == "reference" and isinstance(v, ReferenceValue) and v.id:
        target = _reference_type(rtype, c, v)
        if target is None:  # rows of several target types: SQLite sorts them by rid
            return "sp_reference", "d.pid = ? AND d.tid = ?", [pid, v.id], False
        sql = "d.pid = ? AND d.tid = ? AND d.ttype = ?"
        return "sp_reference", sql, [pid, v.id, target], False
    if c.type == "string" and c.modifier == "exact":
        text = str(v)
        return "sp_string", "d.pid = ? AND d.norm = ? AND d.exact = ?", \
            [pid, normalise_string(text), text], True
    if c.type == "uri" and c.modifier is None:
        return "sp_uri", "d.pid = ? AND d.value = ?", [pid, str(v)], True
    return None


def _reference_type(rtype: str, c: Criterion, v: ReferenceValue) -> str | None:
    if v.type:
        return v.type
    if c.modifier and c.modifier[:1].isupper():
        return c.modifier
    param = search_params(rtype).get(c.name)
    if param is None:
        return None
    if len(param.targets) == 1:
        return param.targets[0]
    # e.g. "Observation.subject.where(resolve() is Patient)": every row is a Patient
    found = _RESOLVE_IS.findall(param.expression)
    branches = param.expression.count("|") + 1
    if found and len(found) == branches and len(set(found)) == 1:
        return str(found[0])
    return None


# -- filters ---------------------------------------------------------------------------


def _filter(rtype: str, c: Criterion, pid_of: Any, prefer_in: bool) -> tuple[str, list[Any]]:
    if c.type == "id":
        marks = ",".join("?" * len(c.values))
        return f"r.id IN ({marks})", list(c.values)
    if c.type == "lastUpdated":
        return _ors([_date_sql(v, "r.updated", "(r.updated + 1)") for v in c.values])
    pid = pid_of(rtype, c.name) or -1
    table = TABLE[c.type]
    if c.modifier == "missing":
        op = "NOT IN" if c.missing else "IN"
        return f"r.rid {op} (SELECT rid FROM {table} WHERE pid = ?)", [pid]
    if c.modifier == "text" and c.type == "token":
        conds = [("(text >= ? AND text < ?)", _prefix_range(str(v))) for v in c.values]
        sql, args = _ors(conds)
        return f"r.rid IN (SELECT rid FROM sp_token_text WHERE pid = ? AND {sql})", [pid, *args]
    if c.modifier != "not" and not prefer_in:
        exists = _exists_form(c, table, pid)
        if exists is not None:
            return exists
    sql, args = _ors([_VALUE_SQL[c.type](v, c) for v in c.values])
    op = "NOT IN" if c.modifier == "not" else "IN"
    return f"r.rid {op} (SELECT rid FROM {table} WHERE pid = ? AND {sql})", [pid, *args]


def _exists_form(c: Criterion, table: str, pid: int) -> tuple[str, list[Any]] | None:
    """EXISTS per candidate row, when an index makes it a point lookup."""
    if c.type in _RID_INDEXED:
        sql, args = _ors([_VALUE_SQL[c.type](v, c) for v in c.values])
        return f"EXISTS (SELECT 1 FROM {table} x WHERE x.rid = r.rid AND x.pid = ? AND {sql})", \
            [pid, *args]
    tokens = [v for v in c.values if isinstance(v, TokenValue) and v.system is not None and v.code]
    if c.type == "token" and len(tokens) == len(c.values):
        one = "EXISTS (SELECT 1 FROM sp_token x WHERE x.pid = ? AND x.code = ? AND x.system = ? " \
            "AND x.rid = r.rid)"
        return _ors([(one, [pid, v.code, v.system]) for v in tokens])
    return None


def _ors(parts: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    args: list[Any] = []
    for _sql, a in parts:
        args.extend(a)
    return "(" + " OR ".join(sql for sql, _a in parts) + ")", args


def _prefix_range(text: str) -> list[str]:
    norm = normalise_string(text)
    return [norm, norm + "\U0010ffff"]


def _date_sql(v: object, lo: str = "lo", hi: str = "hi") -> tuple[str, list[Any]]:
    assert isinstance(v, DateValue)
    p = v.prefix
    if p == "eq":
        return f"({lo} >= ? AND {hi} <= ?)", [v.lo, v.hi]
    if p == "ne":
        return f"NOT ({lo} >= ? AND {hi} <= ?)", [v.lo, v.hi]
    if p == "gt":
        return f"{hi} > ?", [v.hi]
    if p == "lt":
        return f"{lo} < ?", [v.lo]
    if p == "ge":
        return f"{hi} > ?", [v.lo]
    if p == "le":
        return f"{lo} < ?", [v.hi]
    if p == "sa":
        return f"{lo} >= ?", [v.hi]
    if p == "eb":
        return f"{hi} <= ?", [v.lo]
    # ap: overlap with the value widened by 10% of its distance from now (at least a day)
    now = int(time.time() * 1_000_000)
    width = max(86_400_000_000, abs(now - v.lo) // 10)
    return f"({lo} < ? AND {hi} > ?)", [v.hi + width, v.lo - width]


def _number_sql(n: NumberValue, col: str = "value") -> tuple[str, list[Any]]:
    p = n.prefix
    if p == "eq":
        return f"({col} >= ? AND {col} < ?)", [n.lo, n.hi]
    if p == "ne":
        return f"NOT ({col} >= ? AND {col} < ?)", [n.lo, n.hi]
    if p in ("gt", "sa"):
        return f"{col} > ?", [n.value]
    if p in ("lt", "eb"):
        return f"{col} < ?", [n.value]
    if p == "ge":
        return f"{col} >= ?", [n.value]
    if p == "le":
        return f"{col} <= ?", [n.value]
    spread = abs(n.value) * 0.1
    return f"({col} >= ? AND {col} <= ?)", [n.value - spread, n.value + spread]


def _token_sql(v: object, c: Criterion) -> tuple[str, list[Any]]:
    assert isinstance(v, TokenValue)
    if v.system is None:
        return "code = ?", [v.code]
    if v.code is None:
        return "system = ?", [v.system]
    return "(code = ? AND system = ?)", [v.code, v.system]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string_sql(v: object, c: Criterion) -> tuple[str, list[Any]]:
    text = str(v)
    if c.modifier == "exact":
        return "exact = ?", [text]
    if c.modifier == "contains":
        return "norm LIKE ? ESCAPE '\\'", [f"%{_like_escape(normalise_string(text))}%"]
    return "(norm >= ? AND norm < ?)", _prefix_range(text)


def _reference_sql(v: object, c: Criterion) -> tuple[str, list[Any]]:
    assert isinstance(v, ReferenceValue)
    if v.url is not None and v.id is None:
        return "raw = ?", [v.url]
    rtype = v.type or (c.modifier if c.modifier and c.modifier[:1].isupper() else None)
    if rtype is None:
        return "tid = ?", [v.id]
    return "(tid = ? AND ttype = ?)", [v.id, rtype]


def _quantity_sql(v: object, c: Criterion) -> tuple[str, list[Any]]:
    assert isinstance(v, QuantityValue)
    sql, args = _number_sql(v.number)
    if v.system is not None and v.code is not None:
        return f"({sql} AND system = ? AND code = ?)", [*args, v.system, v.code]
    if v.code is not None:
        return f"({sql} AND (code = ? OR unit = ?))", [*args, v.code, v.code]
    if v.system is not None:
        return f"({sql} AND system = ?)", [*args, v.system]
    return sql, args


def _uri_sql(v: object, c: Criterion) -> tuple[str, list[Any]]:
    text = str(v)
    if c.modifier == "below":
        return "value LIKE ? ESCAPE '\\'", [_like_escape(text) + "%"]
    if c.modifier == "above":
        return "? LIKE (value || '%')", [text]
    return "value = ?", [text]


def _number_value_sql(v: object, c: Criterion) -> tuple[str, list[Any]]:
    assert isinstance(v, NumberValue)
    return _number_sql(v)


_VALUE_SQL = {
    "token": _token_sql,
    "string": _string_sql,
    "date": lambda v, c: _date_sql(v),
    "reference": _reference_sql,
    "quantity": _quantity_sql,
    "number": _number_value_sql,
    "uri": _uri_sql,
}
