"""The node's persistent privacy accounting: epsilon spent per agreement, runs per query.

One SQLite file (``DIR/privacy-ledger.sqlite``, WAL journal) holds three tables:

* ``spends`` — one row per charged task: ``(agreement_id, task_id, epsilon, at_us,
  fingerprint)``, unique on ``(agreement_id, task_id)`` so a retried task is charged once;
* ``budgets`` — the total epsilon last charged against per agreement (for reading back);
* ``query_runs`` — one row per run of a query, for the repeated-query limit.

:class:`PrivacyLedger` charges epsilon against an agreement's total and refuses
(:class:`BudgetExhausted`) the charge that would overspend it. :class:`QueryLimiter`
refuses (:class:`QueryLimitReached`) a query that the same requester already ran
``max_runs`` times in the last ``window_days`` under the same agreement — i2b2 locks a
query after about seven runs in thirty days, to blunt differencing by repetition.
:func:`fingerprint` maps queries that differ only in key order, list order, whitespace,
``1`` versus ``1.0`` or presentation-only keys to the same value; queries that differ in
substance (another code, another age limit) are different queries, and only DP noise
protects against differencing with those.

Every read-decide-write is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write
lock before reading: charges and runs from any number of connections, threads or
processes are serialised, so together they never overspend. Budget arithmetic sums the
spends with ``math.fsum`` and allows ``BUDGET_TOLERANCE`` of float rounding.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from healthmesh.privacy.errors import (
    BudgetExhausted,
    DisclosureError,
    LedgerError,
    QueryLimitReached,
)

__all__ = [
    "BUDGET_TOLERANCE",
    "LEDGER_FILE",
    "PrivacyLedger",
    "QueryLimiter",
    "Spend",
    "fingerprint",
]

LEDGER_FILE = "privacy-ledger.sqlite"
"""The ledger's file name inside a node folder."""

BUDGET_TOLERANCE = 1e-12
"""Float rounding allowed when comparing spent + requested with the total."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (
    agreement_id TEXT PRIMARY KEY,
    total_epsilon REAL NOT NULL,
    at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS spends (
    agreement_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    epsilon REAL NOT NULL,
    at_us INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (agreement_id, task_id)
);
CREATE TABLE IF NOT EXISTS query_runs (
    agreement_id TEXT NOT NULL,
    requester TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    at_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS query_runs_by_query
    ON query_runs (agreement_id, requester, fingerprint, at_us);
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def fingerprint(
    algorithm: str, params: Mapping[str, Any], presentation_keys: Iterable[str] = ()
) -> str:
    """A SHA-256 hex digest naming the query ``algorithm(params)`` up to presentation.

    Normalised before hashing: mapping keys sorted and ``presentation_keys`` dropped at
    every depth; every list treated as a set (sorted, duplicates dropped — code lists in
    cohorts, strata lists; order never changes what a count releases); strings stripped;
    integral floats written as integers. Merging more queries than strictly equal can only
    make the limit stricter.
    """
    canon = _canonical({"algorithm": algorithm, "params": params}, frozenset(presentation_keys))
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Spend:
    """One charged task."""

    agreement_id: str
    task_id: str
    epsilon: float
    at: datetime
    fingerprint: str


class _LedgerFile:
    """One connection to the ledger file; transactions are explicit and IMMEDIATE."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._transaction() as conn:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
        except (sqlite3.Error, LedgerError) as exc:
            self.close()
            raise LedgerError(f"cannot open privacy ledger {self.path}: {exc}") from None

    def close(self) -> None:
        """Close the connection; later calls raise :class:`LedgerError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (the write lock is held from its first read)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise LedgerError(f"privacy ledger {self.path}: {exc}") from None
            except BaseException:
                _rollback(conn)
                raise

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"privacy ledger {self.path}: {exc}") from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"privacy ledger {self.path} is closed")
        return self._conn


class PrivacyLedger(_LedgerFile):
    """Epsilon spent per agreement, persisted; ``PrivacyLedger(DIR / LEDGER_FILE)``."""

    def charge(
        self,
        agreement_id: str,
        task_id: str,
        epsilon: float,
        total_budget: float,
        fingerprint: str = "",
    ) -> float:
        """Record that ``task_id`` spends ``epsilon`` of the agreement's ``total_budget``
        and return what remains.

        Raises :class:`BudgetExhausted` (nothing recorded) if the agreement's spends plus
        ``epsilon`` exceed ``total_budget``. Charging a task already charged with the same
        epsilon and fingerprint charges nothing and returns what remains; with a different
        epsilon or fingerprint it raises :class:`LedgerError` (a task id is never reused).
        """
        _check_epsilon("epsilon", epsilon)
        _check_epsilon("total_budget", total_budget)
        with self._transaction() as conn:
            spent = _spent(conn, agreement_id)
            previous = conn.execute(
                "SELECT epsilon, fingerprint FROM spends WHERE agreement_id = ? AND task_id = ?",
                (agreement_id, task_id)).fetchone()
            if previous is not None:
                _check_same_charge(task_id, previous, epsilon, fingerprint)
                return max(total_budget - spent, 0.0)
            if spent + epsilon > total_budget + BUDGET_TOLERANCE:
                raise BudgetExhausted(agreement_id, spent, epsilon, total_budget)
            now = _to_us(datetime.now(UTC))
            conn.execute("INSERT INTO spends VALUES (?, ?, ?, ?, ?)",
                         (agreement_id, task_id, float(epsilon), now, fingerprint))
            conn.execute(
                "INSERT INTO budgets VALUES (?, ?, ?) ON CONFLICT (agreement_id) DO UPDATE "
                "SET total_epsilon = excluded.total_epsilon, at_us = excluded.at_us",
                (agreement_id, float(total_budget), now))
        return max(total_budget - spent - epsilon, 0.0)

    def spent(self, agreement_id: str) -> float:
        """The epsilon charged so far under the agreement (0.0 if none)."""
        rows = self._read("SELECT epsilon FROM spends WHERE agreement_id = ?", (agreement_id,))
        return math.fsum(r[0] for r in rows)

    def remaining(self, agreement_id: str, total: float | None = None) -> float:
        """``total`` minus what is spent, at least 0; ``total`` defaults to the budget the
        last charge named (:class:`LedgerError` if the agreement was never charged)."""
        if total is None:
            total = self.budget(agreement_id)
            if total is None:
                raise LedgerError(f"no budget recorded for agreement {agreement_id!r}")
        return max(total - self.spent(agreement_id), 0.0)

    def budget(self, agreement_id: str) -> float | None:
        """The total epsilon the agreement's last charge named, or ``None``."""
        rows = self._read("SELECT total_epsilon FROM budgets WHERE agreement_id = ?",
                          (agreement_id,))
        return rows[0][0] if rows else None

    def history(self, agreement_id: str) -> list[Spend]:
        """The agreement's charges, oldest first."""
        rows = self._read(
            "SELECT agreement_id, task_id, epsilon, at_us, fingerprint FROM spends "
            "WHERE agreement_id = ? ORDER BY at_us, task_id", (agreement_id,))
        return [Spend(a, t, e, _from_us(at), f) for a, t, e, at, f in rows]


