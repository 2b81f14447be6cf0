"""Validate a cohort definition (a JSON object) and parse it into :class:`~.model.Cohort`.

The language is documented as a JSON Schema (draft 2020-12) in ``data/cohort.schema.json``
(:func:`json_schema` returns it). Validation is done by hand, without a schema library, so
that every message names the JSON path of the problem::

    include[0].observation.value: expected an object with 'op' and 'value'

Hostile input is refused before it is walked: nesting deeper than :data:`MAX_DEPTH`
containers, more than :data:`MAX_NODES` values in all, or a cycle. Code lists may be long
(up to 100,000 codes each); codes are data, never SQL: the compiler binds them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Any, NoReturn

from .errors import CohortError
from .model import (
    EVENT_KINDS,
    PLACES,
    AnyOf,
    CodeSet,
    Cohort,
    Component,
    Criterion,
    Demographics,
    Event,
    Offset,
    Threshold,
    Window,
)
from .valuesets import load_data, value_set, value_sets

__all__ = ["MAX_DEPTH", "MAX_NODES", "json_schema", "parse_cohort", "parse_criteria", "parse_event"]

MAX_DEPTH = 24
MAX_NODES = 1_000_000
MAX_CODES = 100_000
MAX_CRITERIA = 100
MAX_ANY = 50
GENDERS = ("male", "female", "other", "unknown")
OPS = ("<", "<=", ">", ">=", "=")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OFFSET = re.compile(r"^([+-]?)(\d{1,5})([dwmy])$")
_VALUESET = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_COMMON = ("codes", "valueset", "window", "min_count", "status")
_KEYS = {
    "condition": _COMMON, "medication": _COMMON, "procedure": _COMMON,
    "immunization": _COMMON, "encounter": (*_COMMON, "class"),
    "observation": (*_COMMON, "value", "value_codes", "last", "components"),
}
CRITERION_KINDS = (*EVENT_KINDS, "demographics", "any")


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that documents the cohort language."""
    schema: dict[str, Any] = load_data("cohort.schema.json")
    return schema


def parse_cohort(obj: Any, path: str = "") -> Cohort:
    """Check a cohort definition and return its parsed form; raise :class:`CohortError`.

    ``path`` prefixes every error location (an algorithm passes ``"cohort"``).
    """
    check_shape(obj, path)
    keys = _object(obj, path, ("name", "description", "index", "include", "exclude"), ("name",))
    name = _string(keys["name"], _at(path, "name"), 200)
    description = _string(keys.get("description", ""), _at(path, "description"), 4000, empty=True)
    index_date, index_event = _index(keys.get("index"), _at(path, "index"))
    include = _criteria(keys.get("include", []), _at(path, "include"))
    exclude = _criteria(keys.get("exclude", []), _at(path, "exclude"))
    return Cohort(name, description, index_date, index_event, include, exclude)


def parse_criteria(obj: Any, path: str) -> tuple[Criterion, ...]:
    """Check and parse an array of criteria (an indicator's numerator, say)."""
    check_shape(obj, path)
    return _criteria(obj, path)


def parse_event(obj: Any, kind: str, path: str, keys: tuple[str, ...] | None = None) -> Event:
    """Parse one event criterion body (the object under ``"condition"`` etc.).

    ``keys`` narrows the allowed keys (an algorithm selecting observation values)."""
    check_shape(obj, path)
    return _event(obj, kind, path, keys)


# --- structure guards -------------------------------------------------------------------

