"""The anonymisation configuration: what to protect, how, and when to refuse a release.

A configuration is a JSON or YAML mapping (or the same as Python objects)::

    quasi_identifiers:
      age: {file: hierarchies/age.csv}          # an ARX hierarchy file (relative to this file)
      birth_date: {builder: date}               # date → month → year → 5-year band → *
      zip: {builder: zip}                       # ZIP → ZIP-3 → region → *
      age_years: {builder: age, bands: [5, 10, 20]}
      diagnosis: {builder: icd10}               # code → category → chapter → *
      sex: {levels: {male: ["*"], female: ["*"]}}
    sensitive: [salary-class]
    identifiers: [name]                         # removed from the output
    insensitive: [id]                           # kept as they are
    undeclared: error                           # or drop: columns declared nowhere
    models:
      - {type: k-anonymity, k: 5}
      - {type: distinct-l-diversity, attribute: salary-class, l: 2}
      - {type: entropy-l-diversity, attribute: salary-class, l: 1.5}
      - {type: t-closeness, attribute: salary-class, t: 0.2, distance: equal}  # or ordered
    suppression_limit: 0.05                     # share of records that may be suppressed
    metric: {name: loss, aggregate: geometric}  # loss | discernibility | entropy
    release:                                    # refuse the release above any of these
      threshold: 0.2                            # a record is "at risk" above this risk
      max_highest_risk: 0.2
      max_average_risk: 0.05
      max_records_at_risk: 0.0
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthmesh.privacy.anonymize.errors import AnonymizationConfigError
from healthmesh.privacy.anonymize.hierarchy import BUILDERS, Hierarchy
from healthmesh.privacy.anonymize.metrics import AGGREGATES, METRICS
from healthmesh.privacy.anonymize.models import (
    DistinctLDiversity,
    EntropyLDiversity,
    KAnonymity,
    PrivacyModel,
    TCloseness,
)
from healthmesh.privacy.anonymize.reidentification import DEFAULT_THRESHOLD

__all__ = ["MAX_CONFIG_BYTES", "AnonymizationConfig", "HierarchySpec", "ReleasePolicy",
           "load_config"]

MAX_CONFIG_BYTES = 1024 * 1024
_MODEL_TYPES = {
    "k-anonymity": (KAnonymity, ("k",)),
    "distinct-l-diversity": (DistinctLDiversity, ("attribute", "l")),
    "entropy-l-diversity": (EntropyLDiversity, ("attribute", "l")),
    "t-closeness": (TCloseness, ("attribute", "t", "distance")),
}
_RISK_LIMITS = {"max_highest_risk": "prosecutor_highest",
                "max_average_risk": "prosecutor_average",
                "max_records_at_risk": "prosecutor_records_at_risk"}


@dataclass(frozen=True)
class HierarchySpec:
    """Where a quasi-identifier's hierarchy comes from: a hierarchy, a file or a builder."""

    hierarchy: Hierarchy | None = None
    file: Path | None = None
    builder: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReleasePolicy:
    """Risk limits above which a result is refused (``None``: no limit on that measure)."""

    threshold: float = DEFAULT_THRESHOLD
    max_highest_risk: float | None = None
    max_average_risk: float | None = None
    max_records_at_risk: float | None = None

    def violations(self, report: Mapping[str, Any]) -> list[tuple[str, float, float]]:
        """Each exceeded limit as ``(measure, value, limit)``."""
        out = []
        for name, measure in _RISK_LIMITS.items():
            limit = getattr(self, name)
            if limit is not None and report[measure] > limit + 1e-12:
                out.append((measure, float(report[measure]), float(limit)))
        return out


