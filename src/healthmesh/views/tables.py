"""Analytic tables: the node's FHIR resources flattened by SQL on FHIR views into DuckDB.

``DIR/analytics.duckdb`` holds one table per ViewDefinition: the shipped ones in
``healthmesh/views/data/*.json`` (``patient``, ``condition``, ``observation``,
``medication``, ``procedure``, ``encounter``, ``immunization``, ``claim``,
``questionnaire_answer``, ``consent``) and the node's own in ``DIR/views/*.json``.

Table of a view
    its ``name``, unless an extension ``urn:healthmesh:extension:analytic-table``
    (``valueString``) names another: a ViewDefinition covers one resource type, so a table
    fed by several types is the union of several views with the same columns
    (``medication`` is fed by MedicationRequest, MedicationStatement, MedicationDispense
    and MedicationAdministration views; ``claim`` by Claim and ExplanationOfBenefit).
    A node's view may not take the name of a shipped table; names starting with ``_``
    are reserved (``_refresh_state`` records each table's definition and watermark).
Columns
    ``resource_id`` ("Type/id" of the resource the row came from) is always first; it
    is filled in here (a view's own ``resource_id`` column is replaced) because a
    refresh deletes a changed resource's rows by it. SQL types come from each column's
    FHIR ``type``: ``date`` -> DATE (first 10 characters; ``2019`` and ``2019-05`` give
    the first day), ``dateTime`` / ``instant`` -> TIMESTAMP (the local clock time as
    written: the UTC offset is dropped, so it agrees with the DATE of the same value),
    ``decimal`` and the integer types -> DOUBLE, ``boolean`` -> BOOLEAN, anything else
    (and ``collection: true`` columns, as JSON) -> VARCHAR. Values are converted with
    TRY_CAST: a value that does not parse becomes NULL.
Refresh
    incremental: resources whose ``updated`` is past a table's watermark are flattened
    again (their old rows deleted first, deleted resources just lose theirs); a table
    that is new or whose definition changed is rebuilt. The whole refresh is one DuckDB
    transaction, so a failure leaves the previous state. The store's ``resources`` table
    is read through ``store.reader()`` in chunks of :data:`CHUNK`, bounded above by the
    newest ``updated`` seen when the refresh starts (the next watermark): the store stamps
    a write after taking its write lock, so nothing can later appear at or below it.
    The tables hold every patient's rows, consented or not: what leaves the node from
    them must pass the egress gate like any other data.
Concurrency
    DuckDB lets one process at a time open the file for writing (and no other process
    read it meanwhile): opening a file another process holds raises
    :class:`AnalyticsBusy`.

Errors::

    HealthmeshError
     └── AnalyticsError          the analytic tables cannot be built or queried
          └── AnalyticsBusy      another process (or connection) holds the DuckDB file
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import orjson

from healthmesh.errors import HealthmeshError
from healthmesh.views.engine import CompiledView, compile_view
from healthmesh.views.errors import ViewError, ViewEvaluationError

__all__ = [
    "DB_FILE",
    "SHIPPED_VIEWS",
    "TABLE_EXTENSION",
    "AnalyticTable",
    "AnalyticTables",
    "AnalyticsBusy",
    "AnalyticsError",
    "RefreshStats",
    "load_tables",
]

DB_FILE = "analytics.duckdb"
VIEWS_DIR = "views"
SHIPPED_VIEWS = Path(__file__).parent / "data"
TABLE_EXTENSION = "urn:healthmesh:extension:analytic-table"
CHUNK = 5000  # resources read from the store and flattened per batch
_FORMAT = "1"  # bump when the flattening or conversion rules change: every table is rebuilt
_STATE = "_refresh_state"
_STAGE = "_healthmesh_stage"
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_DATE_TYPES = {"date": "DATE", "dateTime": "TIMESTAMP", "instant": "TIMESTAMP"}
_SQL_TYPES = {
    **_DATE_TYPES,
    "decimal": "DOUBLE",
    "integer": "DOUBLE",
    "integer64": "DOUBLE",
    "positiveInt": "DOUBLE",
    "unsignedInt": "DOUBLE",
    "boolean": "BOOLEAN",
}
_MAX_WARNINGS = 20


class AnalyticsError(HealthmeshError):
    """The analytic tables cannot be built or queried; the message says why."""


class AnalyticsBusy(AnalyticsError):
    """The DuckDB file is held by another process or by another connection of this one."""


@dataclass(frozen=True)
class AnalyticTable:
    """One table: its columns (name, SQL type) and the views (one per resource type) feeding it."""

    name: str
    columns: tuple[tuple[str, str], ...]
    views: tuple[CompiledView, ...]
    sources: tuple[str, ...]  # the file of each view
    fingerprint: str

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]


@dataclass
class RefreshStats:
    """What a refresh did: ``tables`` maps each table to its rows after it."""

    tables: dict[str, int]
    resources_seen: int
    seconds: float
    full: bool = False  # every table was rebuilt from scratch
    rows_written: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# -- definitions -----------------------------------------------------------------------


def load_tables(views_dir: Path | None = None) -> tuple[dict[str, AnalyticTable], list[str]]:
    """The shipped tables plus those of the ViewDefinitions in ``views_dir``.

    A bad shipped view raises :class:`AnalyticsError` (a packaging bug); a bad file in
    ``views_dir`` is left out and described in the returned warnings.
    """
    shipped, errors = _load_dir(SHIPPED_VIEWS, reserved=set())
    if errors:
        raise AnalyticsError("; ".join(errors))
    if views_dir is None or not views_dir.is_dir():
        return shipped, []
    user, warnings = _load_dir(views_dir, reserved=set(shipped))
    return {**shipped, **user}, warnings


class _Part(NamedTuple):
    """One loaded ViewDefinition file."""

    path: Path
    view: dict
    table: str
    compiled: CompiledView
    columns: tuple[tuple[str, str], ...]


def _load_dir(folder: Path, reserved: set[str]) -> tuple[dict[str, AnalyticTable], list[str]]:
    """Tables (keyed by lower-case name) of the views in ``folder``, and the bad files."""
    groups: dict[str, list[_Part]] = {}
    errors: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            part = _load_view(path)
            _check_part(part, groups.get(part.table.lower(), []), reserved)
        except (AnalyticsError, ViewError) as exc:
            errors.append(f"{path}: {exc} (view skipped)")
            continue
        groups.setdefault(part.table.lower(), []).append(part)
    return {key: _assemble(parts) for key, parts in groups.items()}, errors


def _check_part(part: _Part, group: list[_Part], reserved: set[str]) -> None:
    """Raise AnalyticsError if ``part`` cannot join the views already feeding its table."""
    if part.table.lower() in reserved:
        raise AnalyticsError(f"table {part.table!r} is a shipped table; choose another name")
    if group and group[0].columns != part.columns:
        raise AnalyticsError(
            f"table {part.table!r} already has columns {_describe(group[0].columns)} "
            f"from {group[0].path.name}; this view gives {_describe(part.columns)}"
        )
    if any(p.compiled.resource == part.compiled.resource for p in group):
        raise AnalyticsError(f"table {part.table!r} already has a {part.compiled.resource} view")


def _assemble(parts: list[_Part]) -> AnalyticTable:
    digest = hashlib.sha256(_FORMAT.encode())
    for part in parts:
        digest.update(orjson.dumps(part.view, option=orjson.OPT_SORT_KEYS))
    return AnalyticTable(
        parts[0].table, parts[0].columns, tuple(p.compiled for p in parts),
        tuple(str(p.path) for p in parts), digest.hexdigest(),
    )


def _load_view(path: Path) -> _Part:
    try:
        view = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise AnalyticsError(f"cannot read the ViewDefinition: {exc}") from None
    compiled = compile_view(view)
    table = _table_name(view)
    if table is None:
        raise AnalyticsError("the ViewDefinition needs a name (the name of its table)")
    if not isinstance(table, str) or not _TABLE_RE.match(table):
        raise AnalyticsError(
            f"table name {table!r} is not an SQL identifier (a letter, then letters, "
            "digits or _; at most 63 characters)"
        )
    types = _column_types(view.get("select", []), {})
    columns = (("resource_id", "VARCHAR"),) + tuple(
        (c, types.get(c, "VARCHAR")) for c in compiled.columns if c.lower() != "resource_id"
    )
    lower = [c.lower() for c, _t in columns]
    if len(set(lower)) != len(lower):
        raise AnalyticsError("column names differ only in case (SQL ignores case): "
                             + ", ".join(sorted({c for c in lower if lower.count(c) > 1})))
    return _Part(path, view, table, compiled, columns)


def _table_name(view: dict) -> Any:
    for ext in view.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == TABLE_EXTENSION:
            return ext.get("valueString")
    return view.get("name")


def _column_types(selects: Any, out: dict[str, str]) -> dict[str, str]:
    """SQL type of every column of a select tree, from the columns' FHIR ``type``."""
    for select in selects if isinstance(selects, list) else ():
        if not isinstance(select, dict):
            continue
        for col in select.get("column") or ():
            if isinstance(col, dict) and isinstance(col.get("name"), str):
                fhir_type = str(col.get("type") or "").rsplit("/", 1)[-1]
                sql = "VARCHAR" if col.get("collection") else _SQL_TYPES.get(fhir_type, "VARCHAR")
                out.setdefault(col["name"], sql)
        _column_types(select.get("select"), out)
        _column_types(select.get("unionAll"), out)
    return out


