"""Errors of the disclosure-control step, part of the healthmesh exception tree::

    HealthmeshError
     └── PrivacyError                a result cannot be released as asked
          ├── DisclosureError        bad disclosure rules or a malformed result table
          ├── BudgetExhausted        the charge would overspend the agreement's epsilon
          ├── QueryLimitReached      the same query ran too often in the window
          └── LedgerError            the privacy ledger cannot be used (SQLite error,
                                     a task id reused for a different charge)

OpenDP and SQLite errors are translated into these where the privacy package calls them.
"""

from __future__ import annotations

from datetime import datetime

from healthmesh.errors import HealthmeshError

__all__ = [
    "BudgetExhausted",
    "DisclosureError",
    "LedgerError",
    "PrivacyError",
    "QueryLimitReached",
]


class PrivacyError(HealthmeshError):
    """Base of every disclosure-control error."""


class DisclosureError(PrivacyError, ValueError):
    """Disclosure rules or a result table that cannot be used; the message says why."""


class LedgerError(PrivacyError):
    """The privacy ledger cannot be opened, read or written as asked."""


class BudgetExhausted(PrivacyError):
    """Charging ``requested`` epsilon would take ``spent`` past ``total``."""

    def __init__(self, agreement_id: str, spent: float, requested: float, total: float) -> None:
        super().__init__(
            f"privacy budget of agreement {agreement_id!r} exhausted: spent {spent:g} "
            f"+ requested {requested:g} > total {total:g} (remaining {max(total - spent, 0):g})"
        )
        self.agreement_id = agreement_id
        self.spent = spent
        self.requested = requested
        self.total = total


class QueryLimitReached(PrivacyError):
    """The query ran ``runs`` times in the window; it unlocks at ``unlocks_at``."""

    def __init__(self, fingerprint: str, runs: int, window_days: float, unlocks_at: datetime):
        super().__init__(
            f"query {fingerprint[:12]} already ran {runs} times in the last {window_days:g} "
            f"days; it unlocks at {unlocks_at.isoformat(timespec='seconds')}"
        )
        self.fingerprint = fingerprint
        self.runs = runs
        self.window_days = window_days
        self.unlocks_at = unlocks_at
