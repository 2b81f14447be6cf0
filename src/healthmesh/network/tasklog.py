"""The node's durable record of federated tasks and its answers; the release-review queue.

``DIR/network/tasks.sqlite``: one row per task id (a task is answered once), with the
answer (``ok``, ``refused``, ``error`` or ``review``) and the node's signature over it,
whether it was sent to the hub, and the task as the requester signed it (the JWS: proof
of who asked what). Kept apart from the task runner so the steward's commands
(``healthmesh release ...``) start without loading the analytics stack.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from healthmesh.errors import HealthmeshError

__all__ = ["Answer", "TaskLog"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, received REAL, requester TEXT, agreement TEXT, algorithm TEXT,
    purpose TEXT, status TEXT, reason TEXT, result TEXT, signature TEXT, sent INTEGER DEFAULT 0,
    task TEXT, token TEXT
);
"""


@dataclass(frozen=True)
class Answer:
    """What the node sends back for one task."""

    status: str  # ok | refused | error | review
    reason: str | None = None
    result: dict[str, Any] | None = None
    signature: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason,
                "result": self.result if self.status == "ok" else None,
                "signature": self.signature if self.status == "ok" else None}


class TaskLog:
    """The node's durable record of tasks and answers (and the release-review queue)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                    timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    def get(self, task_id: str) -> Answer | None:
        row = self.conn.execute("SELECT status, reason, result, signature FROM tasks "
                                "WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        return Answer(row[0], row[1], orjson.loads(row[2]) if row[2] else None, row[3])

    def put(self, task_id: str, task: dict[str, Any] | None, answer: Answer,
            token: str | None = None) -> None:
        """Record a task and its answer, with the task exactly as signed (``token``): the
        evidence of who asked what (non-repudiation)."""
        task = task or {}
        self.conn.execute(
            "INSERT OR REPLACE INTO tasks (id, received, requester, agreement, algorithm, "
            "purpose, status, reason, result, signature, sent, task, token) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (task_id, time.time(), task.get("requester"), task.get("agreement"),
             task.get("algorithm"), task.get("purpose"), answer.status, answer.reason,
             orjson.dumps(answer.result).decode() if answer.result is not None else None,
             answer.signature, orjson.dumps(task).decode(), token[:65536] if token else None))

    def unsent(self) -> Iterator[tuple[str, Answer]]:
        rows = self.conn.execute("SELECT id FROM tasks WHERE sent = 0 AND status != 'review'")
        for (task_id,) in rows.fetchall():
            answer = self.get(task_id)
            if answer is not None:
                yield task_id, answer

    def mark_sent(self, task_id: str) -> None:
        self.conn.execute("UPDATE tasks SET sent = 1 WHERE id = ?", (task_id,))

    def pending_review(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT id, received, requester, agreement, algorithm, purpose, result FROM tasks "
            "WHERE status = 'review' ORDER BY received").fetchall()
        return [{"id": r[0], "received": r[1], "requester": r[2], "agreement": r[3],
                 "algorithm": r[4], "purpose": r[5], "result": orjson.loads(r[6])}
                for r in rows]

    def decide(self, task_id: str, approve: bool, steward: str) -> None:
        """A steward's decision on a held result (approved results are then sent)."""
        row = self.conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None or row[0] != "review":
            raise HealthmeshError(f"task {task_id} is not waiting for review")
        if approve:
            self.conn.execute(
                "UPDATE tasks SET status = 'ok', reason = NULL, sent = 0 WHERE id = ?", (task_id,))
        else:
            self.conn.execute(
                "UPDATE tasks SET status = 'refused', reason = ?, result = NULL, "
                "signature = NULL, sent = 0 WHERE id = ?",
                (f"the data steward ({steward}) withheld this result", task_id))

    def close(self) -> None:
        self.conn.close()
