"""Parse FHIR search requests into a typed :class:`SearchQuery`.

The parser knows FHIR R4 search syntax (https://hl7.org/fhir/R4/search.html):
modifiers, prefixes, ``system|code`` tokens, partial dates, comma = OR,
repeated parameter = AND, and the result parameters ``_count``, ``_sort``,
``_total``, ``_summary``, ``_elements``, ``_include``, ``_revinclude``.
Values are parsed here, once, so every store backend receives the same
typed criteria. Bad values raise :class:`~healthmesh.errors.InvalidRequest`;
unknown parameters become warnings, or errors under ``strict`` handling.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from healthmesh.errors import InvalidRequest, Issue
from healthmesh.fhir.search_params import SearchParam, date_range, search_params

__all__ = [
    "Criterion",
    "DateValue",
    "Include",
    "NumberValue",
    "QuantityValue",
    "ReferenceValue",
    "SearchQuery",
    "TokenValue",
    "parse_search",
]

MAX_COUNT = 1000
DEFAULT_COUNT = 50
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = {
    "_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
    "_format", "_pretty", "_cursor", "_contained", "_containedType",
}
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MODIFIERS = {
    "token": {"not", "text", "missing", "in", "not-in", "above", "below", "of-type"},
    "string": {"exact", "contains", "missing"},
    "date": {"missing"},
    "reference": {"missing", "identifier"},
    "quantity": {"missing"},
    "number": {"missing"},
    "uri": {"missing", "below", "above"},
}
_SUPPORTED_MODIFIERS = {
    "token": {"not", "text", "missing"},
    "string": {"exact", "contains", "missing"},
    "date": {"missing"},
    "reference": {"missing"},
    "quantity": {"missing"},
    "number": {"missing"},
    "uri": {"missing", "below", "above"},
}


@dataclass(frozen=True, slots=True)
class TokenValue:
    """``code`` (any system), ``system|code``, ``|code`` (no system), ``system|``."""

    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code in the system


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class NumberValue:
    """A number with its implicit precision range [lo, hi)."""

    prefix: str
    value: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class QuantityValue:
    number: NumberValue
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    type: str | None
    id: str | None
    url: str | None  # an absolute reference, matched as written


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter occurrence: its values are ORed; criteria are ANDed."""

    name: str  # parameter code, e.g. "code", "_id", "_lastUpdated"
    type: str  # token, string, date, reference, quantity, number, uri, id, lastUpdated
    modifier: str | None
    values: tuple[object, ...]
    param: SearchParam | None = None
    missing: bool | None = None  # for :missing


@dataclass(frozen=True, slots=True)
class Include:
    """``_include=Source:param[:Target]`` or ``_revinclude`` of the same form."""

    source: str
    param: str
    target: str | None
    iterate: bool = False


@dataclass(slots=True)
class SearchQuery:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    count: int = DEFAULT_COUNT
    total: str = "none"  # none | estimate | accurate
    summary: str | None = None  # true | false | text | data | count
    elements: list[str] | None = None
    include: list[Include] = field(default_factory=list)
    revinclude: list[Include] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    # An extra SQL condition on ``resources r`` set by the egress gate (never by a client):
    # which patients' data this requester may see.
    restrict: tuple[str, list[object]] | None = None


def parse_search(
    resource_type: str,
    params: Iterable[tuple[str, str]],
    *,
    strict: bool = False,
    resource_types: frozenset[str] | None = None,
) -> SearchQuery:
    """Parse query parameters (in order, repeats allowed) into a SearchQuery."""
    query = SearchQuery(resource_type)
    defs = search_params(resource_type)
    for raw_name, raw_value in params:
        name, _, modifier = raw_name.partition(":")
        if name in RESULT_PARAMS:
            _parse_result_param(query, name, raw_value, modifier, resource_types)
            continue
        try:
            criterion = _parse_criterion(resource_type, defs, name, modifier or None, raw_value)
        except _Unsupported as exc:
            _unsupported(query, str(exc), raw_name, strict)
            continue
        query.criteria.append(criterion)
    return query


class _Unsupported(Exception):
    pass


def _unsupported(query: SearchQuery, message: str, name: str, strict: bool) -> None:
    if strict:
        raise InvalidRequest(message, [Issue("error", "not-supported", message, name)])
    query.warnings.append(Issue("warning", "not-supported", message + " (ignored)", name))


def _parse_criterion(
    rtype: str, defs: dict[str, SearchParam] | object, name: str, modifier: str | None, raw: str
) -> Criterion:
    if name == "_id":
        ptype = "id"
        param = None
    elif name == "_lastUpdated":
        ptype = "lastUpdated"
        param = None
    else:
        param = defs.get(name) if hasattr(defs, "get") else None  # type: ignore[union-attr]
        if param is None:
            raise _Unsupported(f"Unknown search parameter '{name}' for {rtype}")
        if "." in name or not param.supported:
            raise _Unsupported(f"Search parameter '{name}' is not supported for {rtype}")
        ptype = param.type
    if modifier is not None:
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise InvalidRequest(f"':missing' takes true or false, not '{raw}'")
            return Criterion(name, ptype, modifier, (), param, raw == "true")
        if ptype == "reference" and modifier[:1].isupper():
            pass  # type modifier, e.g. subject:Patient=123
        elif modifier not in _SUPPORTED_MODIFIERS.get(ptype, set()):
            raise _Unsupported(f"Modifier ':{modifier}' is not supported on '{name}'")
    values = tuple(_parse_value(ptype, modifier, v, name) for v in _split_or(raw))
    if not values:
        raise InvalidRequest(f"Search parameter '{name}' has no value")
    return Criterion(name, ptype, modifier, values, param)


