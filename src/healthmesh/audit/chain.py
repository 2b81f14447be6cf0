"""The hash chain and its verification walk (pure functions over stored rows).

Entry ``n`` (positions start at 1) stores the canonical record bytes ``R(n)`` and::

    prev_hash(n) = hash(n - 1)                  prev_hash(1) = 32 zero bytes
    hash(n)      = SHA-256(prev_hash(n) || n as 8-byte big-endian || R(n))

Binding the position into the hash means an entry moved to another position (by a
deletion with renumbering, an insertion or a reordering) no longer matches its own
hash, so the walk points at the moved entry itself.

:class:`ChainWalk` reads rows in position order and stops at the first failure:

* a missing position                      -> that position
* a break between entries n-1 and n (prev_hash(n) != hash(n-1)):
  - entries n-1 and n name the same predecessor  -> n-1 (n-1 was inserted)
  - entry n is self-consistent               -> n-1 (n-1 was altered and re-hashed)
  - otherwise                                -> n
* an entry whose hash does not match its record and position  -> that entry
* an entry whose index columns (time, actor, action, patient rows) disagree with its
  record -> that entry
* a signed checkpoint (or external anchor) whose hash differs from the entry hash at
  its position -> the position after the previous checkpoint (something in between was
  rewritten consistently).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from healthmesh.audit.checkpoints import Failure

__all__ = ["ZERO_HASH", "ChainWalk", "Row", "VerifyResult", "entry_hash"]

ZERO_HASH = bytes(32)
"""``prev_hash`` of the first entry."""

Row = tuple[int, bytes, bytes, bytes, int, str, str]
"""A stored entry: (position, record, prev_hash, hash, time, actor, action)."""


def entry_hash(prev_hash: bytes, position: int, record: bytes) -> bytes:
    """SHA-256(prev_hash || position as 8-byte big-endian || record bytes)."""
    return hashlib.sha256(prev_hash + position.to_bytes(8, "big") + record).digest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :meth:`AuditLog.verify`.

    ``checked`` entries were read; ``first_bad`` is the first position that fails (None
    when ok) and ``reason`` says why. ``head`` is the last position, ``checkpoints``
    the number of genuine signed checkpoints and ``unsigned`` the entries after the last
    one (their integrity rests on the chain alone until the next checkpoint).
    """

    ok: bool
    checked: int
    first_bad: int | None
    reason: str | None
    head: int = 0
    checkpoints: int = 0
    unsigned: int = 0


def _record_columns(record: bytes) -> tuple[Any, Any, Any, list[str]]:
    try:
        data = orjson.loads(record)
        return data["time"], data["actor"], data["action"], sorted(set(data["patients"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None, None, None, []


@dataclass
class ChainWalk:
    """Walk entries from ``start`` (after ``prev_hash``) and find the first failure.

    ``anchors`` maps positions to the hashes signed there (checkpoints and external
    anchors); ``stop`` is a position at which a failure is already known (the walk need
    not go past it); ``patient_rows`` yields (position, patient) pairs ordered by
    position then patient, or None to skip the patient index check.
    """

    start: int = 1
    prev_hash: bytes = ZERO_HASH
    anchors: dict[int, list[bytes]] = field(default_factory=dict)
    stop: int | None = None
    patient_rows: Iterator[tuple[int, str]] | None = None
    checked: int = 0
    head: int = 0
    _prev_prev: bytes | None = None
    _last_anchor: int = 0
    _pending: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        self.head = self.start - 1
        self._last_anchor = self.start - 1

    def run(self, rows: Iterable[Row]) -> Failure | None:
        """Walk ``rows``; return the first failure, or None if every row is sound."""
        for row in rows:
            if self.stop is not None and row[0] > self.stop:
                return None
            failure = self._step(row)
            if failure is not None:
                return failure
        return self._leftover_patients()

    def _step(self, row: Row) -> Failure | None:
        position, record, prev, stored, time, actor, action = row
        expected = self.head + 1
        if position != expected:
            return Failure(expected, f"entry {expected} is missing (next is {position})")
        self.checked += 1
        consistent = entry_hash(prev, position, record) == stored
        failure = self._link(position, prev, consistent)
        if failure is None and not consistent:
            failure = Failure(position, f"entry {position}: stored hash does not match its "
                                        "record and position (record edited or hash forged)")
        failure = failure or self._columns(row) or self._anchor(position, stored)
        self.head, self.prev_hash, self._prev_prev = position, stored, prev
        return failure

    def _link(self, position: int, prev: bytes, consistent: bool) -> Failure | None:
        if prev == self.prev_hash:
            return None
        before = position - 1
        if before >= self.start and prev == self._prev_prev:
            return Failure(before, f"entry {before} was inserted: it and entry {position} "
                                   "both follow the same entry")
        if before >= self.start and consistent:
            return Failure(before, f"entry {before} was altered: entry {position} links to "
                                   "a different hash")
        return Failure(position, f"entry {position} does not link to entry {before}")

    def _columns(self, row: Row) -> Failure | None:
        position, record = row[0], row[1]
        time, actor, action, patients = _record_columns(record)
        if (time, actor, action) != row[4:7]:
            return Failure(position, f"entry {position}: index columns (time, actor, action) "
                                     "do not match the record")
        if self.patient_rows is not None and self._patients_at(position) != patients:
            return Failure(position, f"entry {position}: patient index rows do not match "
                                     "the record")
        return None

    def _patients_at(self, position: int) -> list[str] | None:
        found: list[str] = []
        while True:
            if self._pending is None:
                self._pending = next(self.patient_rows, None)  # type: ignore[arg-type]
            if self._pending is None or self._pending[0] > position:
                return found
            if self._pending[0] < position:
                return None  # a row for a position that has no entry
            found.append(self._pending[1])
            self._pending = None

    def _leftover_patients(self) -> Failure | None:
        if self.patient_rows is None:
            return None
        row = self._pending or next(self.patient_rows, None)
        if row is None:
            return None
        return Failure(row[0], f"patient index row for position {row[0]} has no entry")

    def _anchor(self, position: int, stored: bytes) -> Failure | None:
        signed = self.anchors.get(position)
        if signed is None:
            return None
        since = self._last_anchor + 1
        self._last_anchor = position
        if all(h == stored for h in signed):
            return None
        return Failure(since, f"entries {since}..{position} do not match the signed "
                              f"checkpoint at {position} (rewritten after signing)")
