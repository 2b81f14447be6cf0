"""SQLite schema of the store and the fast bulk-insert helper."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any

__all__ = ["INDEX_TABLES", "SCHEMA", "SCHEMA_VERSION", "insert_rows"]

SCHEMA_VERSION = 2
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
CREATE INDEX IF NOT EXISTS sp_date_rid ON sp_date (rid);
CREATE INDEX IF NOT EXISTS sp_quantity_rid ON sp_quantity (rid);
CREATE TABLE IF NOT EXISTS sp_number (
    pid INTEGER, value REAL, rid INTEGER, PRIMARY KEY (pid, value, rid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sp_number_rid ON sp_number (rid);
CREATE TABLE IF NOT EXISTS sp_uri (
    pid INTEGER, value TEXT, rid INTEGER, PRIMARY KEY (pid, value, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_snapshots (
    sid TEXT, pos INTEGER, rid INTEGER, created INTEGER,
    PRIMARY KEY (sid, pos)) WITHOUT ROWID;
"""

# (table, IndexRows attribute, insert column list), in the order of
# PreparedResource.rows. NULLs are stored as '' so that rows can be primary
# keys and deleted by value.
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


_ROWS_PER_STATEMENT = 100


def insert_rows(
    conn: sqlite3.Connection, table: str, cols: str, rows: Sequence[tuple[Any, ...]],
    *, ignore: bool = True,
) -> None:
    """Insert many rows with multi-row VALUES statements (about 1.5x executemany)."""
    if not rows:
        return
    width = cols.count(",") + 1
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    one = "(" + ",".join("?" * width) + ")"
    full = len(rows) // _ROWS_PER_STATEMENT * _ROWS_PER_STATEMENT
    if full:
        stmt = f"{verb} INTO {table} ({cols}) VALUES " + ",".join([one] * _ROWS_PER_STATEMENT)
        chain = itertools.chain.from_iterable
        for i in range(0, full, _ROWS_PER_STATEMENT):
            conn.execute(stmt, list(chain(rows[i : i + _ROWS_PER_STATEMENT])))
    if full < len(rows):
        conn.executemany(f"{verb} INTO {table} ({cols}) VALUES {one}", rows[full:])
