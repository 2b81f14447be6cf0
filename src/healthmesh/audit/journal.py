"""A write-ahead journal in front of the hash-chained audit log, for the request path.

Chaining and committing one audit entry costs a SQLite transaction (~0.15 ms). The
egress gate instead writes each record to an append-only journal file (one ``write``
of a framed record, ~5 µs) before the response leaves, and a background thread moves
journaled records into the chain in batches, storing how far it got (generation and
byte offset) in the audit database in the same transaction. On open, a writer moves
whatever the journal still holds into the chain first ("write-ahead, recovery on
start"), so a crash of the process loses no record that was journaled and never
chains one twice. A torn last frame (a crash during the write) is ignored.

Frame: 4-byte big-endian length, 4-byte CRC-32 of the payload, payload (the record's
canonical JSON). Files: ``audit-journal-<generation>.bin`` beside ``audit.sqlite``;
a file is rotated once it is large and fully chained. One process at a time owns the
journal (an exclusive lock); others append synchronously.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

__all__ = ["JOURNAL_GLOB", "Journal", "read_frames"]

JOURNAL_GLOB = "audit-journal-*.bin"
ROTATE_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">II")


def journal_path(folder: Path, generation: int) -> Path:
    return folder / f"audit-journal-{generation:08d}.bin"


def generation_of(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def read_frames(path: Path, offset: int) -> tuple[list[bytes], int]:
    """Complete frames after ``offset`` and the offset after the last complete one."""
    if not path.exists():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    frames: list[bytes] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > len(data):
            break  # a torn last frame: the write never completed
        payload = data[pos + _HEADER.size:end]
        if zlib.crc32(payload) != crc:
            break  # a torn frame; nothing after it was acknowledged
        frames.append(payload)
        pos = end
    return frames, offset + pos


class Journal:
    """The journal of one audit log, owned by this process; drained by a thread.

    ``drain(generation, offset, payloads, next_generation)`` must chain the payloads
    and store the new position in one transaction.
    """

    def __init__(
        self, folder: Path, generation: int, drain: Callable[[int, int, list[bytes]], None],
        *, interval: float = 0.1,
    ) -> None:
        self.folder = folder
        self._drain_fn = drain
        self._interval = interval
        self._lock = threading.Lock()
        self._done = threading.Condition()
        self._wake = threading.Event()
        self._stop = False
        self.generation = generation
        self.offset = 0  # consumed offset in the current generation (set by the owner)
        self._written = 0
        self._fd = -1
        self._lock_fd = os.open(folder / "audit-journal.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError if owned
        self._thread: threading.Thread | None = None

    def start(self, offset: int) -> None:
        self.offset = offset
        self._open_current()
        self._thread = threading.Thread(target=self._run, name="audit-journal", daemon=True)
        self._thread.start()

    def _open_current(self) -> None:
        path = journal_path(self.folder, self.generation)
        self._fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._written = os.fstat(self._fd).st_size

    def write(self, payload: bytes) -> None:
        """Append one record; it is in the file (the OS's cache) when this returns."""
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            os.write(self._fd, frame)
            self._written += len(frame)
        # no wake-up here: the drain runs every ``interval`` and chains a batch at a time
        # (waking per record would cost a transaction and a thread switch per request)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every record written so far is in the chain."""
        with self._lock:
            target = (self.generation, self._written)
        self._wake.set()
        with self._done:
            self._done.wait_for(lambda: (self.generation, self.offset) >= target
                                or self._stop, timeout)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.drain_once()

    def drain_once(self) -> None:
        path = journal_path(self.folder, self.generation)
        frames, new_offset = read_frames(path, self.offset)
        if frames:
            self._drain_fn(self.generation, new_offset, frames)
        with self._done:
            self.offset = new_offset
            self._done.notify_all()
        if new_offset >= ROTATE_BYTES:
            self._rotate(new_offset)

    def _rotate(self, consumed: int) -> None:
        with self._lock:
            if self._written != consumed:
                return  # records arrived since: rotate on a later, idle pass
            old = journal_path(self.folder, self.generation)
            os.close(self._fd)
            self.generation += 1
            self._open_current()
        self._drain_fn(self.generation, 0, [])  # store the new generation
        with self._done:
            self.offset = 0
            self._done.notify_all()
        old.unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._fd >= 0:
            os.close(self._fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
