"""The node's append-only, hash-chained, signed audit log (``DIR/audit.sqlite``).

::

    log = AuditLog(node_folder)                  # key: DIR/keys/node-ed25519.pem
    position = log.append(AuditRecord(actor="Practitioner/7", action="read",
                                      resources=("Patient/p1",), patients=("p1",),
                                      decision="permit", rule="Consent/c1#provision[0]"))
    log.entries(patient="p1")                    # who looked at p1's data
    log.verify()                                 # VerifyResult(ok=True, ...)
    log.close()                                  # signs a final checkpoint

Every write is one ``BEGIN IMMEDIATE`` transaction that reads the chain head and
writes the new rows, so the head is never cached in memory and several threads (or
processes) can append to one log; a crash rolls back the unfinished transaction and
leaves the chain whole. A record is committed to the WAL before ``append`` returns
(``synchronous=NORMAL``: it survives a crash of the process; ``synchronous="FULL"``
also survives a power cut, at a throughput cost).

Every ``checkpoint_every`` entries, on :meth:`AuditLog.checkpoint` and on close, the
node key signs the head in the same transaction. On open, a writer verifies the tail
since the last checkpoint (at most one interval) and refuses a broken log with
:class:`AuditLogCorrupt`, then signs any unsigned tail left by a crash.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthmesh.audit.chain import VerifyResult, entry_hash
from healthmesh.audit.checkpoints import Checkpoint, sign_checkpoint
from healthmesh.audit.errors import AuditError, AuditLogCorrupt, InvalidAuditRecord
from healthmesh.audit.journal import JOURNAL_GLOB, Journal, generation_of, read_frames
from healthmesh.audit.keys import (
    load_node_key,
    load_or_create_node_key,
    load_public_key,
    public_key_id,
)
from healthmesh.audit.queries import select_entries, select_page
from healthmesh.audit.records import AuditEntry, AuditRecord, now_us
from healthmesh.audit.schema import (
    INSERT_CHECKPOINT,
    INSERT_ENTRY,
    INSERT_PATIENT,
    SCHEMA,
    Head,
    checkpoint_row,
    connect,
    read_head,
    read_meta,
    write_meta,
)
from healthmesh.audit.verify import load_checkpoints, verify_connection

__all__ = ["AUDIT_FILE", "AuditLog"]

AUDIT_FILE = "audit.sqlite"
"""The audit log's file name in the node folder."""

_Prepared = tuple[bytes, int, str, str, tuple[str, ...]]


def _prepare_payload(payload: bytes) -> _Prepared:
    """The prepared row of a journaled record (its canonical JSON bytes)."""
    fields = orjson.loads(payload)
    return (payload, fields["time"], fields["actor"], fields["action"],
            tuple(fields["patients"]))


def _prepare(record: AuditRecord) -> _Prepared:
    if not isinstance(record, AuditRecord):
        raise InvalidAuditRecord(f"expected an AuditRecord, got {type(record).__name__}")
    return record.canonical(), record.time, record.actor, record.action, record.patients


@dataclass(slots=True)
class _Ticket:
    """A single append waiting for a group commit."""

    prepared: _Prepared
    position: int = 0
    error: BaseException | None = None


