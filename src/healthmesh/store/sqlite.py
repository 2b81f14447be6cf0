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

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from healthmesh.errors import Conflict, HealthmeshError
from healthmesh.fhir.search_params import IndexRows, extract_index, patient_compartment
from healthmesh.store.base import HistoryEntry, SearchPage, StoredResource, WriteResult
from healthmesh.store.sqlite_search import SearchCompiler

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resources (
    rid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    patient TEXT,
    hash BLOB,
    content BLOB,
    UNIQUE (type, id)
);
CREATE INDEX IF NOT EXISTS resources_updated ON resources (type, updated);
CREATE INDEX IF NOT EXISTS resources_patient ON resources (patient) WHERE patient IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
    updated INTEGER NOT NULL, method TEXT NOT NULL, content BLOB,
    PRIMARY KEY (type, id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_updated ON history (updated);
CREATE TABLE IF NOT EXISTS params (
    pid INTEGER PRIMARY KEY, type TEXT NOT NULL, code TEXT NOT NULL, UNIQUE (type, code)
);
CREATE TABLE IF NOT EXISTS sp_token (
    pid INTEGER, code TEXT, system TEXT, rid INTEGER,
    PRIMARY KEY (pid, code, system, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sp_token_text (
    pid INTEGER, text TEXT, rid INTEGER, PRIMARY KEY (pid, text, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sp_string (
    pid INTEGER, norm TEXT, exact TEXT, rid INTEGER,
    PRIMARY KEY (pid, norm, exact, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sp_date (
    pid INTEGER, lo INTEGER, hi INTEGER, rid INTEGER,
    PRIMARY KEY (pid, lo, hi, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sp_reference (
    pid INTEGER, ttype TEXT, tid TEXT, raw TEXT, rid INTEGER,
    PRIMARY KEY (pid, tid, ttype, raw, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sp_quantity (
    pid INTEGER, value REAL, system TEXT, code TEXT, unit TEXT, rid INTEGER,
    PRIMARY KEY (pid, value, system, code, unit, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sp_number (
    pid INTEGER, value REAL, rid INTEGER, PRIMARY KEY (pid, value, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sp_uri (
    pid INTEGER, value TEXT, rid INTEGER, PRIMARY KEY (pid, value, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_snapshots (
    sid TEXT, pos INTEGER, rid INTEGER, created INTEGER,
    PRIMARY KEY (sid, pos)) WITHOUT ROWID;
"""

# (table, IndexRows attribute, insert column list). NULLs are stored as '' so
# that rows can be primary keys and deleted by value.
INDEX_TABLES: tuple[tuple[str, str, str], ...] = (
    ("sp_token", "tokens", "pid, system, code, rid"),
    ("sp_token_text", "token_texts", "pid, text, rid"),
    ("sp_string", "strings", "pid, norm, exact, rid"),
    ("sp_date", "dates", "pid, lo, hi, rid"),
    ("sp_reference", "references", "pid, ttype, tid, raw, rid"),
    ("sp_quantity", "quantities", "pid, value, system, code, unit, rid"),
    ("sp_number", "numbers", "pid, value, rid"),
    ("sp_uri", "uris", "pid, value, rid"),
)

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


def content_hash(resource: dict[str, Any]) -> bytes:
    """Digest of a resource's content, ignoring the server-maintained meta."""
    meta = resource.get("meta")
    if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
        rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        resource = dict(resource)
        if rest:
            resource["meta"] = rest
        else:
            del resource["meta"]
    return hashlib.blake2b(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def _row(row: tuple[Any, ...]) -> StoredResource:
    return StoredResource(row[0], row[1], row[2], row[3], row[5], row[4])


class SQLiteStore:
    """A node's FHIR store in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._pids: dict[tuple[str, str], int] = {}
        self._tx_depth = 0
        self._tx_thread = 0
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._pending_rids: set[int] = set()
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
        conn.execute("PRAGMA cache_size=-200000")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (the writer inside a write transaction)."""
        if self._tx_depth and self._tx_thread == threading.get_ident():
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
            self._tx_depth += 1
            try:
                yield
            except BaseException:
                self._tx_depth -= 1
                if outer:
                    self._rollback()
                raise
            self._tx_depth -= 1
            if outer:
                try:
                    self._flush_index()
                    self._writer.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise

    def _rollback(self) -> None:
        self._pending.clear()
        self._pending_rids.clear()
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")
        self._pids.clear()  # pids created in the rolled-back transaction are gone
        self._load_pids()

    # -- params ----------------------------------------------------------------

    def _load_pids(self) -> None:
        for pid, rtype, code in self._writer.execute("SELECT pid, type, code FROM params"):
            self._pids[(rtype, code)] = pid

    def pid(self, rtype: str, code: str, *, create: bool = False) -> int | None:
        """The integer id of a search parameter (created on first write)."""
        key = (rtype, code)
        pid = self._pids.get(key)
        if pid is None and create:
            cur = self._writer.execute(
                "INSERT OR IGNORE INTO params (type, code) VALUES (?, ?)", key
            )
            pid = cur.lastrowid if cur.rowcount else None
            if pid is None:
                pid = self._writer.execute(
                    "SELECT pid FROM params WHERE type=? AND code=?", key
                ).fetchone()[0]
            self._pids[key] = pid
        return pid

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
        with self.transaction():
            existing = self._existing(resource["resourceType"], [resource["id"]])
            old = existing.get(resource["id"])
            if if_match is not None and (old is None or old[1] != if_match or old[4] is None):
                have = "none" if old is None or old[4] is None else str(old[1])
                raise Conflict(f"Version conflict: If-Match {if_match}, current version {have}")
            return self._write(resource, old, method, now_us())[0]

    def put_many(self, resources: Sequence[dict[str, Any]], *, method: str = "PUT") -> list[str]:
        """Write many resources atomically; returns the outcome of each."""
        outcomes: list[str] = []
        with self.transaction():
            stamp = now_us()
            existing: dict[tuple[str, str], Any] = {}
            by_type: dict[str, list[str]] = {}
            for res in resources:
                by_type.setdefault(res["resourceType"], []).append(res["id"])
            for rtype, ids in by_type.items():
                for rid, row in self._existing(rtype, ids).items():
                    existing[(rtype, rid)] = row
            for res in resources:
                key = (res["resourceType"], res["id"])
                result, row = self._write(res, existing.get(key), method, stamp)
                outcomes.append(result.outcome)
                existing[key] = row
        return outcomes

    def _existing(self, rtype: str, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
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
        self, resource: dict[str, Any], old: tuple[Any, ...] | None, method: str, stamp: int
    ) -> tuple[WriteResult, tuple[Any, ...] | None]:
        """Write one version; returns the result and the new ``_existing`` row tuple."""
        rtype, rid = resource["resourceType"], resource["id"]
        digest = content_hash(resource)
        if old is not None and old[4] is not None and old[3] == digest:
            stored = StoredResource(rtype, rid, old[1], old[2], old[4])
            return WriteResult("unchanged", stored), old
        version = 1 if old is None else old[1] + 1
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = instant(stamp)
        resource = {**resource, "meta": meta}
        content = orjson.dumps(resource)
        patient = patient_compartment(resource)
        rows = extract_index(resource)
        if old is None:
            cur = self._writer.execute(
                "INSERT INTO resources (type, id, version, updated, patient, hash, content) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rtype, rid, version, stamp, patient, digest, content),
            )
            row_id = cur.lastrowid
            outcome = "created"
        else:
            row_id = old[0]
            self._archive(rtype, rid, old, method)
            self._writer.execute(
                "UPDATE resources SET version=?, updated=?, patient=?, hash=?, content=? "
                "WHERE rid=?",
                (version, stamp, patient, digest, content, row_id),
            )
            outcome = "created" if old[4] is None else "updated"
        assert row_id is not None
        self._index(rtype, row_id, rows, insert=True)
        stored = StoredResource(rtype, rid, version, stamp, content, patient)
        return WriteResult(outcome, stored), (row_id, version, stamp, digest, content)

    def _archive(self, rtype: str, rid: str, old: tuple[Any, ...], method: str) -> None:
        """Move the current version to history and drop its index rows."""
        row_id, version, updated, _hash, content = old
        old_method = "DELETE" if content is None else ("POST" if version == 1 else "PUT")
        self._writer.execute(
            "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?)",
            (rtype, rid, version, updated, old_method, content),
        )
        if content is not None:
            self._index(rtype, row_id, extract_index(orjson.loads(content)), insert=False)

    def delete(self, rtype: str, rid: str) -> WriteResult | None:
        with self.transaction():
            old = self._existing(rtype, [rid]).get(rid)
            if old is None or old[4] is None:
                return None
            stamp = now_us()
            self._archive(rtype, rid, old, "DELETE")
            version = old[1] + 1
            self._writer.execute(
                "UPDATE resources SET version=?, updated=?, hash=NULL, content=NULL, "
                "patient=NULL WHERE rid=?",
                (version, stamp, old[0]),
            )
            return WriteResult("deleted", StoredResource(rtype, rid, version, stamp, None))

    def _index(self, rtype: str, row_id: int, rows: IndexRows, *, insert: bool) -> None:
        """Queue index rows for insertion, or delete them at once.

        Inserts are buffered and written per table with one ``executemany``
        when the transaction ends (much faster for bulk loads); a deletion of
        a row id whose inserts are still queued flushes the queue first.
        """
        if not insert and row_id in self._pending_rids:
            self._flush_index()
        for table, attr, cols in INDEX_TABLES:
            values = getattr(rows, attr)
            if not values:
                continue
            data = [self._index_row(rtype, row_id, v) for v in values]
            if insert:
                self._pending.setdefault(table, []).extend(data)
            else:
                where = " AND ".join(f"{c.strip()}=?" for c in cols.split(","))
                self._writer.executemany(f"DELETE FROM {table} WHERE {where}", data)
        if insert:
            self._pending_rids.add(row_id)

    def _flush_index(self) -> None:
        for table, _attr, cols in INDEX_TABLES:
            data = self._pending.pop(table, None)
            if data:
                marks = ",".join("?" * (cols.count(",") + 1))
                self._writer.executemany(
                    f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})", data
                )
        self._pending_rids.clear()

    def _index_row(self, rtype: str, row_id: int, value: tuple[Any, ...]) -> tuple[Any, ...]:
        pid = self.pid(rtype, value[0], create=True)
        rest = tuple("" if v is None else v for v in value[1:])
        return (pid, *rest, row_id)

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
        where, args = [], []
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
