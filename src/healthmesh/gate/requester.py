"""Who is asking and why: the requester of one request.

A node learns who calls from the verified access token (:mod:`healthmesh.auth`): the
organisation acting (the consent recipient), the purpose of use, the SMART scopes, the
patient context, and the user or client behind it. Only a node started with
``--insecure-dev`` also takes unauthenticated ``X-Requester`` / ``X-Purpose-Of-Use``
headers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from healthmesh.auth.scopes import ScopeSet
from healthmesh.auth.tokens import AccessClaims, TokenService, Unauthorized
from healthmesh.errors import FhirError, InvalidRequest

__all__ = ["Forbidden", "Requester", "requester_from_headers", "requester_from_token"]

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
    #: the access token's SMART scopes (None: a local, trusted caller such as the CLI)
    access: ScopeSet | None = field(default=None, compare=False)
    #: the patient a ``patient/`` scope is bound to (SMART launch context)
    context_patient: str | None = None
    #: the user or client acting (``user:NAME`` / ``client:ID``), for the audit log
    agent: str | None = None

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


def _actor(claims: AccessClaims) -> str:
    if claims.role == "patient" and claims.patient:
        return f"Patient/{claims.patient}"
    if claims.org:
        return claims.org if "/" in claims.org else f"Organization/{claims.org}"
    return f"Device/{claims.client_id}"


def requester_from_token(token: str, tokens: TokenService, purpose: str | None) -> Requester:
    """The requester an access token names; its purpose of use comes from the token."""
    claims = tokens.verify(token)
    if purpose is not None and purpose != claims.purpose:
        raise Forbidden(f"The purpose of use is the access token's ({claims.purpose}); "
                        f"ask for a token for {purpose} instead")
    is_patient = claims.role == "patient" and claims.patient is not None
    return Requester(
        _actor(claims), claims.purpose, claims.patient if is_patient else None,
        access=claims.scopes, context_patient=claims.patient, agent=claims.agent,
    )


def requester_from_headers(
    headers: Mapping[str, str], tokens: TokenService, *, insecure_dev: bool = False,
) -> Requester:
    """The requester of an HTTP request (headers are case-insensitive).

    An ``Authorization: Bearer`` access token is required; only a node started with
    ``--insecure-dev`` also takes the unauthenticated ``X-Requester`` and
    ``X-Purpose-Of-Use`` headers (for development, never in production).
    """
    purpose = headers.get("x-purpose-of-use")
    if purpose is not None and not _PURPOSE.match(purpose):
        raise InvalidRequest(f"X-Purpose-Of-Use must be an ActReason code, not '{purpose}'")
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return requester_from_token(auth[7:].strip(), tokens, purpose)
    if auth:
        raise Unauthorized("Only 'Authorization: Bearer <access token>' is accepted")
    if not insecure_dev:
        raise Unauthorized("This node requires an access token "
                           "('Authorization: Bearer ...'; see /.well-known/smart-configuration)")
    actor = headers.get("x-requester", "anonymous")
    if actor != "anonymous" and not _REFERENCE.match(actor):
        raise InvalidRequest(f"X-Requester must be a reference like Organization/x, not '{actor}'")
    return Requester(actor, purpose)