class QueryLimiter(_LedgerFile):
    """Runs per (agreement, requester, query fingerprint), persisted in the ledger file."""

    fingerprint = staticmethod(fingerprint)

    def check_and_record(
        self,
        agreement_id: str,
        requester: str,
        fingerprint: str,
        *,
        max_runs: int = 7,
        window_days: float = 30,
        now: datetime | None = None,
    ) -> int:
        """Record one run of the query and return how many more runs the window allows.

        Raises :class:`QueryLimitReached` (nothing recorded) when the requester already
        ran it ``max_runs`` times in the ``window_days`` before ``now``; its message and
        ``unlocks_at`` say when the oldest of those runs leaves the window. ``now``
        defaults to the current time; a naive datetime is taken as UTC.
        """
        if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
            raise DisclosureError(f"max_runs must be a positive integer, got {max_runs!r}")
        _check_epsilon("window_days", window_days)
        if window_days == 0:
            raise DisclosureError("window_days must be positive")
        window_us = timedelta(days=window_days) // _US
        at_us = _to_us(_utc(now))
        with self._transaction() as conn:
            runs = [r[0] for r in conn.execute(
                "SELECT at_us FROM query_runs WHERE agreement_id = ? AND requester = ? "
                "AND fingerprint = ? AND at_us > ? ORDER BY at_us",
                (agreement_id, requester, fingerprint, at_us - window_us))]
            if len(runs) >= max_runs:
                unlock = _from_us(runs[len(runs) - max_runs] + window_us)
                raise QueryLimitReached(fingerprint, len(runs), window_days, unlock)
            conn.execute("INSERT INTO query_runs VALUES (?, ?, ?, ?)",
                         (agreement_id, requester, fingerprint, at_us))
        return max_runs - len(runs) - 1

    def runs(self, agreement_id: str, requester: str, fingerprint: str) -> list[datetime]:
        """Every recorded run of the query by the requester, oldest first."""
        rows = self._read(
            "SELECT at_us FROM query_runs WHERE agreement_id = ? AND requester = ? "
            "AND fingerprint = ? ORDER BY at_us", (agreement_id, requester, fingerprint))
        return [_from_us(r[0]) for r in rows]


# -- internals ----------------------------------------------------------------------------


def _canonical(x: Any, drop: frozenset[str]) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _canonical(v, drop) for k, v in x.items() if k not in drop}
    if isinstance(x, list | tuple | set | frozenset):
        items = {_dump(_canonical(v, drop)): v for v in x}
        return [_canonical(items[k], drop) for k in sorted(items)]
    if isinstance(x, str):
        return x.strip()
    if isinstance(x, float):
        if not math.isfinite(x):
            raise DisclosureError(f"query parameter {x!r} is not a finite number")
        return int(x) if x.is_integer() else x
    if x is None or isinstance(x, bool | int):
        return x
    raise DisclosureError(f"query parameter {x!r} is not JSON data")


def _dump(x: Any) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _spent(conn: sqlite3.Connection, agreement_id: str) -> float:
    rows = conn.execute("SELECT epsilon FROM spends WHERE agreement_id = ?", (agreement_id,))
    return math.fsum(r[0] for r in rows)


def _check_same_charge(task_id: str, previous: tuple[Any, ...], eps: float, fp: str) -> None:
    if previous[0] != float(eps) or previous[1] != fp:
        raise LedgerError(
            f"task {task_id!r} was already charged epsilon {previous[0]:g} for query "
            f"{previous[1][:12] or '-'}; it cannot be charged again as {eps:g} for "
            f"{fp[:12] or '-'}")


def _check_epsilon(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise DisclosureError(f"{name} must be a non-negative finite number, got {v!r}")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _to_us(at: datetime) -> int:
    return (at - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
