"""Dates: truncation to the year, per-patient shifting, ages and the 90+ rule.

FHIR dates come in precisions (``2020``, ``2020-03``, ``2020-03-04``, a dateTime with a
time and zone, an instant). Truncation keeps the year. Shifting moves the calendar date
by a whole number of days and keeps the time of day, the zone and the precision; a
partial date is shifted from the middle of its period (``2020-03`` from 15 March,
``2020`` from 2 July), so a shift never says more than the input did. The offset of a
patient derives from the project key and the patient's id (HMAC), so it is the same in
all of that patient's resources (intervals stay true), stable across runs, and secret.
"""

from __future__ import annotations

import hmac
import re
from datetime import date, timedelta

__all__ = [
    "DEFAULT_MAX_SHIFT_DAYS",
    "age_in_years",
    "date_offset",
    "is_old",
    "shift_date",
    "year_of",
]

DEFAULT_MAX_SHIFT_DAYS = 365
"""Offsets are drawn from [-N, -1] and [1, N] days."""

_DATE = re.compile(r"(\d{4})(?:-(\d\d)(?:-(\d\d))?)?(.*)", re.ASCII | re.DOTALL)


def year_of(value: str) -> str | None:
    """The 4-digit year of a FHIR date, dateTime or instant, or None if it has none."""
    match = _DATE.fullmatch(value)
    return match.group(1) if match and match.group(1) != "0000" else None


def date_offset(subkey: bytes, subject: str, max_days: int = DEFAULT_MAX_SHIFT_DAYS) -> int:
    """The secret, stable, non-zero day offset of ``subject`` (e.g. ``Patient/123``)."""
    draw = int.from_bytes(hmac.digest(subkey, subject.encode(), "sha256")[:8], "big")
    magnitude = 1 + draw % max_days
    return magnitude if (draw >> 62) & 1 else -magnitude


def shift_date(value: str, days: int) -> str | None:
    """``value`` moved by ``days`` at its own precision; None if it is not a date."""
    match = _DATE.fullmatch(value)
    if match is None:
        return None
    year, month, day, rest = match.groups()
    try:
        start = date(int(year), int(month or 7), int(day or (15 if month else 2)))
        moved = start + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    if moved.year < 1:
        return None
    if month is None:
        return f"{moved.year:04d}"
    if day is None:
        return f"{moved.year:04d}-{moved.month:02d}"
    return moved.isoformat() + rest


def _parts(value: str) -> tuple[int, int | None, int | None] | None:
    match = _DATE.fullmatch(value)
    if match is None:
        return None
    year, month, day, _ = match.groups()
    return int(year), int(month) if month else None, int(day) if day else None


def age_in_years(birth: str, at: str | date) -> int | None:
    """Whole years from ``birth`` to ``at``, the lowest age the precisions allow."""
    born = _parts(birth)
    when = _parts(at) if isinstance(at, str) else (at.year, at.month, at.day)
    if born is None or when is None:
        return None
    age = when[0] - born[0]
    if born[1] is None or when[1] is None:
        return age - 1 if age > 0 else age
    if (when[1], when[2] or 31) < (born[1], born[2] or 1):
        age -= 1
    return age


def is_old(birth: str, today: date) -> bool:
    """Whether someone born at ``birth`` may be 90 or older on ``today`` (Safe Harbor:
    ages over 89 are identifiers). Partial birth dates count as the earliest possible."""
    born = _parts(birth)
    if born is None:
        return False
    month, day = born[1] or 1, born[2] or 1
    return (today.year - born[0]) - ((today.month, today.day) < (month, day)) >= 90