def _split_or(raw: str) -> list[str]:
    """Split on commas that are not escaped with a backslash; drop empty values."""
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw) and raw[i + 1] in ",$|\\":
            buf.append(raw[i + 1])
            i += 2
            continue
        if ch == ",":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return [p for p in parts if p != ""]


def _parse_value(ptype: str, modifier: str | None, raw: str, name: str) -> object:
    try:
        return _PARSERS[ptype](raw, modifier)
    except (ValueError, InvalidOperation) as exc:
        raise InvalidRequest(
            f"Invalid value '{raw}' for search parameter '{name}': {exc}",
            [Issue("error", "invalid", f"Invalid value '{raw}': {exc}", name)],
        ) from None


def _token(raw: str, modifier: str | None) -> object:
    if modifier == "text":
        return raw
    if "|" not in raw:
        return TokenValue(None, raw)
    system, _, code = raw.partition("|")
    return TokenValue(system, code or None)


def _split_prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in DATE_PREFIXES and not raw[:2].isdigit():
        return raw[:2], raw[2:]
    return "eq", raw


def _date(raw: str, modifier: str | None) -> DateValue:
    prefix, text = _split_prefix(raw)
    lo, hi = date_range(text)
    return DateValue(prefix, lo, hi)


def _number(raw: str, modifier: str | None = None) -> NumberValue:
    prefix, text = _split_prefix(raw)
    dec = Decimal(text)
    if not dec.is_finite():
        raise ValueError("not a finite number")
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    return NumberValue(prefix, float(dec), float(dec - half), float(dec + half))


def _quantity(raw: str, modifier: str | None) -> QuantityValue:
    parts = _split_pipes(raw)
    number = _number(parts[0])
    system = parts[1] if len(parts) > 1 and parts[1] else None
    code = parts[2] if len(parts) > 2 and parts[2] else None
    return QuantityValue(number, system, code)


def _split_pipes(raw: str) -> list[str]:
    return raw.split("|", 2)


def _reference(raw: str, modifier: str | None) -> ReferenceValue:
    type_mod = modifier if modifier and modifier[:1].isupper() else None
    if "://" in raw:
        tail = raw.rstrip("/").split("/")
        if len(tail) >= 2 and tail[-2][:1].isupper():
            return ReferenceValue(tail[-2], tail[-1], raw)
        return ReferenceValue(None, None, raw)
    if "/" in raw:
        rtype, _, rid = raw.partition("/")
        rid = rid.split("/_history/")[0]
        if not _ID_RE.match(rid):
            raise ValueError("not a valid resource id")
        return ReferenceValue(rtype, rid, None)
    if not _ID_RE.match(raw):
        raise ValueError("not a valid resource id")
    return ReferenceValue(type_mod, raw, None)


def _string(raw: str, modifier: str | None) -> str:
    return raw


def _id(raw: str, modifier: str | None) -> str:
    if not _ID_RE.match(raw):
        raise ValueError("not a valid resource id")
    return raw


_PARSERS = {
    "token": _token,
    "string": _string,
    "date": _date,
    "lastUpdated": _date,
    "number": _number,
    "quantity": _quantity,
    "reference": _reference,
    "uri": _string,
    "id": _id,
}


def _parse_result_param(
    query: SearchQuery,
    name: str,
    raw: str,
    modifier: str,
    resource_types: frozenset[str] | None,
) -> None:
    if name == "_count":
        if not raw.isdigit():
            raise InvalidRequest(f"_count must be a non-negative integer, not '{raw}'")
        query.count = min(int(raw), MAX_COUNT)
    elif name == "_sort":
        query.sort = [_sort_key(query.resource_type, s) for s in raw.split(",") if s]
    elif name == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise InvalidRequest(f"_total must be none, estimate or accurate, not '{raw}'")
        query.total = raw
    elif name == "_summary":
        if raw not in ("true", "false", "text", "data", "count"):
            raise InvalidRequest(f"_summary must be true, false, text, data or count, not '{raw}'")
        query.summary = raw
    elif name == "_elements":
        query.elements = [e.strip() for e in raw.split(",") if e.strip()]
    elif name in ("_include", "_revinclude"):
        inc = _parse_include(raw, modifier == "iterate", resource_types)
        (query.include if name == "_include" else query.revinclude).append(inc)


def _sort_key(rtype: str, raw: str) -> tuple[str, bool]:
    desc = raw.startswith("-")
    code = raw[1:] if desc else raw
    if code not in ("_id", "_lastUpdated"):
        param = search_params(rtype).get(code)
        if param is None or not param.supported or param.type in ("composite", "special"):
            raise InvalidRequest(f"Cannot sort {rtype} by '{code}'")
    return code, desc


def _parse_include(raw: str, iterate: bool, resource_types: frozenset[str] | None) -> Include:
    parts = raw.split(":")
    if len(parts) not in (2, 3):
        raise InvalidRequest(f"_include/_revinclude must be Type:param[:Target], not '{raw}'")
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if resource_types is not None and source not in resource_types:
        raise InvalidRequest(f"Unknown resource type '{source}' in '{raw}'")
    if param != "*":
        sp = search_params(source).get(param)
        if sp is None or sp.type != "reference" or not sp.supported:
            raise InvalidRequest(f"'{param}' is not a reference parameter of {source}")
    return Include(source, param, target, iterate)

