"""Tabular anonymisation and re-identification risk.

Declare quasi-identifiers with generalisation hierarchies, sensitive attributes and privacy
models (k-anonymity, distinct and entropy l-diversity, t-closeness) with a record
suppression limit; :func:`anonymize` finds the generalisation with the least information
loss that satisfies them (an optimal lattice search, as ARX's Flash), applies it, reports
prosecutor, journalist and marketer risk before and after, and refuses the release when
the risk is above the configured limits. Modules: ``hierarchy`` (hierarchies and their
generators), ``table`` (encoding), ``models``, ``metrics``, ``lattice`` (search),
``reidentification`` (risk), ``config``, ``engine``, ``tableio`` (CSV/Parquet with
rejects), ``errors``.
"""

from __future__ import annotations

from healthmesh.privacy.anonymize.config import (
    AnonymizationConfig,
    HierarchySpec,
    ReleasePolicy,
    load_config,
)
from healthmesh.privacy.anonymize.engine import AnonymizationResult, anonymize
from healthmesh.privacy.anonymize.errors import (
    AnonymizationConfigError,
    AnonymizationError,
    HierarchyError,
    NoAnonymousTransformation,
    ReleaseRefused,
)
from healthmesh.privacy.anonymize.hierarchy import (
    Hierarchy,
    age_hierarchy,
    date_hierarchy,
    icd10_hierarchy,
    zip_hierarchy,
)
from healthmesh.privacy.anonymize.models import (
    DistinctLDiversity,
    EntropyLDiversity,
    KAnonymity,
    PrivacyModel,
    TCloseness,
)
from healthmesh.privacy.anonymize.reidentification import RiskReport, risk

__all__ = [
    "AnonymizationConfig",
    "AnonymizationConfigError",
    "AnonymizationError",
    "AnonymizationResult",
    "DistinctLDiversity",
    "EntropyLDiversity",
    "Hierarchy",
    "HierarchyError",
    "HierarchySpec",
    "KAnonymity",
    "NoAnonymousTransformation",
    "PrivacyModel",
    "ReleasePolicy",
    "ReleaseRefused",
    "RiskReport",
    "TCloseness",
    "age_hierarchy",
    "anonymize",
    "date_hierarchy",
    "icd10_hierarchy",
    "load_config",
    "risk",
    "zip_hierarchy",
]
