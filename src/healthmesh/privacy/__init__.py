"""Disclosure control: the step every federated result passes before it leaves a node.

A federated algorithm computes a result table on the node's own rows (one dict per cell:
stratum columns and count columns); before the table travels, the node applies the
agreement's :class:`DisclosureRules` with :func:`apply_rules` — OpenDP noise, then
small-cell and complementary suppression, then rounding — charges the epsilon spent to
its persistent :class:`PrivacyLedger`, and lets :class:`QueryLimiter` refuse a query that
was run too often. Modules: ``disclosure`` (rules, suppression, rounding), ``dp`` (OpenDP
measurements and their accuracy), ``ledger`` (budget ledger, repeated-query limiter,
query fingerprints), ``errors``.

Tabular anonymisation (``healthmesh.privacy.anonymize``): generalisation hierarchies,
k-anonymity, distinct/entropy l-diversity and t-closeness with record suppression, an
optimal lattice search under the loss, discernibility or entropy metric, and prosecutor,
journalist and marketer re-identification risk — :func:`anonymize` and :func:`risk`.
"""

from __future__ import annotations

from healthmesh.privacy.anonymize import (
    AnonymizationConfig,
    AnonymizationConfigError,
    AnonymizationError,
    AnonymizationResult,
    DistinctLDiversity,
    EntropyLDiversity,
    Hierarchy,
    HierarchyError,
    KAnonymity,
    NoAnonymousTransformation,
    ReleasePolicy,
    ReleaseRefused,
    RiskReport,
    TCloseness,
    anonymize,
    load_config,
    risk,
)
from healthmesh.privacy.disclosure import (
    MECHANISMS,
    DisclosureRules,
    ReleasedTable,
    apply_rules,
    margin_totals,
    round_counts,
    suppress,
)
from healthmesh.privacy.dp import (
    gaussian_accuracy,
    gaussian_counts,
    gaussian_scale,
    laplace_accuracy,
    laplace_counts,
    laplace_scale,
    rho_for_epsilon,
)
from healthmesh.privacy.errors import (
    BudgetExhausted,
    DisclosureError,
    LedgerError,
    PrivacyError,
    QueryLimitReached,
)
from healthmesh.privacy.ledger import (
    BUDGET_TOLERANCE,
    LEDGER_FILE,
    PrivacyLedger,
    QueryLimiter,
    Spend,
    fingerprint,
)

__all__ = [
    "BUDGET_TOLERANCE",
    "LEDGER_FILE",
    "MECHANISMS",
    "AnonymizationConfig",
    "AnonymizationConfigError",
    "AnonymizationError",
    "AnonymizationResult",
    "BudgetExhausted",
    "DisclosureError",
    "DisclosureRules",
    "DistinctLDiversity",
    "EntropyLDiversity",
    "Hierarchy",
    "HierarchyError",
    "KAnonymity",
    "LedgerError",
    "NoAnonymousTransformation",
    "PrivacyError",
    "PrivacyLedger",
    "QueryLimitReached",
    "QueryLimiter",
    "ReleasePolicy",
    "ReleaseRefused",
    "ReleasedTable",
    "RiskReport",
    "Spend",
    "TCloseness",
    "anonymize",
    "apply_rules",
    "fingerprint",
    "gaussian_accuracy",
    "gaussian_counts",
    "gaussian_scale",
    "laplace_accuracy",
    "laplace_counts",
    "laplace_scale",
    "load_config",
    "margin_totals",
    "round_counts",
    "rho_for_epsilon",
    "risk",
    "suppress",
]
