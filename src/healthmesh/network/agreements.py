"""Data-sharing agreements: machine-readable contracts that every party signs and checks.

An agreement names who may ask (``requester``), who answers (``providers``), why
(``purposes``), what may be read (``tables`` and ``strata``), how (``algorithms``),
with which disclosure controls (``disclosure``), for how long (``valid_from`` /
``valid_to``), what happens to results (``retention_days``), how fast nodes answer
(``deadline_seconds``) and whether a steward reviews each release (``release_review``).

The hub stores agreements, but a node never trusts the hub's copy: it keeps its own
(``DIR/network/agreements/<id>.json``, written when its steward signs) and refuses
any task that falls outside it (:func:`check_task`).

Each party signs the canonical JSON of the agreement body (sorted keys, no spaces)
with its membership key: a JWS whose claims carry the body's SHA-256. An agreement
is in force only when every party has signed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from healthmesh.errors import HealthmeshError

__all__ = [
    "Agreement",
    "AgreementError",
    "TaskRefused",
    "body_digest",
    "check_task",
    "load_agreement",
    "save_agreement",
]

_ID = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")
_ORG = re.compile(r"^Organization/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # as in certificates
_PURPOSE = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
_MAX_BYTES = 64 * 1024


class AgreementError(HealthmeshError):
    """An agreement that is malformed, unsigned or not in force."""


class TaskRefused(HealthmeshError):
    """A node refuses a task; the message is the reason reported to the requester."""


@dataclass(frozen=True)
class Agreement:
    """One data-sharing agreement (see the module docstring for the fields)."""

    id: str
    title: str
    requester: str
    providers: tuple[str, ...]
    purposes: tuple[str, ...]
    algorithms: tuple[str, ...]
    tables: tuple[str, ...]
    strata: tuple[str, ...]
    valid_from: str
    valid_to: str
    disclosure: dict[str, Any] = field(default_factory=dict)
    retention_days: int = 365
    deadline_seconds: int = 30
    release_review: str = "auto"
    signatures: dict[str, str] = field(default_factory=dict)

    # -- (de)serialisation ---------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """Everything but the signatures: what the parties sign."""
        data = asdict(self)
        data.pop("signatures")
        for key in ("providers", "purposes", "algorithms", "tables", "strata"):
            data[key] = list(data[key])
        return data

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "signatures": dict(self.signatures)}

    @classmethod
    def from_json(cls, data: Any) -> Agreement:
        """Parse and validate an agreement (raises :class:`AgreementError`)."""
        if not isinstance(data, dict):
            raise AgreementError("an agreement must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise AgreementError(f"unknown agreement field(s): {', '.join(unknown)}")
        missing = sorted(k for k in ("id", "title", "requester", "providers", "purposes",
                                     "algorithms", "tables", "strata", "valid_from",
                                     "valid_to") if k not in data)
        if missing:
            raise AgreementError(f"agreement is missing: {', '.join(missing)}")
        agreement = cls(
            id=_text(data, "id", _ID), title=_text(data, "title", None),
            requester=_text(data, "requester", _ORG),
            providers=_list(data, "providers", _ORG), purposes=_list(data, "purposes", _PURPOSE),
            algorithms=_list(data, "algorithms", _NAME), tables=_list(data, "tables", _NAME),
            strata=_list(data, "strata", _NAME, allow_empty=True),
            valid_from=_day(data, "valid_from"), valid_to=_day(data, "valid_to"),
            disclosure=_disclosure(data.get("disclosure", {})),
            retention_days=_int(data, "retention_days", 365),
            deadline_seconds=_int(data, "deadline_seconds", 30),
            release_review=_choice(data, "release_review", ("auto", "manual"), "auto"),
            signatures=_signatures(data.get("signatures", {})),
        )
        if agreement.valid_to < agreement.valid_from:
            raise AgreementError("valid_to is before valid_from")
        return agreement

    def parties(self) -> tuple[str, ...]:
        return (self.requester, *self.providers)

    def in_force(self, at: datetime | None = None) -> bool:
        day = (at or datetime.now(UTC)).date().isoformat()
        return self.valid_from <= day <= self.valid_to

    def with_signature(self, party: str, token: str) -> Agreement:
        if party not in self.parties():
            raise AgreementError(f"{party} is not a party to agreement {self.id}")
        return Agreement(**{**self.__dict__, "signatures": {**self.signatures, party: token}})


def body_digest(agreement: Agreement) -> str:
    """Base64url SHA-256 of the canonical body: what each party's signature covers."""
    canonical = orjson.dumps(agreement.body(), option=orjson.OPT_SORT_KEYS)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def save_agreement(folder: Path, agreement: Agreement) -> Path:
    """Write ``folder/<id>.json`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{agreement.id}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(agreement.to_json(), option=orjson.OPT_INDENT_2))
    tmp.replace(path)
    return path


def load_agreement(path: Path) -> Agreement:
    """Read one agreement file (raises :class:`AgreementError` naming the file)."""
    try:
        raw = path.read_bytes()
        if len(raw) > _MAX_BYTES:
            raise AgreementError(f"{path}: larger than {_MAX_BYTES} bytes")
        return Agreement.from_json(orjson.loads(raw))
    except (OSError, orjson.JSONDecodeError) as exc:
        raise AgreementError(f"{path}: {exc}") from None
    except AgreementError as exc:
        raise AgreementError(f"{path}: {exc}") from None


def check_task(agreement: Agreement, task: dict[str, Any], *, site: str,
               tables_used: set[str], strata_used: set[str], at: datetime | None = None) -> None:
    """Refuse (:class:`TaskRefused`) a task that falls outside ``agreement`` for ``site``."""
    if task.get("agreement") != agreement.id:
        raise TaskRefused(f"task names agreement {task.get('agreement')!r}, not {agreement.id}")
    if not agreement.in_force(at):
        raise TaskRefused(f"agreement {agreement.id} is not in force "
                          f"({agreement.valid_from} to {agreement.valid_to})")
    unsigned = [p for p in agreement.parties() if p not in agreement.signatures]
    if unsigned:
        raise TaskRefused(f"agreement {agreement.id} is not signed by {', '.join(unsigned)}")
    if site not in agreement.providers:
        raise TaskRefused(f"{site} is not a provider under agreement {agreement.id}")
    if task.get("requester") != agreement.requester:
        raise TaskRefused(f"{task.get('requester')} is not the requester of {agreement.id}")
    if task.get("purpose") not in agreement.purposes:
        raise TaskRefused(f"purpose {task.get('purpose')!r} is not allowed by {agreement.id} "
                          f"(allowed: {', '.join(agreement.purposes)})")
    if task.get("algorithm") not in agreement.algorithms:
        raise TaskRefused(f"algorithm {task.get('algorithm')!r} is not allowed by "
                          f"{agreement.id} (allowed: {', '.join(agreement.algorithms)})")
    extra_tables = sorted(tables_used - set(agreement.tables))
    if extra_tables:
        raise TaskRefused(f"agreement {agreement.id} does not allow reading "
                          f"{', '.join(extra_tables)}")
    extra_strata = sorted(strata_used - set(agreement.strata))
    if extra_strata:
        raise TaskRefused(f"agreement {agreement.id} does not allow stratifying by "
                          f"{', '.join(extra_strata)}")


# -- field checks ------------------------------------------------------------------------

def _text(data: dict[str, Any], key: str, pattern: re.Pattern[str] | None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > 500:
        raise AgreementError(f"{key} must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(value):
        raise AgreementError(f"{key} {value!r} is not valid (expected {pattern.pattern})")
    return value


def _list(data: dict[str, Any], key: str, pattern: re.Pattern[str], *,
          allow_empty: bool = False) -> tuple[str, ...]:
    values = data.get(key)
    if not isinstance(values, list) or (not values and not allow_empty) or len(values) > 200:
        raise AgreementError(f"{key} must be a list of 1 to 200 strings")
    for value in values:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise AgreementError(f"{key}: {value!r} is not valid (expected {pattern.pattern})")
    return tuple(values)


def _day(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    try:
        return date.fromisoformat(value).isoformat()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AgreementError(f"{key} must be a date YYYY-MM-DD, not {value!r}") from None


def _int(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10**6:
        raise AgreementError(f"{key} must be a positive integer, not {value!r}")
    return value


def _choice(data: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise AgreementError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


_DISCLOSURE_KEYS = {"min_cell": int, "rounding": int, "epsilon_per_query": float,
                    "total_epsilon": float, "mechanism": str, "max_repeats": int,
                    "window_days": int, "delta": float}


def _disclosure(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AgreementError("disclosure must be an object")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        kind = _DISCLOSURE_KEYS.get(key)
        if kind is None:
            raise AgreementError(f"unknown disclosure control {key!r} "
                                 f"(known: {', '.join(sorted(_DISCLOSURE_KEYS))})")
        if raw is None:
            out[key] = None
        elif kind is str:
            if raw not in ("laplace", "gaussian"):
                raise AgreementError("disclosure.mechanism must be laplace or gaussian")
            out[key] = raw
        elif isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise AgreementError(f"disclosure.{key} must be a non-negative number")
        else:
            out[key] = kind(raw)
    if out.get("epsilon_per_query") == 0:
        raise AgreementError("disclosure.epsilon_per_query must be positive (or null: no noise)")
    if out.get("epsilon_per_query") is not None and not out.get("total_epsilon"):
        raise AgreementError("disclosure.epsilon_per_query needs disclosure.total_epsilon")
    return out


def _signatures(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) < 4096 for k, v in value.items()):
        raise AgreementError("signatures must map party references to JWS strings")
    return dict(value)
