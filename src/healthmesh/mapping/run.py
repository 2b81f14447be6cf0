"""Run a mapping over flat files: rows -> FHIR resources -> the node's normal write path.

Every data row ends in exactly one place: written (as one or more resources), skipped by
the mapping's ``filter`` (counted), or in the rejects file with its file, row number, line
and reason. A row is atomic: when one of its resources is invalid, none is written. With
``group_by``, consecutive rows with the same group values form one unit (a claim and its
lines) and are written or rejected together; a group that shows up again after another
group is rejected with a request to sort the file, because writing it would replace the
earlier, fuller resource.

Resource ids are derived from the mapping id, the resource name and the ``key`` columns, so
rerunning a load does not duplicate anything (unchanged resources get no new version).
Resources go through the same validation and preparation as every other write
(:func:`healthmesh.ingest.worker.process_resource`: FHIR R4 validation, code warnings,
search index rows) and are written in batches, each one store transaction; the node's
local-code -> LOINC table is applied first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from healthmesh.errors import FhirError
from healthmesh.fhir.bundles import rewrite_references
from healthmesh.ingest.worker import process_resource
from healthmesh.mapping.model import Mapping, ResourceRule
from healthmesh.mapping.readers import SourceRow, detect_format, read_rows
from healthmesh.mapping.template import RenderContext, RowError
from healthmesh.mapping.values import matches, typed_value
from healthmesh.node import Node
from healthmesh.store.prepare import PreparedResource
from healthmesh.terminology.checks import warnings_in
from healthmesh.terminology.errors import UnitError
from healthmesh.terminology.local import LocalCodes

__all__ = ["MappingStats", "run_mapping"]

MAX_REMEMBERED = 65_536
"""Resources remembered by content, so one repeated on many rows is prepared once."""

MAX_RECORD_CHARS = 4096
"""Longest cell text copied into the rejects file (longer cells are cut, and say so)."""

Progress = Callable[[int], None]


@dataclass(slots=True)
class MappingStats:
    """Counts of one mapping run."""

    files: int = 0
    rows: int = 0
    skipped: int = 0
    rejected: int = 0
    resources: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    warnings: int = 0
    rejects_file: str | None = None
    by_type: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class _Rejects:
    def __init__(self, path: Path) -> None:
        self.path, self.count = path, 0
        self._handle: IO[bytes] | None = None

    def add(self, source: str, row: SourceRow, reason: str) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("ab")
        item = {"source": source, "row": row.number, "line": row.line, "reason": reason,
                "record": {k: _cut(v) for k, v in row.values.items()}}
        self._handle.write(orjson.dumps(item) + b"\n")
        self.count += 1

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _cut(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_RECORD_CHARS:
        return value
    return value[:MAX_RECORD_CHARS] + f"... [{len(value) - MAX_RECORD_CHARS} more characters]"


@dataclass(slots=True)
class _Unit:
    """Rows written or rejected together: one row, or one group of rows."""

    key: tuple[Any, ...] | None
    rows: list[tuple[SourceRow, dict[str, Any]]] = field(default_factory=list)
    failed: tuple[SourceRow, str] | None = None  # the first row that could not be typed


def run_mapping(node: Node, mapping: Mapping, paths: list[Path], *, rejects_path: Path,
                progress: Progress | None = None) -> MappingStats:
    """Map every row of the files in ``paths`` into ``node``; returns the counts."""
    stats = MappingStats(files=len(paths))
    rejects = _Rejects(rejects_path)
    writer = _Writer(node, mapping, stats, rejects)
    try:
        for path in paths:
            writer.load(path, progress)
        writer.flush()
    finally:
        rejects.close()
    stats.rejected = rejects.count
    stats.rejects_file = str(rejects_path) if rejects.count else None
    _audit(node, mapping, paths, stats)
    return stats


def _audit(node: Node, mapping: Mapping, paths: list[Path], stats: MappingStats) -> None:
    from healthmesh.audit import AuditRecord

    node.audit.append(AuditRecord(
        actor="system", action="ingest", decision="n/a", rule="admin:ingest",
        reason=f"healthmesh ingest --mapping {mapping.id} of {stats.files} file(s)",
        outcome="success" if not stats.rejected else "failure",
        detail={"mapping": mapping.id, "files": [str(p) for p in paths][:20],
                "rows": stats.rows, "skipped": stats.skipped, "rejected": stats.rejected,
                "created": stats.created, "updated": stats.updated,
                "unchanged": stats.unchanged, "warnings": stats.warnings},
    ))


class _Writer:
    def __init__(self, node: Node, mapping: Mapping, stats: MappingStats,
                 rejects: _Rejects) -> None:
        self.node, self.mapping, self.stats, self.rejects = node, mapping, stats, rejects
        self.local = LocalCodes.for_node(node.folder)
        self.batch: list[PreparedResource] = []
        self.batch_size = node.settings.ingest_batch_size
        self.closed_groups: set[bytes] = set()
        self._resolve: Callable[[str], str] | None = None
        self._conditional = any(r.template.conditional for r in mapping.resources)
        self._written: dict[tuple[str, str], bytes] = {}  # (type, id) -> content digest

    # -- reading ---------------------------------------------------------------------

    def load(self, path: Path, progress: Progress | None) -> None:
        m = self.mapping
        rows = read_rows(path, detect_format(path, m.format), delimiter=m.delimiter,
                         encoding=m.encoding, max_field_bytes=m.max_field_bytes)
        unit: _Unit | None = None
        for row, values, error in self._typed(str(path), rows, progress):
            key = tuple(values.get(c) for c in m.group_by) if m.group_by else None
            if unit is not None and (key is None or key != unit.key):
                self.finish(str(path), unit)
                unit = None
            if unit is None:
                unit = _Unit(key)
            unit.rows.append((row, values))
            if error is not None and unit.failed is None:
                unit.failed = (row, error)
        if unit is not None:
            self.finish(str(path), unit)
        self.closed_groups.clear()  # groups do not span files

    def _typed(self, source: str, rows: Iterator[SourceRow], progress: Progress | None
               ) -> Iterator[tuple[SourceRow, dict[str, Any], str | None]]:
        """Typed rows, with the reason when one cannot be typed (its group fails with it).

        Rows that cannot be read, or whose group columns cannot be typed, are rejected
        here: they belong to no group.
        """
        m = self.mapping
        first = list(dict.fromkeys([*m.group_by, *(c.column for c in m.filter)]))
        for row in rows:
            self.stats.rows += 1
            if progress is not None:
                progress(1)
            if row.error is not None:
                self.rejects.add(source, row, row.error)
                continue
            try:
                values = {c: typed_value(m.columns[c], row.values.get(c), m.timezone)
                          for c in first}
            except RowError as exc:
                self.rejects.add(source, row, str(exc))
                continue
            if not all(matches(cond, values) for cond in m.filter):
                self.stats.skipped += 1
                continue
            error = None
            for name, column in m.columns.items():
                if name in values:
                    continue
                try:
                    values[name] = typed_value(column, row.values.get(name), m.timezone)
                except RowError as exc:
                    error = error or str(exc)
            yield row, values, error

    # -- building ----------------------------------------------------------------------

    def finish(self, source: str, unit: _Unit) -> None:
        if unit.key is not None:
            digest = hashlib.blake2b(orjson.dumps(unit.key, default=str),
                                     digest_size=12).digest()
            if digest in self.closed_groups:
                self._reject_unit(source, unit, None, "this group "
                                  f"({_describe(self.mapping.group_by, unit.key)}) appeared "
                                  "earlier in the file, after other groups came between: "
                                  "sort the file by " + ", ".join(self.mapping.group_by))
                return
            self.closed_groups.add(digest)
        if unit.failed is not None:
            self._reject_unit(source, unit, *unit.failed)
            return
        try:
            resources = self._build(unit)
            # a resource repeated on many rows (a Device) is prepared once, then counted
            # as unchanged while its content stays the same
            digests = [self._digest(r) for r in resources]
            fresh = [r for r, (k, d) in zip(resources, digests, strict=True)
                     if self._written.get(k) != d]
            prepared = [self._prepare(r) for r in fresh]
        except RowError as exc:
            failed = exc.args[1] if len(exc.args) > 1 else None
            self._reject_unit(source, unit, failed, exc.args[0])
            return
        repeated = len(resources) - len(fresh)
        self.stats.resources += repeated
        self.stats.unchanged += repeated
        self._remember(digests)
        self.rejects.flush()
        for item in prepared:
            self.stats.resources += 1
            self.stats.by_type[item.type] = self.stats.by_type.get(item.type, 0) + 1
            self.stats.warnings += warnings_in(item.content)
            self.batch.append(item)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def _digest(self, resource: dict[str, Any]) -> tuple[tuple[str, str], bytes]:
        key = (resource["resourceType"], resource["id"])
        return key, hashlib.blake2b(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS),
                                    digest_size=16).digest()

    def _remember(self, digests: list[tuple[tuple[str, str], bytes]]) -> None:
        if len(self._written) + len(digests) > MAX_REMEMBERED:
            self._written.clear()
        self._written.update(digests)

    def _reject_unit(self, source: str, unit: _Unit, failed: SourceRow | None,
                     reason: str) -> None:
        failed = failed or unit.rows[0][0]
        for row, _ in unit.rows:
            if row is failed or len(unit.rows) == 1:
                self.rejects.add(source, row, reason)
            else:
                self.rejects.add(source, row, f"rejected with its group "
                                 f"({_describe(self.mapping.group_by, unit.key)}): row "
                                 f"{failed.number}: {reason}")

    def _build(self, unit: _Unit) -> list[dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        group = [values for _, values in unit.rows]
        for index, (row, values) in enumerate(unit.rows, start=1):
            ids = {r.name: self._id(r, values) for r in self.mapping.resources}
            ctx = RenderContext(values, ids, index, group)
            for rule in self.mapping.resources:
                if rule.when and not all(matches(c, values) for c in rule.when):
                    continue
                try:
                    self._render(rule, ctx, out)
                except RowError as exc:
                    raise RowError(f"{rule.name}: {exc}", row) from None
                except UnitError as exc:
                    raise RowError(f"{rule.name}: {exc}", row) from None
        return list(out.values())

    def _render(self, rule: ResourceRule, ctx: RenderContext,
                out: dict[tuple[str, str], dict[str, Any]]) -> None:
        rid = ctx.ids[rule.name]
        existing = out.get((rule.type, rid))
        if rule.append is not None and existing is not None:
            entry = rule.template.render(ctx) or {}
            existing.setdefault(rule.append, []).extend(entry.get(rule.append) or [])
            return
        body = rule.template.render(ctx) or {}
        out[(rule.type, rid)] = {"resourceType": rule.type, "id": rid, **body}

    def _id(self, rule: ResourceRule, values: dict[str, Any]) -> str:
        key = [self.mapping.id, rule.name, *(values.get(c) for c in rule.key)]
        digest = hashlib.sha256(orjson.dumps(key, default=str)).hexdigest()[:32]
        return f"{rule.name}-{digest}"

    def _prepare(self, resource: dict[str, Any]) -> PreparedResource:
        try:
            resource = self.local.apply(resource)
        except UnitError as exc:
            raise RowError(str(exc)) from None
        if self._conditional and _has_conditional(resource):
            try:
                rewrite_references(resource, {}, self._resolver())
            except FhirError as exc:
                raise RowError(f"{resource['resourceType']}: {exc.message}") from None
        kind, value = process_resource(resource, self.mapping.path, None)
        if kind == "reject":
            raise RowError(value.reason)
        return value

    def _resolver(self) -> Callable[[str], str]:
        from healthmesh.fhir.bundles import _resolver

        self.flush()  # the target may be in the queued batch
        if self._resolve is None:
            self._resolve = _resolver(self.node.fhir)
        return self._resolve

    def flush(self) -> None:
        if not self.batch:
            return
        self.rejects.flush()
        batch, self.batch = _dedupe(self.batch), []
        for outcome in self.node.store.put_prepared(batch):
            if outcome == "created":
                self.stats.created += 1
            elif outcome == "updated":
                self.stats.updated += 1
            else:
                self.stats.unchanged += 1


def _has_conditional(resource: Any) -> bool:
    if isinstance(resource, dict):
        ref = resource.get("reference")
        if isinstance(ref, str) and "?" in ref:
            return True
        return any(_has_conditional(v) for v in resource.values())
    if isinstance(resource, list):
        return any(_has_conditional(v) for v in resource)
    return False


def _describe(columns: tuple[str, ...], key: tuple[Any, ...] | None) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(columns, key or (), strict=False))


def _dedupe(batch: list[PreparedResource]) -> list[PreparedResource]:
    """Keep the last version of a resource that several rows produced (same id)."""
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(batch):
        seen[(item.type, item.id)] = i
    if len(seen) == len(batch):
        return batch
    keep = set(seen.values())
    return [item for i, item in enumerate(batch) if i in keep]
