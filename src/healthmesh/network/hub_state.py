"""The hub's durable state: members, agreements, tasks and their per-site results.

One SQLite file (``HUB/hub.sqlite``, WAL). The hub holds no row-level data: tasks
are signed questions, results are the aggregates each node released (already through
its own disclosure control), kept as the node signed them.

Target statuses: ``pending`` (waiting for the node to fetch it), ``delivered`` (the
node has it), and the final ones ``ok``, ``refused``, ``error``, ``timeout``,
``unreachable``, ``review`` (held at the node for a steward; may still turn ``ok``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

__all__ = ["FINAL", "HubState"]

FINAL = frozenset({"ok", "refused", "error", "timeout", "unreachable"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    org TEXT PRIMARY KEY, name TEXT, roles TEXT, cert TEXT, box_key TEXT,
    endpoint TEXT, registered REAL, last_seen REAL
);
CREATE TABLE IF NOT EXISTS agreements (id TEXT PRIMARY KEY, body TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS catalogue (org TEXT PRIMARY KEY, body TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, agreement TEXT, requester TEXT, algorithm TEXT, purpose TEXT,
    token TEXT, body TEXT, created REAL, deadline REAL
);
CREATE TABLE IF NOT EXISTS targets (
    task TEXT, site TEXT, status TEXT, reason TEXT, result TEXT, signature TEXT,
    updated REAL, PRIMARY KEY (task, site)
);
CREATE INDEX IF NOT EXISTS targets_site ON targets (site, status);
"""


