"""The node's tamper-evident audit log: who did what to whose data, under which decision.

Every request that reads or writes health data appends one :class:`AuditRecord` to the
node's :class:`AuditLog` (``DIR/audit.sqlite``). Entries form a SHA-256 hash chain and
the node's ed25519 key signs a checkpoint of the chain head at regular intervals, so
:meth:`AuditLog.verify` finds any edit, deletion, insertion, reordering or truncation
(see docs/audit.md for what it cannot find). Entries export as FHIR ``AuditEvent``
resources (:func:`to_audit_event`).

Modules: ``records`` (the record), ``chain`` (hashing and the verification walk),
``checkpoints`` (signed checkpoints), ``keys`` (the node key), ``schema`` (the SQLite
file), ``verify`` (verification of a file), ``log`` (:class:`AuditLog`), ``fhir``
(AuditEvent), ``commands`` (what the CLI runs), ``errors``.
"""

from __future__ import annotations

from healthmesh.audit.chain import ZERO_HASH, VerifyResult, entry_hash
from healthmesh.audit.checkpoints import Checkpoint
from healthmesh.audit.commands import export_folder, verify_folder
from healthmesh.audit.errors import AuditError, AuditLogCorrupt, InvalidAuditRecord
from healthmesh.audit.fhir import to_audit_event
from healthmesh.audit.keys import (
    load_node_key,
    load_or_create_node_key,
    load_public_key,
    public_key_id,
    public_key_pem,
)
from healthmesh.audit.log import AUDIT_FILE, AuditLog
from healthmesh.audit.records import ACTIONS, DECISIONS, AuditEntry, AuditRecord, now_us

__all__ = [
    "ACTIONS",
    "AUDIT_FILE",
    "DECISIONS",
    "ZERO_HASH",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditLogCorrupt",
    "AuditRecord",
    "Checkpoint",
    "InvalidAuditRecord",
    "VerifyResult",
    "entry_hash",
    "export_folder",
    "load_node_key",
    "load_or_create_node_key",
    "load_public_key",
    "now_us",
    "public_key_id",
    "public_key_pem",
    "to_audit_event",
    "verify_folder",
]
