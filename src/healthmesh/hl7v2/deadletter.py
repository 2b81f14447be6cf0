"""The dead-letter folder: every message the MLLP server did not accept, with the reason.

``DIR/dead-letter/<time>-<n>.hl7`` holds the raw bytes as received (re-ingest it with
``healthmesh ingest DIR FILE`` once it is fixed) and ``<time>-<n>.reason.json`` says
when, from whom, which ACK code was sent and why. Both files are fsynced before the
error ACK goes out, so a rejected message is never lost either.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DeadLetter"]

FOLDER = "dead-letter"


class DeadLetter:
    """Writes rejected messages under ``node_folder/dead-letter/``."""

    def __init__(self, node_folder: Path) -> None:
        self.folder = Path(node_folder) / FOLDER
        self._counter = itertools.count(1)
        self.count = 0

    def add(self, raw: bytes, *, reason: str, ack_code: str | None, peer: str = "",
            control_id: str | None = None, code: str | None = None,
            location: str | None = None, truncated: bool = False) -> Path:
        """Keep one message and its reason; returns the path of the raw file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        stem = f"{now.strftime('%Y%m%dT%H%M%S.%f')}-{os.getpid()}-{next(self._counter):06d}"
        raw_path = self.folder / f"{stem}.hl7"
        info: dict[str, Any] = {
            "received": now.isoformat(), "peer": peer, "ack": ack_code, "reason": reason,
            "control_id": control_id, "error_code": code, "location": location,
            "bytes": len(raw), "truncated": truncated, "raw_file": raw_path.name,
        }
        _write_synced(raw_path, raw)
        _write_synced(self.folder / f"{stem}.reason.json",
                      orjson.dumps(info, option=orjson.OPT_INDENT_2))
        _sync_dir(self.folder)
        self.count += 1
        return raw_path


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
