"""A node folder: its settings, its store and its FHIR service.

Layout of a node folder::

    DIR/node.toml       settings ([node] table), written by ``healthmesh node init``
    DIR/store.sqlite    the FHIR store (SQLite, WAL mode)
    DIR/rejects/        rejected input from ``healthmesh ingest`` (NDJSON with reasons)
    DIR/audit.sqlite    the hash-chained audit log
    DIR/keys/           the node's signing keys (audit, access tokens; mode 0600)
    DIR/auth.sqlite     OAuth clients, users, codes and refresh tokens (hashes only)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthmesh.audit import AuditLog, load_or_create_node_key
from healthmesh.auth import NodeAuth
from healthmesh.bulk import BulkExports
from healthmesh.consent.policy import Policy, load_policy
from healthmesh.errors import ConfigError
from healthmesh.fhir.service import FhirService
from healthmesh.gate.egress import EgressGate
from healthmesh.gate.scopes import AccessScopes
from healthmesh.settings import Settings, load_settings
from healthmesh.store.sqlite import SQLiteStore

__all__ = ["Node", "init_node", "open_node"]

NODE_FILE = "node.toml"
STORE_FILE = "store.sqlite"


@dataclass
class Node:
    """An open node: settings, store and FHIR service."""

    folder: Path
    settings: Settings
    store: SQLiteStore
    fhir: FhirService
    policy: Policy
    audit: AuditLog
    gate: EgressGate
    auth: NodeAuth
    exports: BulkExports

    def close(self) -> None:
        self.auth.close()
        self.audit.close()
        self.store.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def init_node(folder: Path, *, name: str | None = None) -> Path:
    """Create a node folder (idempotent for an existing node folder)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / NODE_FILE).exists():
        raise ConfigError(f"{folder} is not empty and is not a healthmesh node folder")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # health data: closed to the machine's other users
    config = folder / NODE_FILE
    if not config.exists():
        label = (name or folder.resolve().name).replace('"', "'")
        config.write_text(f'[node]\nname = "{label}"\n', "utf-8")
    (folder / "rejects").mkdir(exist_ok=True)
    SQLiteStore(folder / STORE_FILE).close()
    return folder


def open_node(folder: Path, overrides: dict[str, Any] | None = None) -> Node:
    """Open an existing node folder."""
    folder = Path(folder)
    if not (folder / NODE_FILE).exists():
        raise ConfigError(
            f"{folder} is not a healthmesh node folder (no {NODE_FILE}); "
            f"create one with 'healthmesh node init {folder}'"
        )
    settings = load_settings(folder, overrides)
    policy_path = folder / settings.consent_policy if settings.consent_policy else None
    policy = load_policy(policy_path)
    store = SQLiteStore(folder / STORE_FILE)
    fhir = FhirService(store)
    audit = AuditLog(folder, signing_key=load_or_create_node_key(folder), journal=True)
    scopes = AccessScopes(store, policy, settings.organization or None)
    gate = EgressGate(fhir, scopes, audit, denied_status=settings.denied_status)
    auth = NodeAuth(folder, audit, min(settings.access_token_seconds, 86400))
    exports = BulkExports(folder, gate, settings)
    return Node(folder, settings, store, fhir, policy, audit, gate, auth, exports)
