"""``healthmesh ingest`` of ``.hl7`` files: message by message, each its own transaction.

A file may hold one message, several, or an FHS/BHS batch (the envelope segments
are skipped). Each message that is not accepted becomes a
:class:`~healthmesh.ingest.readers.Rejected` naming the file, the line its MSH is
on, its MSH-10 and the reason, with the raw message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from healthmesh.errors import InputError
from healthmesh.hl7v2.intake import Hl7Intake, Receipt
from healthmesh.hl7v2.message import RawMessage, Unreadable, split_messages
from healthmesh.ingest.readers import Rejected

__all__ = ["HL7_SUFFIXES", "load_hl7_file"]

HL7_SUFFIXES = (".hl7",)


def load_hl7_file(intake: Hl7Intake, path: Path, *, reject: Callable[[Rejected], None],
                  accepted: Callable[[Receipt], None]) -> int:
    """Take every message of one file into the node; returns how many were read."""
    limit = intake.node.settings.mllp_max_message_bytes
    read = 0
    try:
        with path.open("rb") as handle:
            for item in split_messages(handle, limit):
                read += 1
                if isinstance(item, Unreadable):
                    reject(Rejected(str(path), item.line, item.reason))
                    continue
                receipt = intake.receive(item.data)
                if receipt.ack_code == "AA":
                    accepted(receipt)
                else:
                    reject(_rejected(path, item, receipt))
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    return read


def _rejected(path: Path, item: RawMessage, receipt: Receipt) -> Rejected:
    error = receipt.error
    where = f" at {error.location}" if error is not None and error.location else ""
    control = f"message {receipt.control_id}: " if receipt.control_id else ""
    reason = f"{control}{receipt.ack_code}{where}: {receipt.reason}"
    return Rejected(str(path), item.line, reason, raw=item.data)
