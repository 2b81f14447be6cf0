"""Errors of tabular anonymisation, part of the healthmesh exception tree::

    HealthmeshError
     └── PrivacyError
          └── AnonymizationError          a table cannot be anonymised as configured
               ├── HierarchyError         a generalisation hierarchy is malformed
               ├── AnonymizationConfigError  the configuration is invalid
               ├── NoAnonymousTransformation  no lattice node satisfies the models
               └── ReleaseRefused         the result's risk exceeds the release threshold
"""

from __future__ import annotations

from typing import Any

from healthmesh.privacy.errors import PrivacyError

__all__ = [
    "AnonymizationConfigError",
    "AnonymizationError",
    "HierarchyError",
    "NoAnonymousTransformation",
    "ReleaseRefused",
]


class AnonymizationError(PrivacyError):
    """Base of every tabular anonymisation error."""


class HierarchyError(AnonymizationError, ValueError):
    """A generalisation hierarchy that cannot be used; the message names the row or level."""


class AnonymizationConfigError(AnonymizationError, ValueError):
    """An anonymisation configuration that is invalid; the message names the field."""


class NoAnonymousTransformation(AnonymizationError):
    """No generalisation in the lattice satisfies the models within the suppression limit."""


class ReleaseRefused(AnonymizationError):
    """The anonymised table's re-identification risk is above the configured threshold.

    ``violations`` lists each exceeded limit as ``(measure, value, limit)``; ``risk`` is the
    risk report of the refused result, so a caller can show why.
    """

    def __init__(self, violations: list[tuple[str, float, float]], risk: dict[str, Any]):
        text = "; ".join(f"{name} {value:.4f} > limit {limit:g}"
                         for name, value, limit in violations)
        super().__init__(f"release refused: re-identification risk above threshold ({text})")
        self.violations = violations
        self.risk = risk
