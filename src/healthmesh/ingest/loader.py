"""``healthmesh ingest``: load NDJSON and Bundle files into a node, losing nothing.

Every resource read is either written or written to the rejects file with its
source, line and reason. Resources are written in batches, each batch one
store transaction: a crash or Ctrl-C loses at most the batch in flight, and
because writes are idempotent (same id and same content: no new version) a
rerun of the same command completes the load.

Bundles of type ``transaction`` are loaded atomically (all entries or none);
``batch`` bundles entry by entry; other bundle types (``collection``,
``searchset``) as plain resources. POST entries keep the ids they carry, so a
Synthea bundle loads the same way every time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from healthmesh.errors import FhirError, InputError
from healthmesh.fhir.bundles import prepare_bundle, rewrite_references
from healthmesh.ingest.pipeline import Pipeline
from healthmesh.ingest.readers import Rejected, input_files, read_json_file, read_ndjson_raw
from healthmesh.ingest.worker import Outcome, process_resource
from healthmesh.node import Node
from healthmesh.store.prepare import PreparedResource, prepare

__all__ = ["IngestStats", "ingest"]

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_JSON_FILE_BYTES = 1024 * 1024 * 1024
CHUNK_LINES = 500
PARALLEL_FROM_BYTES = 8 * 1024 * 1024

Progress = Callable[[int], None]


@dataclass(slots=True)
class IngestStats:
    """Counts of one ingest run."""

    files: int = 0
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejects_file: str | None = None
    errors: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        if outcome == "created":
            self.created += 1
        elif outcome == "updated":
            self.updated += 1
        else:
            self.unchanged += 1


class RejectsFile:
    """Rejected records, appended as NDJSON and flushed before each batch commits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None
        self.count = 0

    def add(self, item: Rejected) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("ab")
        self._handle.write(item.to_json() + b"\n")
        self.count += 1

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def ingest(
    node: Node,
    paths: list[Path],
    *,
    rejects_path: Path,
    progress: Progress | None = None,
    on_reject: Callable[[Rejected], None] | None = None,
    workers: int | None = None,
) -> IngestStats:
    """Load every file under ``paths`` into ``node``; returns the counts."""
    files = input_files(paths)
    stats = IngestStats(files=len(files))
    rejects = RejectsFile(rejects_path)
    if workers is None:
        ndjson_bytes = sum(p.stat().st_size for p, kind in files if kind == "ndjson")
        # starting worker processes costs about a second: not worth it for small inputs
        workers = node.settings.ingest_workers if ndjson_bytes > PARALLEL_FROM_BYTES else 0
    with Pipeline(workers) as pipeline:
        loader = _Loader(node, stats, rejects, progress, on_reject, pipeline)
        try:
            for path, kind in files:
                if kind == "ndjson":
                    loader.load_ndjson(path)
                elif kind == "hl7":
                    loader.load_hl7(path)
                else:
                    loader.load_json(path)
            loader.flush()
        finally:
            rejects.close()
    stats.rejected = rejects.count
    stats.rejects_file = str(rejects_path) if rejects.count else None
    _audit_ingest(node, paths, stats)
    return stats


def _audit_ingest(node: Node, paths: list[Path], stats: IngestStats) -> None:
    """One audit record for the whole load (an administrative write of many records)."""
    from healthmesh.audit import AuditRecord

    node.audit.append(AuditRecord(
        actor="system", action="ingest", decision="n/a", rule="admin:ingest",
        reason=f"healthmesh ingest of {stats.files} file(s)",
        outcome="success" if not stats.rejected else "failure",
        detail={"files": [str(p) for p in paths][:20], "read": stats.read,
                "created": stats.created, "updated": stats.updated,
                "unchanged": stats.unchanged, "rejected": stats.rejected},
    ))


