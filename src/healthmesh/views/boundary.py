"""FHIRPath ``lowBoundary()`` / ``highBoundary()`` for decimals, dates, dateTimes and times.

A value's precision is what is written: ``1.0`` spans 0.95 to 1.05, ``1970-06`` spans
the whole of June 1970, ``2010-10-10`` as a dateTime spans that day in every time zone
(``+14:00`` to ``-12:00``). The type comes from a preceding ``ofType(...)`` when the
compiler knows it, otherwise it is inferred from the shape of the value.
"""

from __future__ import annotations

import calendar
import re
from decimal import Decimal
from typing import Any

__all__ = ["high_boundary", "low_boundary"]

_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_TIME_RE = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")


def low_boundary(value: Any, type_name: str | None = None) -> Any:
    """The least value ``value`` may stand for, or ``None`` if it has no boundary."""
    return _boundary(value, type_name, high=False)


def high_boundary(value: Any, type_name: str | None = None) -> Any:
    """The greatest value ``value`` may stand for, or ``None`` if it has no boundary."""
    return _boundary(value, type_name, high=True)


def _boundary(value: Any, type_name: str | None, high: bool) -> Any:
    if type(value) in (int, float, Decimal):
        return _decimal(value, high)
    if not isinstance(value, str):
        return None
    if type_name is None:
        if "T" in value:
            type_name = "dateTime"
        elif _DATE_RE.match(value):
            type_name = "date"
        elif _TIME_RE.match(value):
            type_name = "time"
    if type_name == "date":
        return _date(value, high)
    if type_name in ("dateTime", "instant"):
        return _datetime(value, high)
    if type_name == "time":
        return _time(value, high)
    return None


def _decimal(value: int | float | Decimal, high: bool) -> float:
    d = Decimal(repr(value)) if type(value) is float else Decimal(value)
    exponent = d.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    half = Decimal(5).scaleb(-(places + 1))
    return float(d + half if high else d - half)


def _day_parts(m: re.Match[str], high: bool) -> tuple[str, str, str]:
    year, month, day = m.group(1), m.group(2), m.group(3)
    if month is None:
        month = "12" if high else "01"
    if day is None:
        day = f"{calendar.monthrange(int(year), int(month))[1]:02d}" if high else "01"
    return year, month, day


def _date(value: str, high: bool) -> str | None:
    m = _DATE_RE.match(value)
    if not m:
        return None
    return "-".join(_day_parts(m, high))


def _clock(h: str | None, mi: str | None, s: str | None, frac: str | None, high: bool) -> str:
    fill = ("23", "59", "59", "999") if high else ("00", "00", "00", "000")
    frac_out = fill[3] if frac is None else (frac + fill[3])[:3] if high else frac.ljust(3, "0")
    return f"{h or fill[0]}:{mi or fill[1]}:{s or fill[2]}.{frac_out[:3]}"


def _datetime(value: str, high: bool) -> str | None:
    m = _DATETIME_RE.match(value)
    if not m:
        return None
    day = "-".join(_day_parts(m, high))
    tz = m.group(8) or ("-12:00" if high else "+14:00")
    return f"{day}T{_clock(m.group(4), m.group(5), m.group(6), m.group(7), high)}{tz}"


def _time(value: str, high: bool) -> str | None:
    m = _TIME_RE.match(value)
    if not m:
        return None
    return _clock(m.group(1), m.group(2), m.group(3), m.group(4), high)
