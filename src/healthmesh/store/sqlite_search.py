"""Compile a parsed :class:`~healthmesh.fhir.search_query.SearchQuery` into SQLite SQL.

Each criterion becomes ``r.rid IN (SELECT rid FROM sp_<type> WHERE pid=? AND ...)``
(or ``NOT IN`` for ``:not`` and ``:missing=true``); values of one criterion
are ORed inside the subquery, criteria are ANDed.

Paging: with the default order (insertion order, ``rid``) pages are keyset
pages (``rid > last``), so inserts, updates and deletes never shift or repeat
unchanged resources between pages. With ``_sort``, the ordered row ids of the
whole result are written once to ``search_snapshots`` and later pages read
from that snapshot, so paging is stable while data changes (the way HAPI
keeps search results). Resources deleted after the snapshot are left out.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from healthmesh.errors import InvalidRequest
from healthmesh.fhir.search_params import normalise_string
from healthmesh.fhir.search_query import (
    Criterion,
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    TokenValue,
)
from healthmesh.store.base import SearchPage, StoredResource

if TYPE_CHECKING:
    from healthmesh.store.sqlite import SQLiteStore

__all__ = ["SearchCompiler"]

SNAPSHOT_TTL_S = 3600
_MAX_US = 2**62
_TABLE = {
    "token": "sp_token",
    "string": "sp_string",
    "date": "sp_date",
    "reference": "sp_reference",
    "quantity": "sp_quantity",
    "number": "sp_number",
    "uri": "sp_uri",
}
_SELECT = "r.type, r.id, r.version, r.updated, r.patient, r.content"


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_cursor(token: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidRequest("Invalid paging cursor") from None
    if not isinstance(data, dict):
        raise InvalidRequest("Invalid paging cursor")
    return data


class SearchCompiler:
    """Runs searches for one :class:`SQLiteStore`."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    # -- public ------------------------------------------------------------------

    def count(self, query: SearchQuery) -> int:
        where, args = self.where(query)
        sql = f"SELECT count(*) FROM resources r WHERE {where}"
        return int(self.store.reader().execute(sql, args).fetchone()[0])

    def stream(self, query: SearchQuery, batch: int = 1000) -> Iterator[StoredResource]:
        """Every match in insertion order, read in batches (constant memory)."""
        where, args = self.where(query)
        last = 0
        conn = self.store.reader()
        while True:
            rows = conn.execute(
                f"SELECT r.rid, {_SELECT} FROM resources r WHERE {where} AND r.rid > ? "
                "ORDER BY r.rid LIMIT ?",
                (*args, last, batch),
            ).fetchall()
            for row in rows:
                yield StoredResource(row[1], row[2], row[3], row[4], row[6], row[5])
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def page(self, query: SearchQuery, cursor: str | None) -> SearchPage:
        if query.summary == "count" or query.count == 0:
            return SearchPage(total=self.count(query))
        state = decode_cursor(cursor) if cursor else {}
        if query.sort:
            page = self._snapshot_page(query, state)
        else:
            page = self._keyset_page(query, state)
        if query.total == "accurate":
            page.total = self.count(query)
        return page

    # -- paging ------------------------------------------------------------------

    def _keyset_page(self, query: SearchQuery, state: dict[str, Any]) -> SearchPage:
        where, args = self.where(query)
        conn = self.store.reader()
        limit = query.count
        if "b" in state:  # previous page: the `limit` rows before the first one shown
            rows = conn.execute(
                f"SELECT r.rid, {_SELECT} FROM resources r WHERE {where} AND r.rid < ? "
                "ORDER BY r.rid DESC LIMIT ?",
                (*args, int(state["b"]), limit + 1),
            ).fetchall()
            has_more_before = len(rows) > limit
            rows = list(reversed(rows[:limit]))
            has_more_after = True
        else:
            after = int(state.get("a", 0))
            rows = conn.execute(
                f"SELECT r.rid, {_SELECT} FROM resources r WHERE {where} AND r.rid > ? "
                "ORDER BY r.rid LIMIT ?",
                (*args, after, limit + 1),
            ).fetchall()
            has_more_after = len(rows) > limit
            rows = rows[:limit]
            has_more_before = after > 0
        page = SearchPage(matches=[_stored(r[1:]) for r in rows])
        if rows and has_more_after:
            page.next_cursor = encode_cursor({"a": rows[-1][0]})
        if rows and has_more_before:
            page.prev_cursor = encode_cursor({"b": rows[0][0]})
        if query.count == 0:
            page.matches = []
        return page

    def _snapshot_page(self, query: SearchQuery, state: dict[str, Any]) -> SearchPage:
        sid = state.get("s")
        pos = int(state.get("p", 0))
        if not sid:
            sid = self._make_snapshot(query)
        conn = self.store.reader()
        limit = max(query.count, 0)
        rids = [
            r[0]
            for r in conn.execute(
                "SELECT rid FROM search_snapshots WHERE sid=? AND pos>=? AND pos<? ORDER BY pos",
                (sid, pos, pos + limit + 1),
            )
        ]
        if not rids and pos > 0 and not self._snapshot_exists(sid):
            raise InvalidRequest("This search has expired; run it again")
        page = SearchPage(matches=self.store.by_rids(rids[:limit]))
        if len(rids) > limit:
            page.next_cursor = encode_cursor({"s": sid, "p": pos + limit})
        if pos > 0:
            page.prev_cursor = encode_cursor({"s": sid, "p": max(pos - limit, 0)})
        return page

    def _snapshot_exists(self, sid: str) -> bool:
        row = self.store.reader().execute(
            "SELECT 1 FROM search_snapshots WHERE sid=? LIMIT 1", (sid,)
        ).fetchone()
        return row is not None

    def _make_snapshot(self, query: SearchQuery) -> str:
        where, args = self.where(query)
        joins, order, jargs = self._order(query)
        sid = secrets.token_hex(12)
        created = int(time.time())
        store = self.store
        with store.transaction():
            store._writer.execute(
                "DELETE FROM search_snapshots WHERE created < ?", (created - SNAPSHOT_TTL_S,)
            )
            store._writer.execute(
                "INSERT INTO search_snapshots (sid, pos, rid, created) "
                f"SELECT ?, row_number() OVER (ORDER BY {order}) - 1, r.rid, ? "
                f"FROM resources r {joins} WHERE {where}",
                (sid, created, *jargs, *args),
            )
        return sid

    def _order(self, query: SearchQuery) -> tuple[str, str, list[Any]]:
        joins: list[str] = []
        order: list[str] = []
        args: list[Any] = []
        for n, (code, desc) in enumerate(query.sort):
            direction = "DESC" if desc else "ASC"
            if code == "_id":
                order.append(f"r.id {direction}")
                continue
            if code == "_lastUpdated":
                order.append(f"r.updated {direction}")
                continue
            param = query_param(query.resource_type, code)
            table = _TABLE[param.type]
            column = _SORT_COLUMN[param.type]
            agg = "max" if desc else "min"
            col = "hi" if (param.type == "date" and desc) else column
            pid = self.store.pid(query.resource_type, code) or -1
            joins.append(
                f"LEFT JOIN (SELECT rid, {agg}({col}) k FROM {table} WHERE pid=? GROUP BY rid) "
                f"s{n} ON s{n}.rid = r.rid"
            )
            args.append(pid)
            order.append(f"s{n}.k IS NULL, s{n}.k {direction}")
        order.append("r.rid")
        return " ".join(joins), ", ".join(order), args

    # -- criteria ---------------------------------------------------------------

    def where(self, query: SearchQuery) -> tuple[str, list[Any]]:
        clauses = ["r.type = ?", "r.content IS NOT NULL"]
        args: list[Any] = [query.resource_type]
        for criterion in query.criteria:
            sql, cargs = self._criterion(query.resource_type, criterion)
            clauses.append(sql)
            args.extend(cargs)
        return " AND ".join(clauses), args

    def _criterion(self, rtype: str, c: Criterion) -> tuple[str, list[Any]]:
        if c.type == "id":
            marks = ",".join("?" * len(c.values))
            return f"r.id IN ({marks})", list(c.values)
        if c.type == "lastUpdated":
            ors, args = [], []
            for v in c.values:
                assert isinstance(v, DateValue)
                sql, a = _date_sql(v, "r.updated", "(r.updated + 1)")
                ors.append(sql)
                args.extend(a)
            return "(" + " OR ".join(ors) + ")", args
        pid = self.store.pid(rtype, c.name)
        table = _TABLE[c.type]
        if c.modifier == "missing":
            op = "NOT IN" if c.missing else "IN"
            return f"r.rid {op} (SELECT rid FROM {table} WHERE pid = ?)", [pid or -1]
        if c.modifier == "text" and c.type == "token":
            ors = ["(text >= ? AND text < ?)" for _ in c.values]
            args: list[Any] = [pid or -1]
            for v in c.values:
                norm = normalise_string(str(v))
                args.extend([norm, norm + "\U0010ffff"])
            sub = f"SELECT rid FROM sp_token_text WHERE pid = ? AND ({' OR '.join(ors)})"
            return f"r.rid IN ({sub})", args
        ors, args = [], [pid or -1]
        for v in c.values:
            sql, a = _VALUE_SQL[c.type](v, c)
            ors.append(sql)
            args.extend(a)
        op = "NOT IN" if c.modifier == "not" else "IN"
        return f"r.rid {op} (SELECT rid FROM {table} WHERE pid = ? AND ({' OR '.join(ors)}))", args


