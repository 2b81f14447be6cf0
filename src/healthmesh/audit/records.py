"""What one audit entry says: :class:`AuditRecord`, and :class:`AuditEntry` as read back.

A record is immutable and validated when built. Its canonical form
(:meth:`AuditRecord.canonical`) is the JSON object of all fields, keys sorted
(``orjson.OPT_SORT_KEYS``, nested ``detail`` keys too), no whitespace, ``null`` for
absent values and arrays for tuples. Those exact bytes are stored and hashed, so a
record read back hashes to the same value on any machine.
"""

from __future__ import annotations

import re
import time as _time
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import orjson

from healthmesh.audit.errors import InvalidAuditRecord

__all__ = [
    "ACTIONS",
    "DECISIONS",
    "MAX_DETAIL_BYTES",
    "AuditEntry",
    "AuditRecord",
    "now_us",
]

ACTIONS = frozenset(
    {
        "read", "vread", "search", "history", "everything", "export", "create",
        "update", "patch", "delete", "transaction", "operation", "consent-change",
        "admin", "login", "federated-task", "linkage",
    }
)
"""Actions with a known meaning (and FHIR mapping); other lowercase tokens are accepted."""

DECISIONS = ("permit", "deny", "n/a")
"""Values of :attr:`AuditRecord.decision`."""

MAX_DETAIL_BYTES = 4096
"""Largest canonical JSON of :attr:`AuditRecord.detail`: details are small by design."""

_TOKEN = re.compile(r"[a-z][a-z0-9$-]{0,63}")
_CODE = re.compile(r"[^\s]{1,64}")
_ACTOR = re.compile(r"[^\s]{1,256}")
_ID = r"[A-Za-z0-9\-.]{1,64}"
_REFERENCE = re.compile(rf"[A-Z][A-Za-z]{{1,63}}/{_ID}(/_history/{_ID})?")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_PATIENT = re.compile(_ID)
_OUTCOME_WORDS = ("success", "failure")


def now_us() -> int:
    """The current time as epoch microseconds (UTC)."""
    return _time.time_ns() // 1000


def _bad(name: str, value: object, expected: str) -> InvalidAuditRecord:
    return InvalidAuditRecord(f"audit record field {name}={value!r}: expected {expected}")


def _strings(name: str, values: Any, pattern: re.Pattern[str], expected: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, tuple | list):
        raise _bad(name, values, "a tuple of strings")
    for value in values:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _bad(name, value, expected)
    return tuple(values)


def _patients(values: Any) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, tuple | list):
        raise _bad("patients", values, "a tuple of patient ids")
    plain = [v[8:] if isinstance(v, str) and v.startswith("Patient/") else v for v in values]
    return _strings("patients", plain, _PATIENT, "patient ids ('123' or 'Patient/123')")


def _check_outcome(outcome: object) -> None:
    if isinstance(outcome, bool) or not (
        (isinstance(outcome, int) and 100 <= outcome <= 599) or outcome in _OUTCOME_WORDS
    ):
        raise _bad("outcome", outcome, "an HTTP status (100-599), 'success' or 'failure'")


def _check_optional_text(name: str, value: object, pattern: re.Pattern[str] | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or (pattern and not pattern.fullmatch(value)):
        raise _bad(name, value, "a non-empty string without spaces" if pattern else "text")


def _check_detail(detail: Any) -> dict[str, Any] | None:
    if detail is None:
        return None
    if not isinstance(detail, dict):
        raise _bad("detail", detail, "a dict or None")
    try:
        size = len(orjson.dumps(detail, option=orjson.OPT_SORT_KEYS))
    except TypeError as exc:
        raise _bad("detail", detail, f"JSON-serialisable values ({exc})") from None
    if size > MAX_DETAIL_BYTES:
        raise _bad("detail", f"<{size} bytes>", f"at most {MAX_DETAIL_BYTES} bytes of JSON")
    return dict(detail)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One audited event: who did what to which data, under which decision.

    ``time`` is epoch microseconds UTC; ``actor`` a FHIR-style reference of the caller
    (``Organization/uni-research``, ``Practitioner/123``) or ``system``; ``purpose`` an
    HL7 v3 ActReason code (``TREAT``, ``HRESCH``); ``resources`` ``Type/id`` references
    (``Type/id/_history/v`` for a vread); ``patients`` the ids of the patients whose data
    was touched (``Patient/`` prefixes are stripped); ``decision`` ``permit``, ``deny``
    or ``n/a``; ``rule`` what decided (``Consent/abc#provision[0]``, ``default:HRESCH``);
    ``outcome`` an HTTP status or ``success``/``failure``; ``detail`` a small JSON object.
    Lists are accepted where tuples are expected and converted.
    """

    actor: str
    action: str
    time: int = field(default_factory=now_us)
    organisation: str | None = None
    purpose: str | None = None
    resource_types: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    decision: str = "n/a"
    rule: str | None = None
    reason: str | None = None
    request_id: str | None = None
    outcome: int | str = "success"
    detail: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.actor, str) or not _ACTOR.fullmatch(self.actor):
            raise _bad("actor", self.actor, "a reference like 'Organization/x' or 'system'")
        if not isinstance(self.action, str) or not _TOKEN.fullmatch(self.action):
            raise _bad("action", self.action, "a lowercase token like 'read' or 'export'")
        if isinstance(self.time, bool) or not isinstance(self.time, int) or self.time < 0:
            raise _bad("time", self.time, "epoch microseconds (a non-negative int)")
        if self.decision not in DECISIONS:
            raise _bad("decision", self.decision, f"one of {', '.join(DECISIONS)}")
        _check_outcome(self.outcome)
        _check_optional_text("organisation", self.organisation, None)
        _check_optional_text("purpose", self.purpose, _CODE)
        _check_optional_text("rule", self.rule, None)
        _check_optional_text("reason", self.reason, None)
        _check_optional_text("request_id", self.request_id, None)
        self._coerce()

    def _coerce(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "resource_types", _strings(
            "resource_types", self.resource_types, _RESOURCE_TYPE, "FHIR resource type names"))
        setattr_(self, "resources", _strings(
            "resources", self.resources, _REFERENCE, "'Type/id' references"))
        setattr_(self, "patients", _patients(self.patients))
        setattr_(self, "detail", _check_detail(self.detail))

    @classmethod
    def trusted(cls, **values: Any) -> AuditRecord:
        """A record built without per-field checks, for callers whose values come from
        validated data (the egress gate: references read from the store). Tuples must
        already be tuples and patient ids bare; ``detail`` stays small."""
        record = object.__new__(cls)
        for name in _FIELD_NAMES:
            default = _DEFAULTS[name]
            value = values[name] if name in values else (
                default() if callable(default) else default)
            object.__setattr__(record, name, value)
        return record

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict (tuples stay tuples)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def canonical(self) -> bytes:
        """The canonical JSON bytes that are stored and hashed."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str) -> AuditRecord:
        """Rebuild a record from its canonical JSON (validating it again)."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidAuditRecord(f"audit record is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidAuditRecord("audit record JSON is not an object")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise InvalidAuditRecord(f"audit record has unexpected fields: {exc}") from None


_FIELD_NAMES = tuple(f.name for f in fields(AuditRecord))


_DEFAULTS: dict[str, Any] = {
    f.name: (f.default_factory if f.default_factory is not MISSING else f.default)
    for f in fields(AuditRecord)
}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record as stored: its chain ``position`` (1, 2, ...) and ``hash`` (hex SHA-256)."""

    position: int
    record: AuditRecord
    hash: str
