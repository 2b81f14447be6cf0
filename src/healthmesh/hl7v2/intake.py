"""Taking one HL7 v2 message into a node: parse, convert, validate, store, in one transaction.

The resources go through the node's normal write path (FHIR R4 validation, then
:func:`~healthmesh.store.prepare.prepare` for the search indexes and the patient
compartment, then ``put_prepared``), exactly like ``healthmesh ingest`` of NDJSON.
All the resources of a message, and its Provenance, are one store transaction:
a message is stored whole or not at all.

An exact re-send (same sender and MSH-10, same bytes) is found by its Provenance
and acknowledged without a write; a re-sent business object (same patient, visit,
order, result) gets the same id and so updates, and is ``unchanged`` when equal.

``durable=True`` (the MLLP server) also fsyncs the store's write-ahead log after
the commit, so the ACK that follows means the message survives a power cut: the
node's SQLite store runs ``synchronous=NORMAL``, under which a commit survives a
crash of the process but not of the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson

from healthmesh.errors import FhirError, HealthmeshError
from healthmesh.fhir.validation import validate
from healthmesh.hl7v2.context import Conversion, Entry
from healthmesh.hl7v2.convert import DIGEST_EXTENSION, convert, message_digest, provenance_id
from healthmesh.hl7v2.datatypes import resolve_timezone
from healthmesh.hl7v2.errors import INTERNAL_ERROR, ConversionError, Hl7Error
from healthmesh.hl7v2.message import Hl7Message, parse_message
from healthmesh.node import Node
from healthmesh.store.prepare import PreparedResource, prepare

__all__ = ["Hl7Intake", "Receipt"]

_UNIONED = ("identifier", "link", "name", "telecom", "address")


@dataclass(slots=True)
class Receipt:
    """What became of one message: the ACK code and, when not AA, why."""

    ack_code: str
    message: Hl7Message | None = None
    error: Hl7Error | None = None
    duplicate: bool = False
    outcomes: dict[str, int] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        return self.error.message if self.error is not None else None

    @property
    def control_id(self) -> str | None:
        return self.message.control_id if self.message is not None else None


class Hl7Intake:
    """Receives messages for one node (not thread-safe: one intake per writer thread)."""

    def __init__(self, node: Node, *, durable: bool = False) -> None:
        self.node = node
        self.durable = durable
        self.tz: tzinfo = resolve_timezone(node.settings.hl7v2_timezone)

    def receive(self, raw: bytes, received: datetime | None = None) -> Receipt:
        """Parse, convert and store one message; never raises for a bad message."""
        message: Hl7Message | None = None
        try:
            message = parse_message(raw)
            return self._take(message, raw, received)
        except Hl7Error as exc:
            return Receipt(exc.ack_code, message, exc)
        except HealthmeshError as exc:  # the store failed (locked, full disk, ...)
            error = ConversionError(f"cannot store the message: {exc}", code=INTERNAL_ERROR)
            return Receipt("AE", message, error)

    def _take(self, message: Hl7Message, raw: bytes, received: datetime | None) -> Receipt:
        digest = message_digest(raw)
        if self._seen(message, digest):
            return Receipt("AA", message, duplicate=True)
        conv = convert(message, raw, self.tz, received or datetime.now(UTC))
        plain = [e for e in conv.entries.values() if e.mode == "replace"]
        prepared = [_prepared(e.resource) for e in plain]
        outcomes: dict[str, int] = {}
        try:
            with self.node.store.transaction():
                if self._seen(message, digest):  # another connection stored it meanwhile
                    return Receipt("AA", message, duplicate=True)
                batch = prepared + self._conditional(conv)
                for outcome in self.node.store.put_prepared(batch):
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        except FhirError as exc:
            raise ConversionError(f"cannot store the message: {exc.message}",
                                  code=INTERNAL_ERROR) from None
        if self.durable:
            self._sync()
        refs = [f"{t}/{i}" for t, i in conv.entries]
        return Receipt("AA", message, outcomes=outcomes, resources=refs)

    def _seen(self, message: Hl7Message, digest: str) -> bool:
        stored = self.node.store.read("Provenance", provenance_id(message))
        if stored is None or stored.content is None:
            return False
        extensions = stored.resource().get("extension") or []
        return any(e.get("url") == DIGEST_EXTENSION and e.get("valueString") == digest
                   for e in extensions)

    def _conditional(self, conv: Conversion) -> list[PreparedResource]:
        """``if-absent`` and ``overlay`` entries, decided against the stored versions."""
        out = []
        for entry in conv.entries.values():
            if entry.mode == "replace":
                continue
            resource = entry.resource
            stored = self.node.store.read(resource["resourceType"], resource["id"])
            exists = stored is not None and stored.content is not None
            if entry.mode == "if-absent" and exists:
                continue
            if entry.mode == "overlay" and exists:
                assert stored is not None
                resource = _overlay(stored.resource(), entry)
            out.append(_prepared(resource))
        return out

    def _sync(self) -> None:
        """fsync the write-ahead log (and the database file) after a commit."""
        for suffix in ("-wal", ""):
            path = self.node.store.path + suffix
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _overlay(stored: dict[str, Any], entry: Entry) -> dict[str, Any]:
    """The stored resource with the message's elements on top; lists of ids/links unioned."""
    merged = {k: v for k, v in stored.items() if k != "meta"}
    meta = {k: v for k, v in (stored.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        merged["meta"] = meta
    for key, value in entry.resource.items():
        if key in _UNIONED and isinstance(merged.get(key), list):
            have = [orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in merged[key]]
            merged[key] = merged[key] + [v for v in value if orjson.dumps(
                v, option=orjson.OPT_SORT_KEYS) not in have]
        else:
            merged[key] = value
    return merged


def _prepared(resource: dict[str, Any]) -> PreparedResource:
    """Validate (FHIR R4) and prepare one resource; a failure is an AE naming it."""
    issues = [i for i in validate(resource) if i.severity in ("error", "fatal")]
    if issues:
        first = issues[0]
        raise ConversionError(
            f"the {resource['resourceType']} made from the message is not valid FHIR R4 "
            f"({len(issues)} problem(s); first: {first.expression or ''} {first.message})",
            code=INTERNAL_ERROR)
    return prepare(resource)
