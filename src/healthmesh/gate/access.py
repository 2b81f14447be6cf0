"""What an access token's SMART scopes allow, applied by the egress gate.

The consent decides whose data a requester may see; the scopes decide which kinds of
data and which interactions the app behind the token may use. Both apply to every
request: a resource type or an interaction (create, read, update, delete, search) that
no scope grants is refused with 403; a scope's ``?param=value`` constraint narrows
searches (added to the query) and reads (the resource must match it); a token bound to
one patient (a ``patient/`` scope with a patient context) sees only that patient's
compartment and resources outside any compartment.

A requester without scopes (``access is None``) is a local, trusted caller (the CLI,
a federated task already checked against its agreement): scopes do not apply.
"""

from __future__ import annotations

from typing import Any

from healthmesh.auth.scopes import InsufficientScope
from healthmesh.fhir.search_params import patient_compartment
from healthmesh.gate.requester import Requester
from healthmesh.store.base import StoredResource

__all__ = ["InsufficientScope", "body_within_context", "context_condition",
           "matches_constraints", "scope_params", "visible_type"]


def scope_params(requester: Requester, rtype: str, perm: str) -> list[tuple[str, str]]:
    """Search parameters that a scope's constraints add (raises if ``perm`` is not granted).

    Several constrained scopes for one type widen each other; FHIR search ORs the
    values of one parameter (``category=a,b``), so constraints on one parameter name
    combine exactly. Constraints on different parameters cannot be ORed in one search
    and are refused: ask for one scope per parameter.
    """
    if requester.access is None:
        return []
    alternatives = requester.access.require(rtype, perm)
    if not alternatives:
        return []
    names = {name for params in alternatives for name, _ in params}
    if len(names) != 1 or any(len(params) != 1 for params in alternatives):
        raise InsufficientScope(
            f"The token's scopes constrain {rtype} in ways that cannot be combined; "
            "ask for scopes that constrain one search parameter")
    (name,) = names
    return [(name, ",".join(sorted({v for params in alternatives for _, v in params})))]


def context_condition(requester: Requester) -> tuple[str, list[object]] | None:
    """SQL condition on ``resources r`` for a token bound to one patient, else None."""
    if requester.access is None or requester.context_patient is None:
        return None
    return "(r.patient IS NULL OR r.patient = ?)", [requester.context_patient]


def visible_type(requester: Requester, rtype: str, perm: str = "r") -> bool:
    """True if the token's scopes allow ``perm`` on ``rtype`` (always for local callers)."""
    return requester.access is None or requester.access.allows(rtype, perm)


def matches_constraints(repo: Any, requester: Requester, stored: StoredResource,
                        perm: str) -> None:
    """Raise :class:`InsufficientScope` unless ``stored`` is within the token's scopes:
    the interaction is granted for its type, it matches a constraint if there is one,
    and it belongs to the token's patient if the token is bound to one."""
    if requester.access is None:
        return
    params = scope_params(requester, stored.type, perm)
    context = requester.context_patient
    if context is not None and stored.content is not None:
        patient = stored.patient or patient_compartment(stored.resource())
        if patient is not None and patient != context:
            raise InsufficientScope("The access token is bound to another patient")
    if params:
        query = repo.fhir.parse(stored.type, [("_id", stored.id), *params], strict=True)
        if repo.fhir.store.count(query) == 0:
            raise InsufficientScope(
                f"{stored.type}/{stored.id} is outside the access token's scope constraints")


def body_within_context(requester: Requester, body: Any) -> None:
    """A write by a token bound to one patient must be about that patient."""
    if requester.access is None or requester.context_patient is None:
        return
    patient = patient_compartment(body) if isinstance(body, dict) else None
    if patient is not None and patient != requester.context_patient:
        raise InsufficientScope("The access token is bound to another patient")