def query_param(rtype: str, code: str) -> Any:
    from healthmesh.fhir.search_params import search_params

    return search_params(rtype)[code]


_SORT_COLUMN = {
    "token": "code",
    "string": "norm",
    "date": "lo",
    "reference": "tid",
    "quantity": "value",
    "number": "value",
    "uri": "value",
}


def _stored(row: tuple[Any, ...]) -> StoredResource:
    return StoredResource(row[0], row[1], row[2], row[3], row[5], row[4])


def _date_sql(v: DateValue, lo: str = "lo", hi: str = "hi") -> tuple[str, list[Any]]:
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


def _string_sql(v: object, c: Criterion) -> tuple[str, list[Any]]:
    text = str(v)
    if c.modifier == "exact":
        return "exact = ?", [text]
    norm = normalise_string(text)
    if c.modifier == "contains":
        escaped = norm.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return "norm LIKE ? ESCAPE '\\'", [f"%{escaped}%"]
    return "(norm >= ? AND norm < ?)", [norm, norm + "\U0010ffff"]


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
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return "value LIKE ? ESCAPE '\\'", [escaped + "%"]
    if c.modifier == "above":
        return "? LIKE (value || '%')", [text]
    return "value = ?", [text]


_VALUE_SQL = {
    "token": _token_sql,
    "string": _string_sql,
    "date": lambda v, c: _date_sql(v),
    "reference": _reference_sql,
    "quantity": _quantity_sql,
    "number": lambda v, c: _number_sql(v),
    "uri": _uri_sql,
}
