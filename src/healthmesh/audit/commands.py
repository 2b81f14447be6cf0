"""What the ``healthmesh audit`` commands do, as plain functions (the CLI wires them).

``verify_folder`` opens the log read-only and verifies it against the node key in
``DIR/keys/`` (or, without one, the public key stored in the log, which only proves
internal consistency: an external auditor passes the published key to
:meth:`AuditLog.verify` instead). ``export_folder`` writes AuditEvent NDJSON.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import orjson

from healthmesh.audit.chain import VerifyResult
from healthmesh.audit.fhir import to_audit_event
from healthmesh.audit.log import AuditLog
from healthmesh.errors import ConfigError
from healthmesh.settings import load_settings

__all__ = ["export_folder", "verify_folder"]


def _node_name(folder: Path) -> str:
    try:
        return load_settings(folder).name
    except ConfigError:
        return Path(folder).resolve().name


def verify_folder(folder: Path) -> VerifyResult:
    """Verify the audit log of the node in ``folder`` (read-only)."""
    with AuditLog(Path(folder), readonly=True) as log:
        return log.verify()


@contextmanager
def _output(out: Path | None) -> Iterator[IO[bytes]]:
    if out is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(out, "wb") as handle:
        yield handle


def export_folder(folder: Path, out: Path | None, since: int | None = None) -> int:
    """Write the node's audit entries as AuditEvent NDJSON to ``out`` (stdout if None).

    ``since`` keeps entries recorded at or after that time (epoch microseconds).
    Entries go oldest first; the count written is returned.
    """
    folder = Path(folder)
    name = _node_name(folder)
    count = 0
    with AuditLog(folder, readonly=True) as log, _output(out) as handle:
        for entry in log.scan(since=since):
            event = to_audit_event(entry, node_name=name, log_id=log.log_id)
            handle.write(orjson.dumps(event) + b"\n")
            count += 1
    return count
