"""Verification of an audit log file: checkpoints, coverage and the chain walk together.

:func:`verify_connection` runs inside one read transaction (a consistent snapshot,
while appends go on) and merges three kinds of failure, reporting the first position:

* checkpoint failures (:func:`~healthmesh.audit.checkpoints.check_checkpoints`): a
  signature not valid under the trusted public key, a removed checkpoint;
* coverage failures: entries missing below a signed checkpoint or an external anchor
  (a truncated tail), or more entries after the last checkpoint than its interval
  allows (a removed last checkpoint);
* chain failures (:class:`~healthmesh.audit.chain.ChainWalk`).

``tail_only`` checks just the last checkpoint's signature and the entries from it on:
what a writer does when it opens the log (cheap, at most one interval of entries).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from healthmesh.audit.chain import ZERO_HASH, ChainWalk, VerifyResult
from healthmesh.audit.checkpoints import Checkpoint, Failure, check_checkpoints
from healthmesh.audit.errors import AuditError
from healthmesh.audit.schema import CHECKPOINT_COLUMNS, ROW_COLUMNS, row_checkpoint

__all__ = ["load_checkpoints", "verify_connection"]


def load_checkpoints(
    conn: sqlite3.Connection, log_id: str, *, last_only: bool = False
) -> list[Checkpoint]:
    """The stored checkpoints in number order (only the last one if ``last_only``)."""
    sql = f"SELECT {CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY number"
    if last_only:
        sql += " DESC LIMIT 1"
    return [row_checkpoint(log_id, row) for row in conn.execute(sql)]


def _checked_anchors(
    anchors: Iterable[Checkpoint], key: Ed25519PublicKey, log_id: str
) -> list[Checkpoint]:
    checked = list(anchors)
    for anchor in checked:
        if anchor.log_id != log_id or not anchor.signature_ok(key):
            raise AuditError(
                f"anchor checkpoint #{anchor.number} is not a checkpoint of log {log_id} "
                "signed by the given key"
            )
    return checked


def _coverage_failures(
    head: int, genuine: Sequence[Checkpoint], anchors: Sequence[Checkpoint], every: int
) -> list[Failure]:
    failures = []
    covered = max((cp.position for cp in [*genuine, *anchors]), default=0)
    if covered > head:
        failures.append(Failure(head + 1, f"entries {head + 1}..{covered} were removed "
                                          f"(a signed checkpoint covers position {covered})"))
    last, interval = (genuine[-1].position, genuine[-1].every) if genuine else (0, every)
    if head - last > interval:
        failures.append(Failure(last + interval, f"no signed checkpoint after position {last} "
                                                 f"although the interval is {interval} "
                                                 "(a checkpoint was removed)"))
    return failures


def _anchor_map(checkpoints: Iterable[Checkpoint]) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for cp in checkpoints:
        out.setdefault(cp.position, []).append(cp.hash)
    return out


def _start(conn: sqlite3.Connection, genuine: Sequence[Checkpoint]) -> tuple[int, bytes]:
    """Where a tail walk begins: the last checkpoint's entry, trusting its prev_hash."""
    if not genuine:
        return 1, ZERO_HASH
    position = genuine[-1].position
    row = conn.execute(
        "SELECT CAST(prev_hash AS BLOB) FROM entries WHERE seq = ?", (position,)
    ).fetchone()
    return position, bytes(row[0]) if row else ZERO_HASH


def _first(failures: Iterable[Failure | None]) -> Failure | None:
    real = [f for f in failures if f is not None]
    return min(real, key=lambda f: f.position) if real else None


def _walk(
    conn: sqlite3.Connection, start: int, prev: bytes, anchors: dict[int, list[bytes]],
    stop: int | None, with_patients: bool,
) -> tuple[ChainWalk, Failure | None]:
    patients = None
    if with_patients:
        patients = iter(conn.execute(
            "SELECT CAST(seq AS INTEGER), patient FROM entry_patients ORDER BY 1, 2"
        ))
    walk = ChainWalk(start=start, prev_hash=prev, anchors=anchors, stop=stop,
                     patient_rows=patients)
    rows = conn.execute(f"SELECT {ROW_COLUMNS} FROM entries WHERE seq >= ? ORDER BY seq",
                        (start,))
    return walk, walk.run(rows)


def verify_connection(
    conn: sqlite3.Connection, key: Ed25519PublicKey, log_id: str, *,
    anchors: Iterable[Checkpoint] = (), every: int = 1000, tail_only: bool = False,
) -> VerifyResult:
    """Verify the log behind ``conn`` against ``key``; see the module docstring."""
    head = conn.execute("SELECT coalesce(max(seq), 0) FROM entries").fetchone()[0]
    stored = load_checkpoints(conn, log_id, last_only=tail_only)
    genuine, failures = check_checkpoints(stored, key, log_id, sequence=not tail_only)
    external = _checked_anchors(anchors, key, log_id)
    failures += _coverage_failures(head, genuine, external, every)
    start, prev = _start(conn, genuine) if tail_only else (1, ZERO_HASH)
    known = _first(failures)
    walk, failure = _walk(conn, start, prev, _anchor_map([*genuine, *external]),
                          known.position if known else None, not tail_only)
    first = _first([*failures, failure])
    last = genuine[-1].position if genuine else 0
    return VerifyResult(
        ok=first is None, checked=walk.checked,
        first_bad=max(1, first.position) if first else None,
        reason=first.reason if first else None,
        head=head, checkpoints=len(genuine), unsigned=max(0, head - last),
    )
