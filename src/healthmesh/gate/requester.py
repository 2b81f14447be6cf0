"""Who is asking and why: the requester of one request.

Until the security layer lands (issue 5), a node learns the requester from
request headers — ``X-Requester`` (a reference such as ``Organization/uni-research``)
and ``X-Purpose-Of-Use`` (an HL7 v3 ActReason code) — or, for a patient, from a
patient token (``Authorization: Bearer ...``) issued by ``healthmesh patient token``.
Once access tokens exist, the gate takes both from the verified token only.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from healthmesh.errors import FhirError, InvalidRequest

__all__ = ["PatientTokens", "Requester", "requester_from_headers"]

_REFERENCE = re.compile(r"^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$")
_PURPOSE = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
PATIENT_PURPOSE = "PATRQT"


@dataclass(frozen=True, slots=True)
class Requester:
    """The caller of one request: who (``actor``), why (``purpose``), and whether the
    caller is a patient acting for themself (``patient``)."""

    actor: str
    purpose: str | None
    patient: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def organisation(self) -> str | None:
        return self.actor if self.actor.startswith("Organization/") else None

    @property
    def is_patient(self) -> bool:
        return self.patient is not None

    def scope_key(self) -> str:
        """The (purpose, requester) key under which consent coverage is kept."""
        who = f"Patient/{self.patient}" if self.patient else self.actor
        return f"{self.purpose or '-'}|{who}"


class Forbidden(FhirError):
    """403: the request has no purpose of use, or a bad patient token."""

    def __init__(self, message: str) -> None:
        super().__init__(message, [], 403, "forbidden")


class PatientTokens:
    """Patient access tokens of a node (hashes only), in ``DIR/patient-tokens.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        data: dict[str, str] = orjson.loads(self.path.read_bytes())
        return data

    def issue(self, patient_id: str) -> str:
        """A new token for ``patient_id`` (printed once; only its hash is kept)."""
        token = secrets.token_urlsafe(24)
        tokens = self._load()
        tokens[_digest(token)] = patient_id
        self.path.write_bytes(orjson.dumps(tokens))
        self.path.chmod(0o600)
        return token

    def patient_for(self, token: str) -> str | None:
        return self._load().get(_digest(token))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def requester_from_headers(headers: Mapping[str, str], tokens: PatientTokens) -> Requester:
    """The requester of an HTTP request (headers are case-insensitive)."""
    purpose = headers.get("x-purpose-of-use")
    if purpose is not None and not _PURPOSE.match(purpose):
        raise InvalidRequest(f"X-Purpose-Of-Use must be an ActReason code, not '{purpose}'")
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        patient = tokens.patient_for(auth[7:].strip())
        if patient is None:
            raise Forbidden("The patient token is not valid")
        return Requester(f"Patient/{patient}", purpose or PATIENT_PURPOSE, patient)
    actor = headers.get("x-requester", "anonymous")
    if actor != "anonymous" and not _REFERENCE.match(actor):
        raise InvalidRequest(f"X-Requester must be a reference like Organization/x, not '{actor}'")
    return Requester(actor, purpose)
