"""Dates as day ordinals, and their FHIR string forms.

The simulation keeps every date as an integer day ordinal (``date.toordinal()``) and every
time of day as minutes after midnight; strings are made only when a resource is rendered,
through caches, so no date parsing or ``datetime`` arithmetic happens in the hot loop.
Times carry the region's fixed UTC offset (daylight saving time is not modelled).
"""

from __future__ import annotations

from datetime import date

__all__ = ["DAYS_PER_YEAR", "Clock", "age_at", "day_str", "year_of", "year_start"]

DAYS_PER_YEAR = 365.2425
_HM = tuple(f"T{m // 60:02d}:{m % 60:02d}:00" for m in range(1440))
_DAY: dict[int, str] = {}
_YEAR_START: dict[int, int] = {}
_YEAR_OF: dict[int, int] = {}


def day_str(o: int) -> str:
    """``YYYY-MM-DD`` for a day ordinal (cached)."""
    s = _DAY.get(o)
    if s is None:
        s = _DAY[o] = date.fromordinal(o).isoformat()
    return s


def year_start(year: int) -> int:
    """The ordinal of 1 January of ``year``."""
    o = _YEAR_START.get(year)
    if o is None:
        o = _YEAR_START[year] = date(year, 1, 1).toordinal()
    return o


def year_of(o: int) -> int:
    """The calendar year of a day ordinal."""
    y = _YEAR_OF.get(o)
    if y is None:
        y = _YEAR_OF[o] = date.fromordinal(o).year
    return y


def age_at(birth: int, o: int) -> float:
    """Age in (fractional) years on day ``o`` of someone born on day ``birth``."""
    return (o - birth) / DAYS_PER_YEAR


class Clock:
    """Formats FHIR ``date``, ``dateTime`` and ``instant`` values in one UTC offset."""

    __slots__ = ("tz", "_suffix")

    def __init__(self, tz: str) -> None:
        self.tz = tz
        self._suffix = tuple(hm + tz for hm in _HM)

    def at(self, o: int, minute: int) -> str:
        """A ``dateTime`` (also a valid ``instant``) for day ``o`` at ``minute`` past midnight."""
        day = _DAY.get(o)
        if day is None:
            day = day_str(o)
        return day + self._suffix[minute]

    def period(self, o: int, minute: int, end: int, end_minute: int) -> dict[str, str]:
        """A FHIR Period from two (day, minute) pairs."""
        return {"start": self.at(o, minute), "end": self.at(end, end_minute)}
