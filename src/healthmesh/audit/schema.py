"""The audit log's SQLite file (``audit.sqlite``, WAL mode): tables and row helpers.

Tables::

    meta(key, value)            format, log_id, public_key (PEM), key_id, every, created
    entries(seq, time, actor, action, record, prev_hash, hash)
                                one row per entry; seq is the chain position (1..n),
                                record the canonical JSON bytes, the hashes raw 32 bytes;
                                time/actor/action are copies of record fields for queries
    entry_patients(patient, seq)    who-looked-at-my-data index (WITHOUT ROWID)
    checkpoints(number, seq, hash, prev_seq, every, time, key_id, signature)

Indexes: entries(actor, seq) and entries(time). Triggers make ``entries``,
``entry_patients`` and ``checkpoints`` append-only for every ordinary connection (a
bug cannot rewrite history; someone editing the file can drop them, which
verification then catches through the chain).
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from healthmesh.audit.chain import ZERO_HASH
from healthmesh.audit.checkpoints import Checkpoint
from healthmesh.audit.errors import AuditError
from healthmesh.audit.keys import public_key_id, public_key_pem
from healthmesh.audit.records import now_us

__all__ = [
    "FORMAT_VERSION", "SCHEMA", "Head", "checkpoint_row", "connect", "read_head", "read_meta",
    "row_checkpoint", "write_meta",
]

FORMAT_VERSION = "1"

_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    record BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_actor ON entries (actor, seq);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time);
CREATE TABLE IF NOT EXISTS entry_patients (
    patient TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (patient, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    number INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    prev_seq INTEGER NOT NULL,
    every INTEGER NOT NULL,
    time INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL
);
""" + "".join(_APPEND_ONLY.format(table=t) for t in ("entries", "entry_patients", "checkpoints"))

INSERT_ENTRY = (
    "INSERT INTO entries (seq, time, actor, action, record, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_PATIENT = "INSERT OR IGNORE INTO entry_patients (patient, seq) VALUES (?, ?)"
INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (number, seq, hash, prev_seq, every, time, key_id, signature) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# Reads cast columns to the types the code expects: someone editing the file by hand
# may leave TEXT where BLOBs belong (SQLite's replace() returns TEXT), and
# verification must report that as tampering, not crash on it.
CHECKPOINT_COLUMNS = (
    "number, CAST(coalesce(seq, 0) AS INTEGER), CAST(coalesce(hash, x'') AS BLOB), "
    "CAST(coalesce(prev_seq, 0) AS INTEGER), CAST(coalesce(every, 0) AS INTEGER), "
    "CAST(coalesce(time, 0) AS INTEGER), CAST(coalesce(key_id, '') AS TEXT), "
    "CAST(coalesce(signature, x'') AS BLOB)"
)
ROW_COLUMNS = (
    "seq, CAST(coalesce(record, x'') AS BLOB), CAST(coalesce(prev_hash, x'') AS BLOB), "
    "CAST(coalesce(hash, x'') AS BLOB), time, actor, action"
)
HEAD = (
    "SELECT seq, CAST(hash AS BLOB), (SELECT number || ' ' || seq || ' ' || every "
    "FROM checkpoints ORDER BY number DESC LIMIT 1) FROM entries ORDER BY seq DESC LIMIT 1"
)
"""The chain head and the last checkpoint ("number seq every"), in one statement."""


def connect(
    path: Path, synchronous: str = "NORMAL", *, query_only: bool = False
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL journal.

    ``query_only`` connections (readers) refuse writes and leave the journal mode alone.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if query_only:
        conn.execute("PRAGMA query_only=ON")
    else:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


Head = tuple[int, bytes, int, int, int]
"""The chain head: (seq, hash, last checkpoint number, its seq, its every); zeros if none."""


def read_head(conn: sqlite3.Connection) -> Head:
    """The chain head, read in the caller's transaction (never cached)."""
    row = conn.execute(HEAD).fetchone()
    if row is None:
        return 0, ZERO_HASH, 0, 0, 0
    try:
        number, cp_seq, cp_every = map(int, row[2].split()) if row[2] else (0, 0, 0)
    except ValueError:
        raise AuditError(f"corrupt last checkpoint row: {row[2]!r}") from None
    return row[0], bytes(row[1]), number, cp_seq, cp_every


def write_meta(conn: sqlite3.Connection, public_key: Ed25519PublicKey, every: int) -> None:
    """Fill the meta table of a new log (existing values are kept)."""
    values = {
        "format": FORMAT_VERSION, "log_id": str(uuid.uuid4()), "created": str(now_us()),
        "public_key": public_key_pem(public_key), "key_id": public_key_id(public_key),
        "every": str(every),
    }
    conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", values.items())


def read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    """The meta table; an AuditError if the file is not an audit log of this format."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT_VERSION or not {"log_id", "public_key", "key_id"} <= set(meta):
        raise AuditError(f"{path} is not a healthmesh audit log of format "
                         f"{FORMAT_VERSION} (format {meta.get('format')!r})")
    return meta


def checkpoint_row(cp: Checkpoint) -> tuple[Any, ...]:
    """The ``checkpoints`` row of a checkpoint."""
    return (cp.number, cp.position, cp.hash, cp.prev_position, cp.every, cp.time,
            cp.key_id, cp.signature)


def row_checkpoint(log_id: str, row: tuple[Any, ...]) -> Checkpoint:
    """A checkpoint from its row (columns in ``CHECKPOINT_COLUMNS`` order)."""
    number, seq, hash_, prev_seq, every, time, key_id, signature = row
    return Checkpoint(log_id, number, seq, bytes(hash_), prev_seq, every, time, key_id,
                      bytes(signature))