class _Loader:
    def __init__(
        self,
        node: Node,
        stats: IngestStats,
        rejects: RejectsFile,
        progress: Progress | None,
        on_reject: Callable[[Rejected], None] | None,
        pipeline: Pipeline,
    ) -> None:
        self.node = node
        self.service = node.fhir
        self.stats = stats
        self.rejects = rejects
        self.progress = progress
        self.on_reject = on_reject
        self.batch: list[PreparedResource] = []
        self.pipeline = pipeline
        self.batch_size = node.settings.ingest_batch_size
        self._resolved: dict[str, str] = {}
        self._hl7: Any = None  # the HL7 v2 intake, made at the first .hl7 file

    def reject(self, item: Rejected) -> None:
        self.rejects.add(item)
        if self.on_reject is not None:
            self.on_reject(item)

    # -- NDJSON ----------------------------------------------------------------------

    def load_ndjson(self, path: Path) -> None:
        source = str(path)
        chunk: list[tuple[int, bytes]] = []
        for number, raw, size in read_ndjson_raw(path, MAX_LINE_BYTES):
            if self.progress is not None:
                self.progress(size)
            if isinstance(raw, Rejected):
                self.stats.read += 1
                self.reject(raw)
                continue
            chunk.append((number, raw))
            if len(chunk) >= CHUNK_LINES:
                self._take(self.pipeline.submit(source, chunk))
                chunk = []
        if chunk:
            self._take(self.pipeline.submit(source, chunk))
        self._take(self.pipeline.drain())

    def _take(self, results: Iterable[tuple[str, list[tuple[int, Outcome]]]]) -> None:
        for source, outcomes in results:
            for number, (kind, value) in outcomes:
                if kind == "skip":
                    continue
                self.stats.read += 1
                if kind == "reject":
                    self.reject(value)
                elif kind == "resolve":
                    self.add_resource(value, source, number)
                else:
                    self._queue(PreparedResource(*value))

    def add_resource(self, resource: Any, source: str, line: int | None) -> None:
        """Resolve conditional references, validate and queue one resource (main process)."""
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            try:
                rewrite_references(resource, {}, self._resolve)
            except FhirError as exc:
                issues = [i.to_fhir() for i in exc.issues]
                self.reject(Rejected(source, line, exc.message, resource, issues=issues))
                return
        kind, value = process_resource(resource, source, line)
        if kind == "reject":
            self.reject(value)
        else:
            self._queue(value)

    def _queue(self, prepared: PreparedResource) -> None:
        self.batch.append(prepared)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def _resolve(self, ref: str) -> str:
        if ref not in self._resolved:
            from healthmesh.fhir.bundles import _resolver

            self.flush()  # the target may be in the queued batch
            self._resolved[ref] = _resolver(self.service)(ref)
        return self._resolved[ref]

    def flush(self) -> None:
        if not self.batch:
            return
        self.rejects.flush()
        batch, self.batch = _dedupe(self.batch), []
        for outcome in self.node.store.put_prepared(batch):
            self.stats.count(outcome)

    # -- HL7 v2 (one transaction per message; see healthmesh.hl7v2.files) -------------

    def load_hl7(self, path: Path) -> None:
        from healthmesh.hl7v2.files import load_hl7_file
        from healthmesh.hl7v2.intake import Hl7Intake, Receipt

        def accepted(receipt: Receipt) -> None:
            self.stats.created += receipt.outcomes.get("created", 0)
            self.stats.updated += receipt.outcomes.get("updated", 0)
            self.stats.unchanged += receipt.outcomes.get("unchanged", 0)

        self.flush()  # messages may refer to resources queued from earlier files
        self.rejects.flush()
        if self._hl7 is None:
            self._hl7 = Hl7Intake(self.node)
        self.stats.read += load_hl7_file(self._hl7, path, reject=self.reject, accepted=accepted)
        if self.progress is not None:
            self.progress(path.stat().st_size)

    # -- JSON (Bundle or single resource) --------------------------------------------

    def load_json(self, path: Path) -> None:
        data = read_json_file(path, MAX_JSON_FILE_BYTES)
        if self.progress is not None:
            self.progress(path.stat().st_size)
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            btype = data.get("type")
            if btype in ("transaction", "batch"):
                self.load_bundle(path, data)
                return
            for i, entry in enumerate(_entries(data)):
                self.stats.read += 1
                resource = entry.get("resource") if isinstance(entry, dict) else None
                self.add_resource(resource, f"{path}#entry[{i}]", None)
            return
        self.stats.read += 1
        self.add_resource(data, str(path), None)

    def load_bundle(self, path: Path, bundle: dict[str, Any]) -> None:
        entries = _entries(bundle)
        self.stats.read += len(entries)
        self.flush()  # conditional references may point at queued resources
        try:
            btype, prepared = prepare_bundle(self.service, bundle, preserve_ids=True)
        except FhirError as exc:
            for i, entry in enumerate(entries):
                resource = entry.get("resource") if isinstance(entry, dict) else entry
                reason = f"bundle rejected as a whole: {exc.message}"
                self.reject(Rejected(f"{path}#entry[{i}]", None, reason, resource,
                                     issues=[x.to_fhir() for x in exc.issues]))
            return
        to_write = []
        for item in prepared:
            if item.error is not None:
                entry = entries[item.index]
                resource = entry.get("resource") if isinstance(entry, dict) else entry
                self.reject(Rejected(f"{path}#entry[{item.index}]", None, item.error.message,
                                     resource, issues=[x.to_fhir() for x in item.error.issues]))
            elif item.existing is not None:
                self.stats.unchanged += 1
            elif item.resource is not None and item.method in ("POST", "PUT"):
                to_write.append(item.resource)
        self.rejects.flush()
        prepared_items = [prepare(r) for r in to_write]
        for outcome in self.node.store.put_prepared(_dedupe(prepared_items)):
            self.stats.count(outcome)


def _entries(bundle: dict[str, Any]) -> list[Any]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InputError("Bundle.entry must be an array")
    return entries


def _dedupe(batch: list[PreparedResource]) -> list[PreparedResource]:
    """Keep the last of several versions of one resource in a batch (input order wins)."""
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(batch):
        seen[(item.type, item.id)] = i
    if len(seen) == len(batch):
        return batch
    keep = set(seen.values())
    return [item for i, item in enumerate(batch) if i in keep]

