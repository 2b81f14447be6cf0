"""The data-quality summary of the steward console: counts and completeness checks.

Every number is a FHIR search with ``_summary=count`` through the steward's guarded
repository, so the summary covers exactly what the gate lets the steward see (records
of patients who opted out of operations use are not counted) and each check is audited
like any search. Input rejected at ingest (``DIR/rejects/*.ndjson``) is counted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from healthmesh.gate.egress import GuardedRepository

__all__ = ["CHECKS", "Check", "QualityRow", "quality_summary", "reject_counts"]


@dataclass(frozen=True, slots=True)
class Check:
    """A completeness check: records of ``resource_type`` matching ``params`` are gaps."""

    resource_type: str
    label: str  # a catalogue key
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class QualityRow:
    resource_type: str
    label: str
    total: int
    failing: int

    @property
    def percent_ok(self) -> float | None:
        return None if self.total == 0 else round(100.0 * (self.total - self.failing)
                                                  / self.total, 1)


CHECKS = (
    Check("Patient", "quality.birthdate", (("birthdate:missing", "true"),)),
    Check("Patient", "quality.gender", (("gender:missing", "true"),)),
    Check("Observation", "quality.obs_date", (("date:missing", "true"),)),
    Check("Observation", "quality.obs_code", (("code:missing", "true"),)),
    Check("Condition", "quality.condition_onset", (("onset-date:missing", "true"),)),
    Check("Encounter", "quality.encounter_date", (("date:missing", "true"),)),
    Check("Immunization", "quality.immunization_date", (("date:missing", "true"),)),
)


def count(repo: GuardedRepository, rtype: str, params: tuple[tuple[str, str], ...] = ()) -> int:
    query = repo.parse(rtype, [*params, ("_summary", "count")], strict=True)
    return int(repo.search(query).total or 0)


def quality_summary(repo: GuardedRepository) -> list[QualityRow]:
    """One row per check, with the total of its resource type and the records failing."""
    totals: dict[str, int] = {}
    rows = []
    for check in CHECKS:
        if check.resource_type not in totals:
            totals[check.resource_type] = count(repo, check.resource_type)
        total = totals[check.resource_type]
        failing = count(repo, check.resource_type, check.params) if total else 0
        rows.append(QualityRow(check.resource_type, check.label, total, failing))
    return rows


def reject_counts(folder: Path, limit_bytes: int = 64 * 1024 * 1024) -> list[tuple[str, int]]:
    """(file name, rejected records) of the node's rejects folder, largest first."""
    out = []
    for path in sorted((folder / "rejects").glob("*.ndjson")):
        if path.stat().st_size > limit_bytes:
            out.append((path.name, -1))  # too large to count on a page view
            continue
        with path.open("rb") as handle:
            out.append((path.name, sum(1 for line in handle if line.strip())))
    return sorted(out, key=lambda item: item[1], reverse=True)