def _describe(columns: Sequence[tuple[str, str]]) -> str:
    return "(" + ", ".join(f"{c} {t}" for c, t in columns) + ")"


# -- SQL -------------------------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create_sql(table: AnalyticTable) -> str:
    cols = ", ".join(f"{_q(c)} {t}" for c, t in table.columns)
    return f"CREATE OR REPLACE TABLE {_q(table.name)} ({cols})"


def _convert(expr: str, sql_type: str) -> str:
    """SQL turning staged text ``expr`` into ``sql_type`` (NULL when it does not parse)."""
    if sql_type == "VARCHAR":
        return expr
    if sql_type in ("DATE", "TIMESTAMP"):
        rest = f"left({expr}, 10)" if sql_type == "DATE" else (
            f"regexp_replace({expr}, '(Z|[+-][0-9][0-9]:[0-9][0-9])$', '')"
        )
        expr = (f"CASE length({expr}) WHEN 4 THEN {expr} || '-01-01' "
                f"WHEN 7 THEN {expr} || '-01' ELSE {rest} END")
    return f"TRY_CAST({expr} AS {sql_type})"


def _insert_sql(table: AnalyticTable) -> str:
    staged = ", ".join(f"CAST(c{i} AS VARCHAR) AS c{i}" for i in range(len(table.columns)))
    values = ", ".join(_convert(f"c{i}", t) for i, (_c, t) in enumerate(table.columns))
    return (f"INSERT INTO {_q(table.name)} SELECT {values} "
            f"FROM (SELECT {staged} FROM {_STAGE})")


