"""Column typing and row conditions: text cells -> typed values, filters -> keep or skip.

Types: ``string``; ``code`` (mapped through ``values`` when the column has them, matched
case-insensitively, anything else rejected); ``integer``; ``decimal`` (a dot as decimal
separator; NaN and infinities rejected); ``boolean`` (true/false, yes/no, y/n, 1/0);
``date`` (ISO 8601 ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, or ``format``); ``datetime``
(ISO 8601 or ``format``; a value without an offset takes the column's or the mapping's
``timezone``, and is rejected when neither sets one, rather than guessing). Dates and
date-times come out as FHIR ``date``/``dateTime`` text.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from healthmesh.mapping.model import Column, Condition
from healthmesh.mapping.template import RowError

__all__ = ["matches", "typed_value"]

_TRUE = frozenset({"true", "yes", "y", "1", "t"})
_FALSE = frozenset({"false", "no", "n", "0", "f"})
_PARTIAL_DATE = re.compile(r"^\d{4}(-(0[1-9]|1[0-2]))?$")
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")


def typed_value(column: Column, raw: str | None, timezone: str | None) -> Any:
    """The typed value of a cell (None for an empty cell); raises :class:`RowError`."""
    if raw is None:
        raw = column.default
    if raw is None:
        if column.required:
            raise RowError(f"column {column.name!r} is required but empty")
        return None
    try:
        return _PARSERS[column.type](column, raw, column.timezone or timezone)
    except (ValueError, OverflowError) as exc:
        reason = str(exc) if isinstance(exc, _Bad) else f"is not a valid {column.type}"
        raise RowError(f"column {column.name!r}: {_short(raw)} {reason}") from None


class _Bad(ValueError):
    """A value error whose message is meant for the user."""


def _short(raw: str) -> str:
    return repr(raw if len(raw) <= 60 else raw[:57] + "...")


def _string(column: Column, raw: str, tz: str | None) -> str:
    return raw


def _code(column: Column, raw: str, tz: str | None) -> str:
    if column.values is None:
        return raw
    code = column.values.get(raw.casefold())
    if code is None:
        known = sorted(column.values)
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        raise _Bad(f"is not one of the expected values ({shown})")
    return code


def _integer(column: Column, raw: str, tz: str | None) -> int:
    if not _INTEGER.match(raw):
        raise _Bad("is not an integer")
    return int(raw)


def _decimal(column: Column, raw: str, tz: str | None) -> float:
    value = float(raw)
    if not math.isfinite(value) or "_" in raw:
        raise _Bad("is not a finite decimal number")
    return value


def _boolean(column: Column, raw: str, tz: str | None) -> bool:
    folded = raw.casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise _Bad("is not a boolean (true/false, yes/no, 1/0)")


def _date(column: Column, raw: str, tz: str | None) -> str:
    if column.format:
        return dt.datetime.strptime(raw, column.format).date().isoformat()
    if _PARTIAL_DATE.match(raw):
        return raw
    return dt.date.fromisoformat(raw).isoformat()


def _datetime(column: Column, raw: str, tz: str | None) -> str:
    if column.format:
        value = dt.datetime.strptime(raw, column.format)
    else:
        if _PARTIAL_DATE.match(raw) or re.match(r"^\d{4}-\d{2}-\d{2}$", raw):
            return _date(column, raw, tz)  # FHIR dateTime may be a bare date
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if value.tzinfo is None:
        if tz is None:
            raise _Bad("has no time zone offset, and the mapping sets no timezone")
        value = value.replace(tzinfo=_zone(tz))
    if not 1 <= value.year <= 9999:
        raise _Bad("is out of range")
    return value.isoformat()


def _zone(tz: str) -> dt.tzinfo:
    if tz == "Z":
        return dt.UTC
    sign = 1 if tz[0] == "+" else -1
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


_PARSERS = {"string": _string, "code": _code, "integer": _integer, "decimal": _decimal,
            "boolean": _boolean, "date": _date, "datetime": _datetime}


def matches(condition: Condition, values: dict[str, Any]) -> bool:
    """True when the row's typed ``values`` satisfy ``condition``."""
    value = values.get(condition.column)
    op, want = condition.op, condition.value
    if op == "present":
        return (value is not None) is want
    if value is None:
        return op in ("not_equals", "not_in")
    text = value if isinstance(value, str) else _plain(value)
    if op == "equals":
        return text == want
    if op == "not_equals":
        return text != want
    if op == "in":
        return text in want
    if op == "not_in":
        return text not in want
    if op == "matches":
        return want.search(text) is not None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return value >= want if op == "min" else value <= want


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
