"""Errors of the audit log, part of the healthmesh exception tree::

    HealthmeshError
     └── AuditError                  the audit log cannot be used as asked
          ├── InvalidAuditRecord     a record is malformed (bad action, reference, detail)
          └── AuditLogCorrupt        the chain fails verification (carries the VerifyResult)

SQLite errors are translated into :class:`AuditError` where the log calls SQLite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from healthmesh.errors import HealthmeshError

if TYPE_CHECKING:
    from healthmesh.audit.chain import VerifyResult

__all__ = ["AuditError", "AuditLogCorrupt", "InvalidAuditRecord"]


class AuditError(HealthmeshError):
    """The audit log cannot be opened, written or read as asked."""


class InvalidAuditRecord(AuditError, ValueError):
    """An :class:`~healthmesh.audit.AuditRecord` with a malformed field."""


class AuditLogCorrupt(AuditError):
    """The log fails verification; ``result`` says where and why."""

    def __init__(self, message: str, result: VerifyResult) -> None:
        super().__init__(message)
        self.result = result