def _text(value: Any) -> str | None:
    """A view value as the text DuckDB casts from (objects and lists as JSON)."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return repr(value)
    return orjson.dumps(value, default=str).decode()


# -- the tables ------------------------------------------------------------------------


@dataclass
class _Target:
    """One table during a refresh: its views for the type being read and what to write."""

    table: AnalyticTable
    views: list[tuple[CompiledView, Any]]  # (view, _keep(view))
    watermark: int
    fresh: bool  # created empty by this refresh: nothing to delete
    stale: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    failed: int = 0
    first_error: str = ""

    def add(self, key: str, resource: dict) -> None:
        """Append the rows of ``resource`` (keyed ``key``) from every view of its type."""
        rows: list[tuple] = []
        try:
            for view, keep in self.views:
                for row in view.rows((resource,)):
                    values = tuple(row.values())
                    rows.append((key, *(values if keep is None else keep(values))))
        except ViewEvaluationError as exc:
            self.failed += 1
            self.first_error = self.first_error or f"{key}: {exc}"
            return
        self.rows.extend(rows)


def _keep(view: CompiledView) -> Any:
    """None, or a function dropping the view's own resource_id value from a row."""
    lower = [c.lower() for c in view.columns]
    if "resource_id" not in lower:
        return None
    i = lower.index("resource_id")
    return lambda values: values[:i] + values[i + 1 :]