def check_shape(obj: Any, path: str = "") -> None:
    """Refuse too deep, too large or cyclic input before walking it recursively."""
    stack: list[tuple[Any, str, int]] = [(obj, path, 1)]
    nodes = 0
    while stack:
        value, where, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            _fail(path, f"definition too large (more than {MAX_NODES:,} values)")
        if isinstance(value, Mapping):
            children = [(v, _at(where, str(k))) for k, v in value.items()]
        elif isinstance(value, list | tuple):
            children = [(v, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            continue
        if depth >= MAX_DEPTH and children:
            _fail(where, f"nested deeper than {MAX_DEPTH} levels")
        stack.extend((v, p, depth + 1) for v, p in children)


def _fail(path: str, message: str) -> NoReturn:
    raise CohortError(f"{path or '(root)'}: {message}")


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(obj: Any, path: str, allowed: tuple[str, ...],
            required: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        _fail(path, f"expected an object, got {_kind(obj)}")
    for key in obj:
        if not isinstance(key, str) or key not in allowed:
            _fail(path, f"unknown key {str(key)[:60]!r} (expected {_choice(allowed)})")
    for key in required:
        if key not in obj:
            _fail(path, f"missing required key {key!r}")
    return obj


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _choice(options: tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(o) for o in options)


# --- scalars --------------------------------------------------------------------------------

def _string(value: Any, path: str, max_len: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        _fail(path, f"expected a string, got {_kind(value)}")
    if not value and not empty:
        _fail(path, "must not be empty")
    if len(value) > max_len:
        _fail(path, f"longer than {max_len} characters")
    return value


def _strings(value: Any, path: str, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if isinstance(value, str) and choices is not None:
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        _fail(path, f"expected a non-empty array of strings, got {_kind(value)}")
    if len(value) > 1000:
        _fail(path, "more than 1000 items")
    out = tuple(_string(v, f"{path}[{i}]", 200) for i, v in enumerate(value))
    for i, v in enumerate(out):
        if choices is not None and v not in choices:
            _fail(f"{path}[{i}]", f"expected one of {_choice(choices)}, got {v[:60]!r}")
    return out


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"expected an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        _fail(path, f"expected an integer from {lo} to {hi}, got {value}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, f"expected a number, got {_kind(value)}")
    if not math.isfinite(value):
        _fail(path, "expected a finite number")
    return float(value)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, f"expected true or false, got {_kind(value)}")
    return value


def parse_date(value: Any, path: str) -> date:
    """A ``YYYY-MM-DD`` date or a :class:`CohortError` naming ``path``."""
    if not isinstance(value, str) or not _DATE.match(value):
        _fail(path, f"expected a date YYYY-MM-DD, got {_show(value)}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(path, f"not a calendar date: {value!r}")


def _show(value: Any) -> str:
    return repr(value)[:60] if isinstance(value, str | int | float) else _kind(value)


def _offset(value: Any, path: str) -> Offset:
    match = _OFFSET.match(value) if isinstance(value, str) else None
    if not match:
        _fail(path, f"expected an offset like '-365d', '0d', '+6m' or '-1y', got {_show(value)}")
    sign, amount, unit = match.groups()
    return Offset(-int(amount) if sign == "-" else int(amount), unit)  # type: ignore[arg-type]


# --- codes and windows -----------------------------------------------------------------------

def _codes(value: Any, path: str) -> CodeSet:
    if not isinstance(value, list | tuple) or not value:
        _fail(path, f"expected a non-empty array of 'system|code' strings, got {_kind(value)}")
    if len(value) > MAX_CODES:
        _fail(path, f"more than {MAX_CODES:,} codes")
    systems, codes = [], []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not 0 < len(item) <= 512:
            _fail(f"{path}[{i}]", f"expected a 'system|code' string, got {_show(item)}")
        system, _, code = item.rpartition("|")
        if not code:
            _fail(f"{path}[{i}]", f"empty code in {item[:60]!r}")
        systems.append(system)
        codes.append(code)
    return CodeSet(tuple(systems), tuple(codes))


def _valueset(value: Any, path: str) -> CodeSet:
    if not isinstance(value, str) or not _VALUESET.match(value):
        _fail(path, f"expected a value set name, got {_show(value)}")
    found = value_set(value)
    if found is None:
        _fail(path, f"unknown value set {value!r} (known: {', '.join(sorted(value_sets()))})")
    codes = _codes(list(found.codes), path)
    return CodeSet(codes.systems, codes.codes, value)


def _code_source(body: Mapping[str, Any], path: str, *, required: bool) -> CodeSet | None:
    if "codes" in body and "valueset" in body:
        _fail(path, "give either 'codes' or 'valueset', not both")
    if "codes" in body:
        return _codes(body["codes"], _at(path, "codes"))
    if "valueset" in body:
        return _valueset(body["valueset"], _at(path, "valueset"))
    if required:
        _fail(path, "missing 'codes' or 'valueset'")
    return None


def _window(value: Any, path: str) -> Window:
    if value == "period":
        return Window("period")
    if not isinstance(value, Mapping) or not value:
        _fail(path, "expected {'start': '-365d', 'end': '0d'}, {'from': 'YYYY-MM-DD', "
                    "'to': 'YYYY-MM-DD'} or \"period\"")
    if set(value) & {"start", "end"}:
        keys = _object(value, path, ("start", "end"))
        start, end = (_offset(keys[k], _at(path, k)) if k in keys else None
                      for k in ("start", "end"))
        if start and end and start.approx_days() > end.approx_days():
            _fail(path, "start is after end")
        return Window("relative", start, end)
    keys = _object(value, path, ("from", "to"))
    lo, hi = (parse_date(keys[k], _at(path, k)) if k in keys else None for k in ("from", "to"))
    if lo and hi and lo > hi:
        _fail(path, "'from' is after 'to'")
    return Window("absolute", lo, hi)


def _threshold(value: Any, path: str) -> Threshold:
    if not isinstance(value, Mapping) or "op" not in value or "value" not in value:
        _fail(path, "expected an object with 'op' and 'value'")
    keys = _object(value, path, ("op", "value", "unit"))
    op = keys["op"]
    if op not in OPS:
        _fail(_at(path, "op"), f"expected one of {_choice(OPS)}, got {_show(op)}")
    unit = _string(keys["unit"], _at(path, "unit"), 100) if "unit" in keys else None
    return Threshold(op, _number(keys["value"], _at(path, "value")), unit)


# --- criteria ----------------------------------------------------------------------------------

def _criteria(value: Any, path: str, depth: int = 0) -> tuple[Criterion, ...]:
    if not isinstance(value, list | tuple):
        _fail(path, f"expected an array of criteria, got {_kind(value)}")
    limit = MAX_CRITERIA if depth == 0 else MAX_ANY
    if len(value) > limit:
        _fail(path, f"more than {limit} criteria")
    return tuple(_criterion(c, f"{path}[{i}]", depth) for i, c in enumerate(value))


def _criterion(value: Any, path: str, depth: int) -> Criterion:
    if not isinstance(value, Mapping) or len(value) != 1:
        _fail(path, f"expected an object with exactly one of {_choice(CRITERION_KINDS)}")
    ((kind, body),) = value.items()
    where = _at(path, str(kind))
    if kind == "any":
        if not isinstance(body, list | tuple) or not body:
            _fail(where, "expected a non-empty array of criteria")
        return AnyOf(_criteria(body, where, depth + 1))
    if kind == "demographics":
        return _demographics(body, where)
    if kind not in EVENT_KINDS:
        _fail(path, f"unknown criterion {str(kind)[:60]!r} (expected {_choice(CRITERION_KINDS)})")
    return _event(body, kind, where)


def _event(body: Any, kind: str, path: str, keys: tuple[str, ...] | None = None) -> Event:
    body = _object(body, path, keys or _KEYS[kind])
    codes = _code_source(body, path, required=kind != "encounter")
    window = _window(body["window"], _at(path, "window")) if "window" in body else None
    min_count = _int(body.get("min_count", 1), _at(path, "min_count"), 1, 10_000)
    status = _strings(body["status"], _at(path, "status")) if "status" in body else None
    extra = _observation_parts(body, path) if kind == "observation" else {}
    classes = _strings(body["class"], _at(path, "class")) if "class" in body else None
    if kind == "encounter" and codes is None and classes is None and window is None:
        _fail(path, "give at least one of 'codes', 'valueset', 'class' or 'window'")
    if extra.get("last") and "min_count" in body:
        _fail(path, "'last' judges one observation: it cannot be combined with 'min_count'")
    return Event(kind, codes, window, min_count, status, classes=classes, **extra)


def _observation_parts(body: Mapping[str, Any], path: str) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    if "value" in body:
        parts["value"] = _threshold(body["value"], _at(path, "value"))
    if "value_codes" in body:
        parts["value_codes"] = _codes(body["value_codes"], _at(path, "value_codes"))
    if "last" in body:
        parts["last"] = _bool(body["last"], _at(path, "last"))
    if "components" in body:
        parts["components"] = _components(body["components"], _at(path, "components"))
    return parts


def _components(value: Any, path: str) -> tuple[Component, ...]:
    if not isinstance(value, list | tuple) or not 0 < len(value) <= 10:
        _fail(path, "expected an array of 1 to 10 components")
    out = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        body = _object(item, where, ("codes", "valueset", "value"), ("value",))
        codes = _code_source(body, where, required=True)
        out.append(Component(codes, _threshold(body["value"], _at(where, "value"))))  # type: ignore[arg-type]
    return tuple(out)


def _demographics(body: Any, path: str) -> Demographics:
    keys = _object(body, path, ("gender", "age", "alive", *PLACES))
    if not keys:
        _fail(path, "expected at least one of 'gender', 'age', 'alive', " + _choice(PLACES))
    gender = _strings(keys["gender"], _at(path, "gender"), GENDERS) if "gender" in keys else None
    age_min, age_max = _age(keys["age"], _at(path, "age")) if "age" in keys else (None, None)
    alive = _bool(keys["alive"], _at(path, "alive")) if "alive" in keys else None
    places = tuple((p, _strings(keys[p], _at(path, p))) for p in PLACES if p in keys)
    return Demographics(gender, age_min, age_max, alive, places)


def _age(value: Any, path: str) -> tuple[int | None, int | None]:
    keys = _object(value, path, ("min", "max"))
    if not keys:
        _fail(path, "expected an object with 'min' and/or 'max'")
    lo, hi = (_int(keys[k], _at(path, k), 0, 150) if k in keys else None for k in ("min", "max"))
    if lo is not None and hi is not None and lo > hi:
        _fail(path, f"'min' ({lo}) is greater than 'max' ({hi})")
    return lo, hi


def _index(value: Any, path: str) -> tuple[date | None, Event | None]:
    if value is None:
        return None, None
    keys = _object(value, path, ("date", "first"))
    if len(keys) != 1:
        _fail(path, "expected exactly one of 'date' or 'first'")
    if "date" in keys:
        return parse_date(keys["date"], _at(path, "date")), None
    event = _criterion(keys["first"], _at(path, "first"), 0)
    where = _at(path, "first")
    if not isinstance(event, Event):
        _fail(where, f"expected one event criterion ({_choice(EVENT_KINDS)})")
    _check_index_event(event, f"{where}.{event.kind}")
    return None, event


def _check_index_event(event: Event, path: str) -> None:
    problems = [
        (event.window is not None and event.window.kind == "relative", "window",
         "the index event defines the index date: use 'from'/'to' or \"period\", not offsets"),
        (event.last, "last", "not allowed for the index event"),
        (event.min_count != 1, "min_count", "not allowed for the index event"),
    ]
    for bad, key, message in problems:
        if bad:
            _fail(_at(path, key), message)