class AuditLog:
    """An append-only hash-chained audit log in ``folder/audit.sqlite``.

    ``signing_key`` defaults to the node key (created if absent); ``readonly`` opens an
    existing log for queries and verification only (no key needed, nothing written).
    """

    def __init__(
        self, folder: Path, *, signing_key: Ed25519PrivateKey | None = None,
        checkpoint_every: int = 1000, readonly: bool = False, synchronous: str = "NORMAL",
        journal: bool = False,
    ) -> None:
        if type(checkpoint_every) is not int or checkpoint_every < 1:
            raise AuditError(f"checkpoint_every must be a positive int, not {checkpoint_every!r}")
        if synchronous not in ("NORMAL", "FULL"):
            raise AuditError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.folder = Path(folder)
        self.path = self.folder / AUDIT_FILE
        self.checkpoint_every = checkpoint_every
        self.readonly = readonly
        self._synchronous = synchronous
        self._lock = threading.Lock()  # the writer connection and its transactions
        self._waiting_lock = threading.Lock()  # the appends waiting for a group commit
        self._waiting: list[_Ticket] = []
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # one per thread, closed on close()
        self._readers_lock = threading.Lock()
        self._closed = False
        self._key = signing_key
        self._writer: sqlite3.Connection | None = None
        self._journal: Journal | None = None
        try:
            self._open()
            if journal and not readonly:
                self._open_journal()
        except BaseException as exc:
            self._close_connections()
            if isinstance(exc, sqlite3.Error):
                raise AuditError(f"cannot open audit log {self.path}: {exc}") from None
            raise

    # -- opening ---------------------------------------------------------------------

    def _open(self) -> None:
        if self.readonly:
            if not self.path.exists():
                raise AuditError(f"no audit log at {self.path}")
            self._key = self._key or load_node_key(self.folder)
            self._load_meta(self._reader())
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._key = self._key or load_or_create_node_key(self.folder)
        self._writer = connect(self.path, self._synchronous)
        self._writer.executescript(SCHEMA)
        self._init_meta()
        self._load_meta(self._writer)
        self._recover()

    def _init_meta(self) -> None:
        assert self._key is not None
        with self._writing() as conn:
            write_meta(conn, self._key.public_key(), self.checkpoint_every)

    def _load_meta(self, conn: sqlite3.Connection) -> None:
        meta = read_meta(conn, self.path)
        self.log_id: str = meta["log_id"]
        self._meta_every = int(meta.get("every", self.checkpoint_every))
        self.public_key: Ed25519PublicKey = (
            self._key.public_key() if self._key else load_public_key(meta["public_key"])
        )
        self.key_id = public_key_id(self.public_key)
        if self._key is not None and meta["key_id"] != self.key_id:
            raise AuditError(
                f"audit log {self.path} is signed with key {meta['key_id']}, but the node "
                f"key is {self.key_id} (key rotation is not supported)"
            )

    def _recover(self) -> None:
        """Check the tail since the last checkpoint, then sign whatever is unsigned."""
        with self._snapshot() as conn:
            result = verify_connection(conn, self.public_key, self.log_id,
                                       every=self._meta_every, tail_only=True)
        if not result.ok:
            raise AuditLogCorrupt(
                f"audit log {self.path} fails verification at entry {result.first_bad}: "
                f"{result.reason}", result)
        with self._writing() as conn:
            head = read_head(conn)
            if head[0] > head[3] or (head[0] and head[4] != self.checkpoint_every):
                self._sign_head(conn, head)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'every'",
                         (str(self.checkpoint_every),))

    # -- the write-ahead journal (see audit/journal.py) --------------------------------

    def _open_journal(self) -> None:
        """Chain what an earlier run left in the journal, then own the journal."""
        generation, offset = self._journal_position()
        files = sorted(self.folder.glob(JOURNAL_GLOB), key=generation_of)
        for path in files:
            gen = generation_of(path)
            if gen < generation:
                path.unlink(missing_ok=True)  # fully chained before a rotation finished
                continue
            start = offset if gen == generation else 0
            frames, end = read_frames(path, start)
            self._drain_journal(gen, end, frames)
            if path.stat().st_size > end:  # a torn last frame: never acknowledged, drop it
                with path.open("r+b") as handle:
                    handle.truncate(end)
            generation, offset = gen, end
        try:
            self._journal = Journal(self.folder, generation, self._drain_journal)
        except OSError:
            return  # another process owns the journal: append synchronously
        self._journal.start(offset)

    def _journal_position(self) -> tuple[int, int]:
        rows = dict(self._reader().execute(
            "SELECT key, value FROM meta WHERE key IN ('journal_generation', 'journal_offset')"
        ).fetchall())
        return int(rows.get("journal_generation", 0)), int(rows.get("journal_offset", 0))

    def _drain_journal(self, generation: int, offset: int, payloads: list[bytes]) -> None:
        """Chain journaled records and store the journal position, in one transaction."""
        prepared = [_prepare_payload(p) for p in payloads]
        with self._writing() as conn:
            if prepared:
                self._insert(conn, prepared)
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("journal_generation", str(generation)), ("journal_offset", str(offset))],
            )

    def append_journaled(self, record: AuditRecord) -> None:
        """Append through the write-ahead journal when this process owns one (the
        record is durable against a crash of the process when this returns and is
        chained within milliseconds); otherwise exactly like :meth:`append`."""
        if self._journal is None:
            self.append(record)
            return
        self._check_writable()
        self._journal.write(_prepare(record)[0])

    def _settle(self) -> None:
        """Make the chain include every journaled record (before reading it)."""
        if self._journal is not None:
            self._journal.flush()

    # -- connections -----------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise AuditError(f"audit log {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self._synchronous, query_only=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection holding one read transaction (a consistent snapshot)."""
        conn = connect(self.path, self._synchronous, query_only=True)
        try:
            conn.execute("BEGIN")
            yield conn
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit log {self.path}: {exc}") from None
        finally:
            conn.close()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one IMMEDIATE transaction, under the lock."""
        self._check_writable()
        with self._lock, self._transaction() as conn:
            yield conn

    def _check_writable(self) -> None:
        if self.readonly:
            raise AuditError(f"audit log {self.path} is open read-only")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction on the writer; the caller holds the lock."""
        if self._closed or self._writer is None:
            raise AuditError(f"audit log {self.path} is closed")
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise AuditError(f"cannot write audit log {self.path}: {exc}") from None
        except BaseException:
            self._rollback(conn)
            raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -- writing -----------------------------------------------------------------------

    def _sign(self, number: int, seq: int, hash_: bytes, prev_seq: int) -> Checkpoint:
        assert self._key is not None
        return sign_checkpoint(self._key, self.log_id, number, seq, hash_, prev_seq,
                               self.checkpoint_every, now_us())

    def _sign_head(self, conn: sqlite3.Connection, head: Head) -> Checkpoint:
        cp = self._sign(head[2] + 1, head[0], head[1], head[3])
        conn.execute(INSERT_CHECKPOINT, checkpoint_row(cp))
        return cp

    def _chain(self, prepared: list[_Prepared], head: Head) -> tuple[list[Any], ...]:
        """The entry, patient and checkpoint rows that extend the chain from ``head``."""
        seq, prev, number, cp_seq, cp_every = head
        interval = min(self.checkpoint_every, cp_every or self.checkpoint_every)
        entries: list[Any] = []
        patients: list[tuple[str, int]] = []
        checkpoints: list[Any] = []
        for record, time, actor, action, record_patients in prepared:
            seq += 1
            hash_ = entry_hash(prev, seq, record)
            entries.append((seq, time, actor, action, record, prev, hash_))
            patients.extend((patient, seq) for patient in record_patients)
            if seq - cp_seq >= interval:
                number += 1
                checkpoints.append(checkpoint_row(self._sign(number, seq, hash_, cp_seq)))
                cp_seq, interval = seq, self.checkpoint_every
            prev = hash_
        return entries, patients, checkpoints

    def _insert(self, conn: sqlite3.Connection, prepared: list[_Prepared]) -> list[int]:
        entries, patients, checkpoints = self._chain(prepared, read_head(conn))
        if len(entries) == 1:
            conn.execute(INSERT_ENTRY, entries[0])
        else:
            conn.executemany(INSERT_ENTRY, entries)
        if patients:
            conn.executemany(INSERT_PATIENT, patients)
        if checkpoints:
            conn.executemany(INSERT_CHECKPOINT, checkpoints)
        return [row[0] for row in entries]

    def _commit_waiting(self) -> None:
        """Commit every waiting single append in one transaction (the lock is held)."""
        with self._waiting_lock:
            batch, self._waiting = self._waiting, []
        try:
            with self._transaction() as conn:
                positions = self._insert(conn, [ticket.prepared for ticket in batch])
        except BaseException as exc:
            for ticket in batch:
                ticket.error = exc
            raise
        for ticket, position in zip(batch, positions, strict=True):
            ticket.position = position

    def append(self, record: AuditRecord) -> int:
        """Append one record; return its position once it is committed.

        Appends from several threads that arrive while a commit is under way are
        committed together in the next transaction (group commit); each call still
        returns only after its own record is committed.
        """
        ticket = _Ticket(_prepare(record))
        self._check_writable()
        with self._waiting_lock:
            self._waiting.append(ticket)
        with self._lock:
            if not ticket.position and ticket.error is None:
                self._commit_waiting()
        if ticket.error is not None:
            raise AuditError(f"append failed: {ticket.error}") from ticket.error
        return ticket.position

    def append_many(self, records: Iterable[AuditRecord]) -> list[int]:
        """Append records in one transaction; return their positions."""
        prepared = [_prepare(record) for record in records]
        if not prepared:
            return []
        with self._writing() as conn:
            return self._insert(conn, prepared)

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head now (if not yet signed); the latest checkpoint or None."""
        self._settle()
        with self._writing() as conn:
            head = read_head(conn)
            if head[0] and head[0] > head[3]:
                return self._sign_head(conn, head)
        return self.latest_checkpoint()

    # -- reading -----------------------------------------------------------------------

    def head(self) -> int:
        """The last position (0 for an empty log)."""
        self._settle()
        row = self._reader().execute("SELECT coalesce(max(seq), 0) FROM entries").fetchone()
        return int(row[0])

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint, oldest first (unverified: see :meth:`verify`)."""
        return load_checkpoints(self._reader(), self.log_id)

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint: hand it to an external party as an anchor."""
        found = load_checkpoints(self._reader(), self.log_id, last_only=True)
        return found[0] if found else None

    def entries(
        self, *, patient: str | None = None, actor: str | None = None,
        since: int | None = None, until: int | None = None, action: str | None = None,
        limit: int = 100, offset: int = 0, newest_first: bool = True,
    ) -> list[AuditEntry]:
        """Entries matching every given filter (``since <= time < until``, epoch µs).

        ``patient`` ("p1" or "Patient/p1") uses the patient index: who looked at that
        patient's data; ``actor`` the actor index. Newest first unless told otherwise.
        """
        self._settle()
        return select_entries(
            self._reader(), patient=patient, actor=actor, since=since, until=until,
            action=action, limit=limit, offset=offset, newest_first=newest_first,
        )

    def scan(self, *, after: int = 0, since: int | None = None,
             batch: int = 1000) -> Iterator[AuditEntry]:
        """Every entry after position ``after`` (and at or after ``since``), oldest first."""
        self._settle()
        while True:
            page = select_page(self._reader(), after, since, batch)
            yield from page
            if len(page) < batch:
                return
            after = page[-1].position

    # -- verification and closing ------------------------------------------------------

    def verify(self, public_key: Ed25519PublicKey | None = None, *,
               anchors: Iterable[Checkpoint] = ()) -> VerifyResult:
        """Recompute the whole chain and check every checkpoint; report the first failure.

        ``public_key`` is the key the checkpoints must verify under (an external auditor
        passes the node's published key); by default the node key. ``anchors`` are
        checkpoints kept outside the node (e.g. by the hub): the log must still contain
        the entries they sign, which catches a rollback or a rewrite with the node key.
        """
        self._settle()
        with self._snapshot() as conn:
            return verify_connection(conn, public_key or self.public_key, self.log_id,
                                     anchors=anchors, every=self._meta_every)

    def close(self) -> None:
        """Sign the unsigned tail (writers) and close every connection; idempotent."""
        if self._closed:
            return
        if self._journal is not None:
            self._journal.close()  # chains everything journaled first
            self._journal = None
        if not self.readonly:
            with suppress(AuditError):
                self.checkpoint()
        self._close_connections()

    def _close_connections(self) -> None:
        with self._lock, self._readers_lock:
            self._closed = True
            for conn in [*self._readers, self._writer]:
                if conn is not None:
                    conn.close()
            self._readers.clear()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