class AnalyticTables:
    """The analytic tables of one node: ``folder/analytics.duckdb`` fed from ``store``."""

    def __init__(self, folder: Path, store: Any) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_FILE
        self.store = store
        self._definitions: tuple[Any, tuple[dict[str, AnalyticTable], list[str]]] | None = None
        self._current: tuple[Any, int] | None = None  # what the last refresh brought in
        self._last: RefreshStats | None = None

    def definitions(self) -> tuple[dict[str, AnalyticTable], list[str]]:
        """The tables defined now (shipped and ``folder/views``) and the bad-file warnings;
        compiled again only when a file in ``folder/views`` changes."""
        key = self._views_key()
        if self._definitions is None or self._definitions[0] != key:
            self._definitions = (key, load_tables(self.folder / VIEWS_DIR))
        return self._definitions[1]

    def _views_key(self) -> tuple[tuple[str, int, int], ...]:
        folder = self.folder / VIEWS_DIR
        if not folder.is_dir():
            return ()
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                            for p in folder.glob("*.json")))

    def _state(self, tables: dict[str, AnalyticTable]) -> tuple[Any, int]:
        """The view files and the store's last change of every type the views read."""
        types = {view.resource for table in tables.values() for view in table.views}
        return (self._views_key(), self.store.last_change(sorted(types)))

    def tables(self) -> dict[str, list[str]]:
        """Catalogue: each table's column names (as the next refresh builds them)."""
        return {t.name: t.column_names for t in self.definitions()[0].values()}

    def connect(self, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection to the tables (a first refresh builds them if the file is
        missing). Translates DuckDB's lock errors into :class:`AnalyticsBusy`."""
        if not self.path.exists():
            self.refresh()  # creates every table; nothing to read on a node that has no data
        return self._open(read_only)

    def query(self, sql: str, params: Sequence[Any] | dict | None = None,
              ) -> tuple[list[str], list[tuple]]:
        """Run one SQL statement read-only; returns the column names and the rows."""
        conn = self.connect(read_only=True)
        try:
            cursor = conn.execute(sql, params)
            columns = [d[0] for d in cursor.description or ()]
            return columns, cursor.fetchall()
        except duckdb.Error as exc:
            raise AnalyticsError(f"query failed: {exc}") from None
        finally:
            conn.close()

    def refresh(self, *, full: bool = False) -> RefreshStats:
        """Bring every table up to date with the store (see the module docstring)."""
        started = time.perf_counter()
        tables, warnings = self.definitions()
        state = self._state(tables)
        if not full and self._last is not None and state == self._current and self.path.exists():
            # nothing was written since this object's last refresh: no DuckDB write lock
            return RefreshStats(dict(self._last.tables), 0, time.perf_counter() - started,
                                warnings=list(warnings))
        conn = self._open(read_only=False)
        try:
            conn.begin()
            try:
                stats = _Refresh(conn, self.store, tables, warnings).run(full)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        except duckdb.Error as exc:
            raise AnalyticsError(f"refresh of {self.path} failed: {exc}") from None
        finally:
            conn.close()
        stats.seconds = time.perf_counter() - started
        self._current, self._last = state, stats
        return stats

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise AnalyticsError(f"cannot open {self.path}: {exc}") from None
            holder = re.search(r"held in (.*?) \(PID (\d+)\)", str(exc))
            who = f"{holder.group(1)} (PID {holder.group(2)})" if holder else "another process"
            raise AnalyticsBusy(
                f"{self.path} is locked by {who}: DuckDB lets either one process write the "
                "file (a refresh) or several processes read it, not both; wait for that "
                "process to finish (or stop it), then retry"
            ) from None
        except duckdb.ConnectionException as exc:
            raise AnalyticsBusy(
                f"{self.path} is already open in this process with read_only="
                f"{not read_only}: close that connection first ({exc})"
            ) from None
        except duckdb.Error as exc:
            raise AnalyticsError(f"cannot open {self.path}: {exc}") from None


class _Refresh:
    """One refresh inside one DuckDB transaction."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, store: Any,
                 tables: dict[str, AnalyticTable], warnings: list[str]) -> None:
        self.conn = conn
        self.store = store
        self.tables = tables
        self.warnings = list(warnings)
        self.written: dict[str, int] = dict.fromkeys((t.name for t in tables.values()), 0)
        self.seen = 0

    def run(self, full: bool) -> RefreshStats:
        types = sorted({v.resource for t in self.tables.values() for v in t.views})
        high = self._high_water(types)
        state = self._state()
        if any(mark > high for _fp, mark in state.values()):
            full = True  # the store is older than the tables (replaced or restored)
        marks = self._prepare(state, full)
        full = all(fresh for _mark, fresh in marks.values())
        for rtype in types:
            targets = [
                _Target(t, [(v, _keep(v)) for v in t.views if v.resource == rtype],
                        *marks[t.name])
                for t in self.tables.values()
            ]
            self._sync_type(rtype, [t for t in targets if t.views], high)
        if self.seen or any(fresh for _m, fresh in marks.values()) or len(state) != len(marks):
            self._save_state(high)
        counts = {
            t.name: int(self.conn.execute(f"SELECT count(*) FROM {_q(t.name)}").fetchone()[0])
            for t in self.tables.values()
        }
        return RefreshStats(counts, self.seen, 0.0, full, self.written, self.warnings)

    def _high_water(self, types: list[str]) -> int:
        """The newest ``updated`` of the store's resources of ``types`` (0 if none)."""
        reader = self.store.reader()
        high = 0
        for rtype in types:
            row = reader.execute(
                "SELECT max(updated) FROM resources WHERE type=?", (rtype,)
            ).fetchone()
            high = max(high, int(row[0] or 0))
        return high

    def _state(self) -> dict[str, tuple[str, int]]:
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_STATE} (table_name VARCHAR PRIMARY KEY, "
            "fingerprint VARCHAR, watermark BIGINT, refreshed TIMESTAMP)"
        )
        rows = self.conn.execute(f"SELECT table_name, fingerprint, watermark FROM {_STATE}")
        return {name: (fp, int(mark)) for name, fp, mark in rows.fetchall()}

    def _prepare(self, state: dict[str, tuple[str, int]], full: bool,
                 ) -> dict[str, tuple[int, bool]]:
        """Create new or changed tables empty, drop gone ones; name -> (watermark, fresh)."""
        existing = {name.lower() for (name,) in self.conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name='main'").fetchall()}
        marks: dict[str, tuple[int, bool]] = {}
        for table in self.tables.values():
            old = state.get(table.name)
            if (full or old is None or old[0] != table.fingerprint
                    or table.name.lower() not in existing):
                self.conn.execute(_create_sql(table))
                marks[table.name] = (0, True)
            else:
                marks[table.name] = (old[1], False)
        for name in set(state) - set(marks):
            self.conn.execute(f"DROP TABLE IF EXISTS {_q(name)}")
        return marks

    def _sync_type(self, rtype: str, targets: list[_Target], high: int) -> None:
        low = min((t.watermark for t in targets), default=high)
        if low >= high:
            return
        for batch in self._read(rtype, low, high):
            self.seen += len(batch)
            for rid, updated, content in batch:
                key = f"{rtype}/{rid}"
                resource = None if content is None else orjson.loads(content)
                for target in targets:
                    if updated <= target.watermark:
                        continue
                    if not target.fresh:
                        target.stale.append(key)
                    if resource is not None:
                        target.add(key, resource)
            for target in targets:
                self._flush(target)
        for target in targets:
            if target.failed:
                self._warn(f"{target.table.name}: {target.failed} {rtype} resource(s) could "
                           f"not be flattened and have no rows (first: {target.first_error})")

    def _read(self, rtype: str, low: int, high: int) -> Iterator[list[tuple]]:
        cursor = self.store.reader().execute(
            "SELECT id, updated, content FROM resources WHERE type=? AND updated>? "
            "AND updated<=?", (rtype, low, high),
        )
        try:
            while batch := cursor.fetchmany(CHUNK):
                yield batch
        finally:
            cursor.close()

    def _flush(self, target: _Target) -> None:
        name = target.table.name
        if target.stale:
            self.conn.execute(
                f"DELETE FROM {_q(name)} WHERE resource_id IN (SELECT unnest(?::VARCHAR[]))",
                [target.stale],
            )
            target.stale = []
        if target.rows:
            _insert(self.conn, target.table, target.rows)
            self.written[name] += len(target.rows)
            target.rows = []

    def _save_state(self, high: int) -> None:
        self.conn.execute(f"DELETE FROM {_STATE}")
        self.conn.executemany(
            f"INSERT INTO {_STATE} VALUES (?, ?, ?, now()::TIMESTAMP)",
            [(t.name, t.fingerprint, high) for t in self.tables.values()],
        )

    def _warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)


def _insert(conn: duckdb.DuckDBPyConnection, table: AnalyticTable, rows: list[tuple]) -> None:
    """Append ``rows`` in bulk: staged as text columns, converted by :func:`_insert_sql`.

    DuckDB scans a dict of numpy object arrays as a table (as fast as a pandas DataFrame,
    without importing pandas); ``executemany`` is about 500 times slower.
    """
    import numpy as np  # only refreshes need it; keep it off the CLI's import path

    frame = {
        f"c{i}": np.array([v if type(v) is str or v is None else _text(v) for v in col],
                          dtype=object)
        for i, col in enumerate(zip(*rows, strict=True))
    }
    conn.register(_STAGE, frame)
    try:
        conn.execute(_insert_sql(table))
    finally:
        conn.unregister(_STAGE)