class HubState:
    """Thread-safe access to the hub's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        setup = sqlite3.connect(path, timeout=30)
        try:
            setup.execute("PRAGMA journal_mode=WAL")
            setup.executescript(SCHEMA)
        finally:
            setup.close()

    @contextmanager
    def _conn(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- members -------------------------------------------------------------------------

    def put_member(self, org: str, name: str, roles: list[str], cert: str,
                   box_key: str | None = None, endpoint: str | None = None) -> None:
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO members (org, name, roles, cert, box_key, endpoint, registered) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org) DO UPDATE SET name = "
                "excluded.name, roles = excluded.roles, cert = excluded.cert, "
                "box_key = excluded.box_key, endpoint = excluded.endpoint",
                (org, name, ",".join(roles), cert, box_key, endpoint, time.time()),
            )

    def member(self, org: str) -> dict[str, Any] | None:
        with self._conn(write=False) as conn:
            row = conn.execute("SELECT org, name, roles, cert, box_key, endpoint, last_seen "
                               "FROM members WHERE org = ?", (org,)).fetchone()
        return _member(row) if row else None

    def members(self) -> list[dict[str, Any]]:
        with self._conn(write=False) as conn:
            rows = conn.execute("SELECT org, name, roles, cert, box_key, endpoint, last_seen "
                                "FROM members ORDER BY org").fetchall()
        return [_member(r) for r in rows]

    def seen(self, org: str, at: float | None = None) -> None:
        with self._conn() as conn:
            conn.execute("UPDATE members SET last_seen = ? WHERE org = ?",
                         (at or time.time(), org))

    # -- agreements ----------------------------------------------------------------------

    def put_agreement(self, body: dict[str, Any]) -> None:
        with self._conn() as conn:
            conn.execute("INSERT OR REPLACE INTO agreements VALUES (?, ?, ?)",
                         (body["id"], orjson.dumps(body).decode(), time.time()))

    def agreement(self, agreement_id: str) -> dict[str, Any] | None:
        with self._conn(write=False) as conn:
            row = conn.execute("SELECT body FROM agreements WHERE id = ?",
                               (agreement_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def agreements(self) -> list[dict[str, Any]]:
        with self._conn(write=False) as conn:
            rows = conn.execute("SELECT body FROM agreements ORDER BY id").fetchall()
        return [orjson.loads(r[0]) for r in rows]

    # -- dataset catalogue ---------------------------------------------------------------

    def put_catalogue(self, org: str, body: dict[str, Any]) -> None:
        with self._conn() as conn:
            conn.execute("INSERT OR REPLACE INTO catalogue VALUES (?, ?, ?)",
                         (org, orjson.dumps(body).decode(), time.time()))

    def catalogue(self) -> list[dict[str, Any]]:
        with self._conn(write=False) as conn:
            rows = conn.execute("SELECT org, body, updated FROM catalogue ORDER BY org")
            return [{"org": r[0], **orjson.loads(r[1]), "updated": r[2]} for r in rows]

    def purge_results(self, agreement_id: str, older_than: float) -> int:
        """Delete released results of the agreement's tasks created before ``older_than``
        (the agreement's retention duty); the task and each site's status stay."""
        with self._conn() as conn:
            cursor = conn.execute(
                "UPDATE targets SET result = NULL, signature = NULL, reason = "
                "'result deleted at the end of the agreement''s retention period' "
                "WHERE result IS NOT NULL AND task IN "
                "(SELECT id FROM tasks WHERE agreement = ? AND created < ?)",
                (agreement_id, older_than))
            return cursor.rowcount

    # -- tasks ---------------------------------------------------------------------------

    def add_task(self, task: dict[str, Any], token: str, sites: list[str]) -> None:
        """Store a task and one pending target per site."""
        now = time.time()
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task["id"], task["agreement"], task["requester"], task["algorithm"],
                 task["purpose"], token, orjson.dumps(task).decode(), now, task["deadline"]),
            )
            conn.executemany(
                "INSERT INTO targets (task, site, status, updated) VALUES (?, ?, 'pending', ?)",
                [(task["id"], site, now) for site in sites],
            )

    def task(self, task_id: str) -> dict[str, Any] | None:
        with self._conn(write=False) as conn:
            row = conn.execute("SELECT body, token, created FROM tasks WHERE id = ?",
                               (task_id,)).fetchone()
        if row is None:
            return None
        return {"task": orjson.loads(row[0]), "token": row[1], "created": row[2]}

    def targets(self, task_id: str) -> list[dict[str, Any]]:
        with self._conn(write=False) as conn:
            rows = conn.execute(
                "SELECT site, status, reason, result, signature, updated FROM targets "
                "WHERE task = ? ORDER BY site", (task_id,)).fetchall()
        return [{"site": r[0], "status": r[1], "reason": r[2],
                 "result": orjson.loads(r[3]) if r[3] else None, "signature": r[4],
                 "updated": r[5]} for r in rows]

    def busy_sites(self) -> set[str]:
        """Sites working on a task they fetched (they do not poll while they compute)."""
        with self._conn(write=False) as conn:
            rows = conn.execute("SELECT DISTINCT site FROM targets WHERE status = 'delivered'")
            return {r[0] for r in rows}

    def take_pending(self, site: str) -> list[dict[str, Any]]:
        """The site's pending tasks (marked delivered in the same transaction)."""
        query = ("SELECT t.id, t.token, t.deadline FROM targets g JOIN tasks t ON t.id = g.task "
                 "WHERE g.site = ? AND g.status = 'pending' AND t.deadline > ? ORDER BY t.created")
        with self._conn(write=False) as conn:  # the common case: nothing new, no write lock
            if conn.execute(query, (site, time.time())).fetchone() is None:
                return []
        with self._conn() as conn:
            rows = conn.execute(query, (site, time.time())).fetchall()
            conn.executemany(
                "UPDATE targets SET status = 'delivered', updated = ? WHERE task = ? AND site = ?",
                [(time.time(), r[0], site) for r in rows])
        return [{"id": r[0], "token": r[1], "deadline": r[2]} for r in rows]

    def set_result(self, task_id: str, site: str, status: str, reason: str | None,
                   result: Any, signature: str | None) -> bool:
        """Record a node's answer; False when the task/site is unknown or already final."""
        with self._conn() as conn:
            row = conn.execute("SELECT status FROM targets WHERE task = ? AND site = ?",
                               (task_id, site)).fetchone()
            if row is None or row[0] in FINAL:
                return False
            conn.execute(
                "UPDATE targets SET status = ?, reason = ?, result = ?, signature = ?, "
                "updated = ? WHERE task = ? AND site = ?",
                (status, reason, orjson.dumps(result).decode() if result is not None else None,
                 signature, time.time(), task_id, site))
        return True

    def finish(self, task_id: str, outcomes: dict[str, tuple[str, str]]) -> None:
        """Give unanswered targets a final status (``timeout`` or ``unreachable``)."""
        with self._conn() as conn:
            for site, (status, reason) in outcomes.items():
                conn.execute(
                    "UPDATE targets SET status = ?, reason = ?, updated = ? WHERE task = ? "
                    "AND site = ? AND status IN ('pending', 'delivered', 'review')",
                    (status, reason, time.time(), task_id, site))


def _member(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"org": row[0], "name": row[1], "roles": [r for r in row[2].split(",") if r],
            "cert": row[3], "box_key": row[4], "endpoint": row[5], "last_seen": row[6]}
