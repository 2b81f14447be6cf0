"""The embedded SQLite store (WAL mode, one file).

Layout: ``resources`` holds the current version of every resource (a
deletion keeps its row with ``content`` NULL), ``history`` every older
version, and one ``sp_*`` table per search parameter type holds the index
rows of current versions. Index tables are ``WITHOUT ROWID`` with the whole
row as primary key: one B-tree each, and the rows of an old version are
deleted by re-extracting them from the old content (no rowid index needed).
Every write (index rows included) happens in one SQLite transaction.

Concurrency: one writer connection guarded by a lock; readers use one
connection per thread (WAL lets them read while a write is in progress).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from healthmesh.errors import Conflict, HealthmeshError
from healthmesh.fhir.search_params import extract_index
from healthmesh.store.base import HistoryEntry, SearchPage, StoredResource, WriteResult
from healthmesh.store.prepare import (
    PreparedResource,
    StoreRows,
    param_ids,
    prepare,
    stamp_content,
    store_rows,
)
from healthmesh.store.sqlite_schema import INDEX_TABLES, SCHEMA, SCHEMA_VERSION, insert_rows
from healthmesh.store.sqlite_search import SearchCompiler

__all__ = ["SQLiteStore"]

_COLUMNS = "type, id, version, updated, patient, content"


class StoreError(HealthmeshError):
    """The store file cannot be opened or is not a healthmesh store."""


def now_us() -> int:
    """The current time as epoch microseconds."""
    return int(datetime.now(UTC).timestamp() * 1_000_000)


def instant(us: int) -> str:
    """Epoch microseconds as a FHIR instant (UTC, millisecond precision)."""
    dt = datetime.fromtimestamp(us / 1_000_000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@lru_cache(maxsize=4)
def _instant_cached(us: int) -> str:
    return instant(us)


def _row(row: tuple[Any, ...]) -> StoredResource:
    return StoredResource(row[0], row[1], row[2], row[3], row[5], row[4])


class SQLiteStore:
    """A node's FHIR store in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._tx_depth = 0
        self._tx_thread = 0
        self._pending: dict[str, list[tuple[Any, ...]]] = {t: [] for t, _a, _c in INDEX_TABLES}
        self._pending_rids: set[int] = set()
        self._pending_resources: list[tuple[Any, ...]] = []
        # type -> hooks called inside the transaction, just before COMMIT, with the patients
        # whose resources of that type changed in it (see :meth:`watch`).
        self._watchers: dict[str, list[Any]] = {}
        self._changed: dict[str, set[str]] = {}
        self._next_rid = 0
        try:
            self._writer = self._connect()
            self._writer.executescript(SCHEMA)
            self._check_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self._load_pids()
        self._search = SearchCompiler(self)

    # -- connections -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        # checkpoint every ~40 MB of WAL instead of 4 MB: bulk loads copy far fewer pages
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        return conn

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (the writer inside a write transaction)."""
        if self._tx_depth and self._tx_thread == threading.get_ident():
            self._flush_pending()  # reads inside a write transaction see its writes
            return self._writer
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _check_schema(self) -> None:
        row = self._writer.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._writer.execute(
                "INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif row[0] != str(SCHEMA_VERSION):
            raise StoreError(f"store schema {row[0]} is not supported (need {SCHEMA_VERSION})")

    def close(self) -> None:
        self._writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- transactions ------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every write inside the block one atomic unit (nestable)."""
        with self._write_lock:
            outer = self._tx_depth == 0
            if outer:
                self._writer.execute("BEGIN IMMEDIATE")
                self._tx_thread = threading.get_ident()
                self._next_rid = 0  # another process may have written since: re-read max(rid)
            self._tx_depth += 1
            try:
                yield
                if outer:  # still inside the transaction: hooks read what it wrote
                    self._flush_pending()
                    self._run_watchers()
                    self._writer.execute("COMMIT")
            except BaseException:
                if outer:
                    self._rollback()
                raise
            finally:
                self._tx_depth -= 1

    def watch(self, rtype: str, hook: Any) -> None:
        """Call ``hook(patients)`` inside every transaction that changes resources of
        ``rtype``, just before COMMIT, with the patients they belong (or belonged) to.
        The consent gate keeps its coverage tables in step with Consents this way."""
        self._watchers.setdefault(rtype, []).append(hook)

    def _run_watchers(self) -> None:
        changed, self._changed = self._changed, {}
        for rtype, patients in changed.items():
            for hook in self._watchers.get(rtype, ()):
                hook(patients)

    def _rollback(self) -> None:
        self._changed = {}
        self._pending = {t: [] for t, _a, _c in INDEX_TABLES}
        self._pending_rids.clear()
        self._pending_resources.clear()
        self._next_rid = 0
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")

    # -- params ----------------------------------------------------------------

    def _load_pids(self) -> None:
        """Record the fixed parameter ids in a new store; check them in an existing one."""
        self._pids = param_ids()
        stored = self._writer.execute("SELECT pid, type, code FROM params").fetchall()
        if not stored:
            with self.transaction():
                self._writer.executemany(
                    "INSERT INTO params (pid, type, code) VALUES (?, ?, ?)",
                    [(pid, t, c) for (t, c), pid in self._pids.items()],
                )
            return
        for pid, rtype, code in stored:
            if self._pids.get((rtype, code)) != pid:
                raise StoreError(
                    f"store {self.path} was created with other search parameter ids "
                    f"({rtype}.{code}); it needs a migration to this healthmesh version"
                )

    def pid(self, rtype: str, code: str) -> int | None:
        """The integer id of a search parameter, or None if it is not indexed."""
        return self._pids.get((rtype, code))

    # -- reads ---------------------------------------------------------------------

    def read(self, rtype: str, rid: str) -> StoredResource | None:
        row = self.reader().execute(
            f"SELECT {_COLUMNS} FROM resources WHERE type=? AND id=?", (rtype, rid)
        ).fetchone()
        return _row(row) if row else None

    def vread(self, rtype: str, rid: str, version: int) -> StoredResource | None:
        current = self.read(rtype, rid)
        if current is None:
            return None
        if current.version == version:
            return current
        row = self.reader().execute(
            "SELECT type, id, version, updated, NULL, content FROM history "
            "WHERE type=? AND id=? AND version=?",
            (rtype, rid, version),
        ).fetchone()
        return _row(row) if row else None

    def read_many(self, keys: Iterable[tuple[str, str]]) -> list[StoredResource]:
        """Current, not deleted versions of the given (type, id) pairs that exist."""
        out: list[StoredResource] = []
        by_type: dict[str, list[str]] = {}
        for rtype, rid in keys:
            by_type.setdefault(rtype, []).append(rid)
        for rtype, ids in by_type.items():
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                rows = self.reader().execute(
                    f"SELECT {_COLUMNS} FROM resources WHERE type=? AND id IN ({marks}) "
                    "AND content IS NOT NULL",
                    (rtype, *chunk),
                )
                out.extend(_row(r) for r in rows)
        return out

    def by_rids(self, rids: Sequence[int]) -> list[StoredResource]:
        """Current versions of the given row ids, in the given order (deleted ones left out)."""
        found: dict[int, StoredResource] = {}
        for chunk in _chunks(list(rids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.reader().execute(
                f"SELECT rid, {_COLUMNS} FROM resources WHERE rid IN ({marks}) "
                "AND content IS NOT NULL",
                chunk,
            )
            for r in rows:
                found[r[0]] = _row(r[1:])
        return [found[r] for r in rids if r in found]

    def counts(self) -> dict[str, int]:
        rows = self.reader().execute(
            "SELECT type, count(*) FROM resources WHERE content IS NOT NULL GROUP BY type"
        )
        return dict(rows.fetchall())

    def last_change(self, types: Iterable[str]) -> int:
        """When a resource of one of ``types`` last changed (µs; 0: never). One index
        probe per type on ``resources (type, updated)``."""
        reader = self.reader()
        return max((reader.execute("SELECT max(updated) FROM resources WHERE type = ?",
                                   (t,)).fetchone()[0] or 0 for t in types), default=0)

    def compartment(
        self, patient_id: str, types: Iterable[str] | None = None
    ) -> Iterator[StoredResource]:
        wanted = set(types) if types is not None else None
        rows = self.reader().execute(
            f"SELECT {_COLUMNS} FROM resources WHERE patient=? AND content IS NOT NULL "
            "AND type != 'Patient' ORDER BY rid",
            (patient_id,),
        )
        for row in rows:
            if wanted is None or row[0] in wanted:
                yield _row(row)

    # -- writes --------------------------------------------------------------------

    def put(
        self, resource: dict[str, Any], *, method: str = "PUT", if_match: int | None = None
    ) -> WriteResult:
        """Create or update one resource (which carries its id)."""
        prepared = prepare(resource)
        with self.transaction():
            old = self._existing(prepared.type, [prepared.id]).get(prepared.id)
            if if_match is not None and (old is None or old[1] != if_match or old[4] is None):
                have = "none" if old is None or old[4] is None else str(old[1])
                raise Conflict(f"Version conflict: If-Match {if_match}, current version {have}")
            return self._write(prepared, old, now_us())[0]

    def put_many(self, resources: Sequence[dict[str, Any]], *, method: str = "PUT") -> list[str]:
        """Write many resources atomically; returns the outcome of each."""
        return self.put_prepared([prepare(r) for r in resources])

    def put_prepared(self, items: Sequence[PreparedResource]) -> list[str]:
        """Write prepared resources (see :mod:`healthmesh.store.prepare`) atomically."""
        outcomes: list[str] = []
        with self.transaction():
            stamp = now_us()
            existing: dict[tuple[str, str], Any] = {}
            by_type: dict[str, list[str]] = {}
            for item in items:
                by_type.setdefault(item.type, []).append(item.id)
            for rtype, ids in by_type.items():
                for rid, row in self._existing(rtype, ids).items():
                    existing[(rtype, rid)] = row
            for item in items:
                key = (item.type, item.id)
                result, row = self._write(item, existing.get(key), stamp)
                outcomes.append(result.outcome)
                existing[key] = row
        return outcomes

    def _existing(self, rtype: str, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        self._flush_pending()
        out: dict[str, tuple[Any, ...]] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            rows = self._writer.execute(
                f"SELECT id, rid, version, updated, hash, content FROM resources "
                f"WHERE type=? AND id IN ({marks})",
                (rtype, *chunk),
            )
            for row in rows:
                out[row[0]] = row[1:]
        return out

    def _write(
        self, item: PreparedResource, old: tuple[Any, ...] | None, stamp: int
    ) -> tuple[WriteResult, tuple[Any, ...]]:
        """Write one version; returns the result and the new ``_existing`` row tuple."""
        rtype, rid = item.type, item.id
        if old is not None and old[4] is not None and old[3] == item.digest:
            stored = StoredResource(rtype, rid, old[1], old[2], old[4])
            return WriteResult("unchanged", stored), old
        version = 1 if old is None else old[1] + 1
        if rtype in self._watchers:
            self._note_change(rtype, item.patient, old)
        content = stamp_content(item.content, version, _instant_cached(stamp))
        if old is None:
            row_id = self._new_rid()
            self._pending_resources.append(
                (row_id, rtype, rid, version, stamp, item.patient, item.digest, content)
            )
            outcome = "created"
        else:
            row_id = old[0]
            self._archive(rtype, rid, old)
            self._writer.execute(
                "UPDATE resources SET version=?, updated=?, patient=?, hash=?, content=? "
                "WHERE rid=?",
                (version, stamp, item.patient, item.digest, content, row_id),
            )
            outcome = "created" if old[4] is None else "updated"
        assert row_id is not None
        self._index(rtype, row_id, item.rows, insert=True)
        stored = StoredResource(rtype, rid, version, stamp, content, item.patient)
        return WriteResult(outcome, stored), (row_id, version, stamp, item.digest, content)

    def _note_change(self, rtype: str, patient: str | None, old: tuple[Any, ...] | None) -> None:
        """Note the patients a watched change touches (the new and the old owner)."""
        touched = self._changed.setdefault(rtype, set())
        if patient:
            touched.add(patient)
        if old is not None and old[4] is not None:
            if old[0] in self._pending_rids:
                self._flush_pending()
            previous = self._writer.execute(
                "SELECT patient FROM resources WHERE rid=?", (old[0],)
            ).fetchone()
            if previous and previous[0]:
                touched.add(previous[0])

    def _archive(self, rtype: str, rid: str, old: tuple[Any, ...]) -> None:
        """Move the current version to history and drop its index rows."""
        row_id, version, updated, _hash, content = old
        if row_id in self._pending_rids:
            self._flush_pending()
        old_method = "DELETE" if content is None else ("POST" if version == 1 else "PUT")
        self._writer.execute(
            "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?)",
            (rtype, rid, version, updated, old_method, content),
        )
        if content is not None:
            rows = store_rows(rtype, extract_index(orjson.loads(content)))
            self._index(rtype, row_id, rows, insert=False)

    def delete(self, rtype: str, rid: str) -> WriteResult | None:
        with self.transaction():
            old = self._existing(rtype, [rid]).get(rid)
            if old is None or old[4] is None:
                return None
            stamp = now_us()
            if rtype in self._watchers:
                self._note_change(rtype, None, old)
            self._archive(rtype, rid, old)
            version = old[1] + 1
            self._writer.execute(
                "UPDATE resources SET version=?, updated=?, hash=NULL, content=NULL "
                "WHERE rid=?",
                (version, stamp, old[0]),
            )
            return WriteResult("deleted", StoredResource(rtype, rid, version, stamp, None))

    def _new_rid(self) -> int:
        """Row ids are assigned here (we are the only writer) so inserts can be batched."""
        if not self._next_rid:
            row = self._writer.execute("SELECT coalesce(max(rid), 0) FROM resources").fetchone()
            self._next_rid = int(row[0]) + 1
        rid = self._next_rid
        self._next_rid += 1
        return rid

    def _index(self, rtype: str, row_id: int, rows: StoreRows, *, insert: bool) -> None:
        """Queue index rows for insertion, or delete them at once.

        Inserts are buffered and written per table with multi-row INSERTs when
        the transaction ends (much faster for bulk loads); deleting rows of a
        row id whose inserts are still queued flushes the queue first.
        """
        if not insert and row_id in self._pending_rids:
            self._flush_pending()
        tail = (row_id,)
        for (table, _attr, cols), values in zip(INDEX_TABLES, rows, strict=True):
            if not values:
                continue
            data = [v + tail for v in values]
            if insert:
                self._pending[table].extend(data)
            else:
                where = " AND ".join(f"{c.strip()}=?" for c in cols.split(","))
                self._writer.executemany(f"DELETE FROM {table} WHERE {where}", data)
        if insert:
            self._pending_rids.add(row_id)

    def _flush_pending(self) -> None:
        if self._pending_resources:
            insert_rows(
                self._writer, "resources",
                "rid, type, id, version, updated, patient, hash, content",
                self._pending_resources, ignore=False,
            )
            self._pending_resources = []
        for table, _attr, cols in INDEX_TABLES:
            data = self._pending[table]
            if data:
                insert_rows(self._writer, table, cols, data)
                self._pending[table] = []
        self._pending_rids.clear()

    # -- history -------------------------------------------------------------------

    def history(
        self,
        rtype: str | None = None,
        rid: str | None = None,
        *,
        since: int | None = None,
        before: int | None = None,
        count: int = 100,
        offset: int = 0,
    ) -> list[HistoryEntry]:
        where: list[str] = []
        args: list[Any] = []
        if rtype is not None:
            where.append("type=?")
            args.append(rtype)
        if rid is not None:
            where.append("id=?")
            args.append(rid)
        if since is not None:
            where.append("updated>=?")
            args.append(since)
        if before is not None:
            where.append("updated<?")
            args.append(before)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        sql = (
            f"SELECT type, id, version, updated, content, CASE WHEN content IS NULL THEN 'DELETE'"
            f" WHEN version=1 THEN 'POST' ELSE 'PUT' END FROM resources{cond} "
            f"UNION ALL SELECT type, id, version, updated, content, method FROM history{cond} "
            "ORDER BY 4 DESC, 3 DESC LIMIT ? OFFSET ?"
        )
        rows = self.reader().execute(sql, (*args, *args, count, offset))
        return [
            HistoryEntry(StoredResource(r[0], r[1], r[2], r[3], r[4]), r[5]) for r in rows
        ]

    # -- search ----------------------------------------------------------------

    def search(self, query: Any, *, cursor: str | None = None) -> SearchPage:
        return self._search.page(query, cursor)

    def count(self, query: Any) -> int:
        return self._search.count(query)

    def stream(self, query: Any) -> Iterator[StoredResource]:
        return self._search.stream(query)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
