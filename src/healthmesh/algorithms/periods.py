"""Analysis periods: ``"2024"`` (a year), ``"2024-03"`` (a month) or ``{"from", "to"}``
(each a date, a month or a year; inclusive), optionally split by calendar year or month."""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from .errors import AlgorithmError

__all__ = ["MAX_PERIODS", "Period", "parse_period", "split_period"]

MAX_PERIODS = 240
_YEAR = re.compile(r"^(\d{4})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Period:
    """An inclusive date range and its label (``2024``, ``2024-03`` or ``start/end``)."""

    label: str
    start: date
    end: date


def parse_period(value: Any, path: str = "params.period") -> Period:
    """A :class:`Period` from its JSON form, or :class:`AlgorithmError` naming ``path``."""
    if isinstance(value, str):
        start, end = _span(value, path)
        return Period(value, start, end)
    if not isinstance(value, Mapping) or set(value) != {"from", "to"}:
        raise AlgorithmError(f"{path}: expected \"YYYY\", \"YYYY-MM\" or "
                             "{\"from\": ..., \"to\": ...}")
    start, end = _span(value["from"], f"{path}.from")[0], _span(value["to"], f"{path}.to")[1]
    if start > end:
        raise AlgorithmError(f"{path}: 'from' is after 'to'")
    return Period(_label(start, end), start, end)


def _span(text: Any, path: str) -> tuple[date, date]:
    """First and last day of a year, month or day given as text."""
    if not isinstance(text, str):
        raise AlgorithmError(f"{path}: expected \"YYYY\", \"YYYY-MM\" or \"YYYY-MM-DD\"")
    try:
        if m := _YEAR.match(text):
            year = int(m.group(1))
            return date(year, 1, 1), date(year, 12, 31)
        if m := _MONTH.match(text):
            year, month = int(m.group(1)), int(m.group(2))
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        if _DAY.match(text):
            day = date.fromisoformat(text)
            return day, day
    except ValueError:
        pass
    raise AlgorithmError(f"{path}: expected \"YYYY\", \"YYYY-MM\" or \"YYYY-MM-DD\", "
                         f"got {text[:40]!r}")


def _label(start: date, end: date) -> str:
    if start == date(start.year, 1, 1) and end == date(start.year, 12, 31):
        return str(start.year)
    last = calendar.monthrange(start.year, start.month)[1]
    if start.day == 1 and end == date(start.year, start.month, last):
        return f"{start.year:04d}-{start.month:02d}"
    return f"{start.isoformat()}/{end.isoformat()}"


def split_period(period: Period, by: str | None, path: str = "params.by") -> list[Period]:
    """``period`` cut at calendar year (``by="year"``) or month boundaries, clipped to it."""
    if by is None:
        return [period]
    if by not in ("year", "month"):
        raise AlgorithmError(f"{path}: expected 'year' or 'month', got {str(by)[:40]!r}")
    out, start = [], period.start
    while start <= period.end:
        if by == "year":
            stop = date(start.year, 12, 31)
        else:
            stop = date(start.year, start.month, calendar.monthrange(start.year, start.month)[1])
        stop = min(stop, period.end)
        out.append(Period(_label(start, stop), start, stop))
        if len(out) > MAX_PERIODS:
            raise AlgorithmError(f"{path}: more than {MAX_PERIODS} periods")
        start = stop + timedelta(days=1)
    return out
