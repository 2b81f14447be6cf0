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
from healthmesh.fhir.search_params import search_params
from healthmesh.fhir.search_query import SearchQuery
from healthmesh.store.base import SearchPage, StoredResource
from healthmesh.store.sqlite_plan import TABLE as _TABLE
from healthmesh.store.sqlite_plan import Plan, build_plan

if TYPE_CHECKING:
    from healthmesh.store.sqlite import SQLiteStore

__all__ = ["SearchCompiler"]

SNAPSHOT_TTL_S = 3600
ESTIMATE_CAP = 5000

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
        plan = self.plan(query)
        conn = self.store.reader()
        if plan.only_driver:  # index rows exist only for current versions: no join needed
            what = "count(*)" if plan.driver_unique else "count(DISTINCT d.rid)"
            sql = f"SELECT {what} FROM {plan.driver_table} d WHERE {plan.driver_sql}"
            return int(conn.execute(sql, plan.driver_args).fetchone()[0])
        what = "count(*)" if plan.driver_unique else f"count(DISTINCT {plan.key})"
        sql = f"SELECT {what} FROM {plan.source} WHERE {plan.where_sql}"
        return int(conn.execute(sql, plan.args).fetchone()[0])

    def stream(self, query: SearchQuery, batch: int = 1000) -> Iterator[StoredResource]:
        """Every match in insertion order, read in batches (constant memory)."""
        last = 0
        while True:
            rows = self._after(self.plan(query), last, batch)
            for row in rows:
                yield _stored(row[1:])
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def _after(self, plan: Plan, after: int, limit: int) -> list[Any]:
        sql = (f"SELECT {plan.key}, {_SELECT} FROM {plan.source} WHERE {plan.where_sql} "
               f"AND {plan.key} > ? ORDER BY {plan.key} LIMIT ?")
        extra = 0 if plan.driver_unique else 8
        rows = self.store.reader().execute(sql, (*plan.args, after, limit + extra)).fetchall()
        return _dedupe_adjacent(rows)[:limit] if extra else rows

    def _before(self, plan: Plan, before: int, limit: int) -> list[Any]:
        sql = (f"SELECT {plan.key}, {_SELECT} FROM {plan.source} WHERE {plan.where_sql} "
               f"AND {plan.key} < ? ORDER BY {plan.key} DESC LIMIT ?")
        extra = 0 if plan.driver_unique else 8
        rows = self.store.reader().execute(sql, (*plan.args, before, limit + extra)).fetchall()
        return _dedupe_adjacent(rows)[:limit] if extra else rows

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
        plan = self.plan(query)
        limit = query.count
        if "b" in state:  # previous page: the `limit` rows before the first one shown
            rows = self._before(plan, int(state["b"]), limit + 1)
            has_more_before = len(rows) > limit
            rows = list(reversed(rows[:limit]))
            has_more_after = True
        else:
            after = int(state.get("a", 0))
            rows = self._after(plan, after, limit + 1)
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
        joins, order, jargs, oargs = self._order(query)
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
                (sid, *oargs, created, *jargs, *args),
            )
        return sid

    def _order(self, query: SearchQuery) -> tuple[str, str, list[Any], list[Any]]:
        """(joins, ORDER BY terms, join args, order args) for a sorted snapshot."""
        joins: list[str] = []
        order: list[str] = []
        jargs: list[Any] = []
        oargs: list[Any] = []
        for n, (code, desc) in enumerate(query.sort):
            direction = "DESC" if desc else "ASC"
            if code in ("_id", "_lastUpdated"):
                order.append(f"{'r.id' if code == '_id' else 'r.updated'} {direction}")
                continue
            param = query_param(query.resource_type, code)
            table = _TABLE[param.type]
            agg = "max" if desc else "min"
            col = "hi" if (param.type == "date" and desc) else _SORT_COLUMN[param.type]
            pid = self.store.pid(query.resource_type, code) or -1
            if param.type in ("date", "quantity", "number"):  # rid index: per-row lookup
                key = f"(SELECT {agg}({col}) FROM {table} x WHERE x.rid = r.rid AND x.pid = ?)"
                oargs.append(pid)
            else:
                joins.append(
                    f"LEFT JOIN (SELECT rid, {agg}({col}) k FROM {table} WHERE pid=? "
                    f"GROUP BY rid) s{n} ON s{n}.rid = r.rid"
                )
                jargs.append(pid)
                key = f"s{n}.k"
            order.append(f"{key} {direction} NULLS LAST")
        order.append("r.rid")
        return " ".join(joins), ", ".join(order), jargs, oargs

    # -- plans -----------------------------------------------------------------

    def plan(self, query: SearchQuery) -> Plan:
        return build_plan(self.store.pid, query, self._estimate)

    def _estimate(self, sql: str, args: list[Any]) -> int:
        """Rows a criterion selects, counted up to ESTIMATE_CAP (a few ms at most)."""
        row = self.store.reader().execute(
            f"SELECT count(*) FROM ({sql} LIMIT {ESTIMATE_CAP})", args
        ).fetchone()
        return int(row[0])

    def where(self, query: SearchQuery) -> tuple[str, list[Any]]:
        """A WHERE condition on ``resources r`` alone (used by snapshots)."""
        plan = self.plan(query)
        if plan.driver_table is None:
            return plan.where_sql, plan.args
        sub = f"SELECT d.rid FROM {plan.source} WHERE {plan.where_sql}"
        return f"r.rid IN ({sub})", plan.args


def query_param(rtype: str, code: str) -> Any:
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


def _dedupe_adjacent(rows: list[Any]) -> list[Any]:
    """Drop repeated row ids (a resource matching its driver twice); rows are rid-ordered."""
    out: list[Any] = []
    for row in rows:
        if not out or out[-1][0] != row[0]:
            out.append(row)
    return out