@dataclass(frozen=True)
class AnonymizationConfig:
    """A validated configuration (see the module docstring for the file form)."""

    quasi_identifiers: Mapping[str, HierarchySpec]
    models: tuple[PrivacyModel, ...]
    sensitive: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()
    insensitive: tuple[str, ...] = ()
    undeclared: str = "error"
    suppression_limit: float = 0.0
    metric: str = "loss"
    aggregate: str | None = None
    release: ReleasePolicy = field(default_factory=ReleasePolicy)

    def __post_init__(self) -> None:
        if not self.quasi_identifiers:
            raise AnonymizationConfigError("declare at least one quasi-identifier")
        if not self.models:
            raise AnonymizationConfigError("declare at least one privacy model")
        limit = self.suppression_limit
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit <= 1:
            raise AnonymizationConfigError(f"suppression_limit must be in [0, 1], not {limit!r}")
        if self.undeclared not in ("error", "drop"):
            raise AnonymizationConfigError("undeclared must be 'error' or 'drop'")
        if self.metric not in METRICS:
            raise AnonymizationConfigError(f"unknown metric {self.metric!r}; "
                                           f"choose one of {sorted(METRICS)}")
        if self.aggregate is not None and self.aggregate not in AGGREGATES:
            raise AnonymizationConfigError(f"unknown aggregate {self.aggregate!r}; "
                                           f"choose one of {sorted(AGGREGATES)}")
        roles = [*self.quasi_identifiers, *self.sensitive, *self.identifiers, *self.insensitive]
        twice = sorted({c for c in roles if roles.count(c) > 1})
        if twice:
            raise AnonymizationConfigError(f"columns declared in more than one role: {twice}")
        for model in self.models:
            attribute = getattr(model, "attribute", None)
            if attribute is not None and attribute not in self.sensitive:
                raise AnonymizationConfigError(
                    f"{model.describe()}: {attribute!r} is not declared sensitive")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Path | None = None) -> AnonymizationConfig:
        """Validate a mapping; relative hierarchy files are resolved against ``base``."""
        if not isinstance(data, Mapping):
            raise AnonymizationConfigError("the configuration must be a mapping")
        known = {"quasi_identifiers", "sensitive", "identifiers", "insensitive", "undeclared",
                 "models", "suppression_limit", "metric", "release"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnonymizationConfigError(f"unknown configuration keys: {unknown}")
        qis = data.get("quasi_identifiers")
        if not isinstance(qis, Mapping):
            raise AnonymizationConfigError("quasi_identifiers must map column → hierarchy")
        metric = data.get("metric", "loss")
        if isinstance(metric, Mapping):
            metric_name, aggregate = metric.get("name", "loss"), metric.get("aggregate")
        else:
            metric_name, aggregate = metric, None
        return cls(
            quasi_identifiers={str(k): _hierarchy_spec(str(k), v, base) for k, v in qis.items()},
            models=tuple(_model(m) for m in _list(data.get("models"), "models")),
            sensitive=_names(data.get("sensitive"), "sensitive"),
            identifiers=_names(data.get("identifiers"), "identifiers"),
            insensitive=_names(data.get("insensitive"), "insensitive"),
            undeclared=data.get("undeclared", "error"),
            suppression_limit=data.get("suppression_limit", 0.0),
            metric=metric_name, aggregate=aggregate,
            release=_release(data.get("release") or {}),
        )


def _list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise AnonymizationConfigError(f"{name} must be a list")
    return value


def _names(value: Any, name: str) -> tuple[str, ...]:
    items = _list(value, name)
    if not all(isinstance(v, str) and v for v in items):
        raise AnonymizationConfigError(f"{name} must be a list of column names")
    return tuple(items)


def _hierarchy_spec(column: str, spec: Any, base: Path | None) -> HierarchySpec:
    if isinstance(spec, Hierarchy):
        return HierarchySpec(hierarchy=spec)
    if isinstance(spec, str):
        spec = {"file": spec}
    if not isinstance(spec, Mapping):
        raise AnonymizationConfigError(f"hierarchy of {column!r} must be a mapping")
    kinds = [k for k in ("file", "builder", "levels") if k in spec]
    if len(kinds) != 1:
        raise AnonymizationConfigError(
            f"hierarchy of {column!r} needs exactly one of file, builder or levels")
    if "file" in spec:
        path = Path(str(spec["file"]))
        return HierarchySpec(file=path if path.is_absolute() or base is None else base / path,
                             options={"delimiter": spec.get("delimiter", ";")})
    if "builder" in spec:
        if spec["builder"] not in BUILDERS:
            raise AnonymizationConfigError(f"unknown hierarchy builder {spec['builder']!r} for "
                                           f"{column!r}; choose one of {sorted(BUILDERS)}")
        options = {k: v for k, v in spec.items() if k != "builder"}
        if set(options) - ({"bands"} if spec["builder"] == "age" else set()):
            raise AnonymizationConfigError(f"unknown options for builder {spec['builder']!r}: "
                                           f"{sorted(options)}")
        return HierarchySpec(builder=spec["builder"], options=options)
    levels = spec["levels"]
    if not isinstance(levels, Mapping) or not all(isinstance(v, list) for v in levels.values()):
        raise AnonymizationConfigError(f"levels of {column!r} must map value → [level1, ...]")
    rows = [(str(k), *map(str, v)) for k, v in levels.items()]
    return HierarchySpec(hierarchy=Hierarchy.from_rows(rows, column))


def _model(spec: Any) -> PrivacyModel:
    if isinstance(spec, KAnonymity | DistinctLDiversity | EntropyLDiversity | TCloseness):
        return spec
    if not isinstance(spec, Mapping) or spec.get("type") not in _MODEL_TYPES:
        raise AnonymizationConfigError(
            f"each model needs a type, one of {sorted(_MODEL_TYPES)}; got {spec!r}"[:300])
    cls, fields = _MODEL_TYPES[spec["type"]]
    extra = sorted(set(spec) - {"type", *fields})
    if extra:
        raise AnonymizationConfigError(f"unknown fields for {spec['type']}: {extra}")
    try:
        return cls(**{k: spec[k] for k in fields if k in spec})  # type: ignore[return-value]
    except TypeError as exc:
        raise AnonymizationConfigError(f"{spec['type']}: {exc}") from None


def _release(spec: Any) -> ReleasePolicy:
    if not isinstance(spec, Mapping):
        raise AnonymizationConfigError("release must be a mapping")
    allowed = {"threshold", *_RISK_LIMITS}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise AnonymizationConfigError(f"unknown release keys: {extra}")
    for key, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise AnonymizationConfigError(f"release.{key} must be a number in [0, 1]")
    return ReleasePolicy(**spec)


def load_config(path: Path) -> AnonymizationConfig:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) configuration file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise AnonymizationConfigError(f"configuration {path} is over {MAX_CONFIG_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnonymizationConfigError(f"cannot read configuration {path}: {exc}") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError: both mean "not parseable"
        raise AnonymizationConfigError(f"configuration {path} is not valid "
                                       f"{'YAML' if path.suffix != '.json' else 'JSON'}: "
                                       f"{exc}"[:500]) from exc
    return AnonymizationConfig.from_dict(data, base=path.parent)
