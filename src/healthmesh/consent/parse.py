"""Parse FHIR R4 ``Consent`` resources into the immutable :mod:`~healthmesh.consent.model`.

The parser is strict about what it cannot enforce, so the node can reject such a Consent
when it is written instead of silently not honouring it:

* required: ``resourceType`` Consent, a known ``status``, a ``scope`` coded from
  http://terminology.hl7.org/CodeSystem/consentscope, and ``patient`` as a literal
  ``Patient/<id>`` reference;
* every provision needs a ``type``: the root may take it from ``policyRule`` (v3-ActCode
  OPTIN/OPTINR = permit, OPTOUT/OPTOUTE = deny), a nested provision without a type is
  the opposite of its parent (it is an exception, as in the R4 ``consent-example-pkb``);
* periods must be valid FHIR dates with start <= end; actions must be consentaction codes;
  actors need a literal reference; classes are FHIR resource types;
* a criterion the node cannot check (an unknown actor role, a CDA/MIME class, a code
  without a system) makes a ``deny`` provision an error, and makes a ``permit`` provision
  one that never applies;
* ``modifierExtension`` anywhere is an error (FHIR: unknown modifiers must be rejected).

Errors are :class:`~healthmesh.consent.model.ConsentError` naming the element.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from healthmesh.fhir.search_params import date_range

from .model import (
    ACTIONS,
    SCOPES,
    STATUSES,
    Actor,
    ConsentError,
    DataItem,
    ParsedConsent,
    Period,
    Provision,
)

__all__ = ["parse_consent"]

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
RESOURCE_TYPES_SYSTEM = "http://hl7.org/fhir/resource-types"
RECIPIENT_ROLES = frozenset({"PRCP", "IRCP", "DELEGATEE", "GRANTEE"})
SOURCE_ROLES = frozenset({"AUT", "CST", "INF", "ENT"})
DATA_MEANINGS = frozenset({"instance", "related", "dependents", "authoredby"})
POLICY_TYPES = {"OPTIN": "permit", "OPTINR": "permit", "OPTOUT": "deny", "OPTOUTE": "deny"}
MAX_DEPTH = 16
_REFERENCE = re.compile(r"^(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def parse_consent(resource: Mapping[str, Any]) -> ParsedConsent:
    """Parse one FHIR R4 Consent resource; raise :class:`ConsentError` if it is malformed
    or asks for something the node cannot enforce."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Consent":
        raise ConsentError("not a Consent resource", "resourceType")
    _no_modifiers(resource, "Consent")
    rules = _policy_rules(resource.get("policyRule"))
    root_type = POLICY_TYPES.get(next((r for r in rules if r in POLICY_TYPES), ""))
    raw_root = resource.get("provision", {})
    provision = _provision(_mapping(raw_root, "Consent.provision"), "provision", root_type, 0)
    date_text = _optional_str(resource.get("dateTime"), "Consent.dateTime")
    return ParsedConsent(
        id=_optional_str(resource.get("id"), "Consent.id"),
        patient_id=_patient_id(resource.get("patient")),
        status=_status(resource.get("status")),
        scope=_scope(resource.get("scope")),
        provision=provision,
        date_time=_instant(date_text, "Consent.dateTime"),
        date_text=date_text,
        policy_rules=rules,
        organizations=_organizations(resource.get("organization")),
        edges=tuple(sorted({e for p in provision.walk() if p.period for e in p.period.edges()})),
    )


# --------------------------------------------------------------------------- consent level


def _status(value: Any) -> str:
    if value not in STATUSES:
        raise ConsentError(f"Consent.status {value!r} is not one of {sorted(STATUSES)}",
                           "Consent.status")
    return str(value)


def _scope(value: Any) -> str:
    where = "Consent.scope"
    for coding in _codings(_mapping(value, where, required=True), where):
        if coding.get("system") in (None, SCOPE_SYSTEM) and coding.get("code") in SCOPES:
            return str(coding["code"])
    raise ConsentError(f"Consent.scope must be coded from {SCOPE_SYSTEM} "
                       f"({', '.join(sorted(SCOPES))})", where)


def _patient_id(value: Any) -> str:
    where = "Consent.patient"
    kind, ident = _reference(_mapping(value, where, required=True), where)
    if kind != "Patient":
        raise ConsentError(f"Consent.patient must reference a Patient, not {kind}", where)
    return ident


def _policy_rules(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    where = "Consent.policyRule"
    return frozenset(str(c["code"]) for c in _codings(_mapping(value, where), where)
                     if isinstance(c.get("code"), str))


def _organizations(value: Any) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(_list(value, "Consent.organization")):
        kind, ident = _reference(_mapping(item, f"Consent.organization[{i}]"),
                                 f"Consent.organization[{i}]")
        out.append(f"{kind}/{ident}")
    return tuple(out)


# --------------------------------------------------------------------------- provisions


def _provision(raw: Mapping[str, Any], path: str, inherited: str | None,
               depth: int) -> Provision:
    where = "Consent." + path
    if depth > MAX_DEPTH:
        raise ConsentError(f"provisions nested deeper than {MAX_DEPTH} levels", where)
    _no_modifiers(raw, where)
    kind = _provision_type(raw.get("type"), inherited, where, depth)
    opposite = "deny" if kind == "permit" else "permit"
    children = tuple(
        _provision(_mapping(child, f"{where}.provision[{i}]"), f"{path}.provision[{i}]",
                   opposite, depth + 1)
        for i, child in enumerate(_list(raw.get("provision"), where + ".provision")))
    problems: list[str] = []
    provision = Provision(
        path=path, type=kind,
        period=_period(raw.get("period"), where + ".period"),
        actors=_actors(raw.get("actor"), where, problems),
        actions=_actions(raw.get("action"), where),
        security_labels=_coding_codes(raw.get("securityLabel"), where + ".securityLabel"),
        purposes=_coding_codes(raw.get("purpose"), where + ".purpose"),
        classes=_classes(raw.get("class"), where, problems),
        codes=_codes(raw.get("code"), where, problems),
        data_period=_period(raw.get("dataPeriod"), where + ".dataPeriod"),
        data=_data(raw.get("data"), where),
        provisions=children,
        unenforceable="; ".join(problems) or None,
    )
    if problems and kind == "deny":
        raise ConsentError(f"cannot enforce this deny provision: {problems[0]}", where)
    return provision


def _provision_type(value: Any, inherited: str | None, where: str, depth: int) -> str:
    if value in ("permit", "deny"):
        return str(value)
    if value is not None:
        raise ConsentError(f"provision type {value!r} must be 'permit' or 'deny'", where)
    if inherited is None:
        raise ConsentError("the root provision has no type and policyRule is not "
                           "OPTIN/OPTOUT (v3-ActCode), so it neither permits nor denies", where)
    return inherited


def _period(value: Any, where: str) -> Period | None:
    if value is None:
        return None
    raw = _mapping(value, where)
    start_text = _optional_str(raw.get("start"), where + ".start")
    end_text = _optional_str(raw.get("end"), where + ".end")
    start = _instant(start_text, where + ".start")
    end = _bound(end_text, where + ".end")
    if start is not None and end is not None and end <= start:
        raise ConsentError("period ends before it starts", where)
    return Period(start, end, start_text, end_text)


def _actors(value: Any, where: str, problems: list[str]) -> tuple[Actor, ...]:
    out = []
    for i, item in enumerate(_list(value, where + ".actor")):
        at = f"{where}.actor[{i}]"
        raw = _mapping(item, at)
        _no_modifiers(raw, at)
        ref = _mapping(raw.get("reference"), at + ".reference", required=True)
        kind, ident = _reference(ref, at + ".reference")
        role = _role(raw.get("role"), at + ".role")
        if role is not None and role not in RECIPIENT_ROLES | SOURCE_ROLES:
            problems.append(f"actor role {role!r} at {at} is neither a recipient "
                            f"({', '.join(sorted(RECIPIENT_ROLES))}) nor a data source "
                            f"({', '.join(sorted(SOURCE_ROLES))})")
        display = ref.get("display") if isinstance(ref.get("display"), str) else None
        out.append(Actor(f"{kind}/{ident}", role, role not in SOURCE_ROLES, display))
    return tuple(out)


def _role(value: Any, where: str) -> str | None:
    if value is None:
        return None
    codes = [c.get("code") for c in _codings(_mapping(value, where), where)]
    return next((str(c) for c in codes if isinstance(c, str)), None)


def _actions(value: Any, where: str) -> frozenset[str]:
    out = set()
    for i, item in enumerate(_list(value, where + ".action")):
        at = f"{where}.action[{i}]"
        codes = {c.get("code") for c in _codings(_mapping(item, at), at)}
        known = codes & ACTIONS
        if not known:
            raise ConsentError(f"action must be one of {sorted(ACTIONS)} "
                               f"(http://terminology.hl7.org/CodeSystem/consentaction)", at)
        out |= {str(c) for c in known}
    return frozenset(out)


def _coding_codes(value: Any, where: str) -> frozenset[str]:
    out = set()
    for i, item in enumerate(_list(value, where)):
        code = _mapping(item, f"{where}[{i}]").get("code")
        if not isinstance(code, str) or not code:
            raise ConsentError("coding has no code", f"{where}[{i}]")
        out.add(code)
    return frozenset(out)


def _classes(value: Any, where: str, problems: list[str]) -> frozenset[str]:
    out = set()
    for i, item in enumerate(_list(value, where + ".class")):
        at = f"{where}.class[{i}]"
        raw = _mapping(item, at)
        system, code = raw.get("system"), raw.get("code")
        if system not in (None, RESOURCE_TYPES_SYSTEM):
            problems.append(f"class {system}|{code} at {at} is not a FHIR resource type")
            continue
        if code not in _resource_types():
            raise ConsentError(f"class {code!r} is not a FHIR R4 resource type", at)
        out.add(str(code))
    return frozenset(out)


def _codes(value: Any, where: str, problems: list[str]) -> frozenset[str]:
    out = set()
    for i, item in enumerate(_list(value, where + ".code")):
        at = f"{where}.code[{i}]"
        for coding in _codings(_mapping(item, at), at):
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(code, str):
                raise ConsentError("coding has no code", at)
            if not isinstance(system, str):
                problems.append(f"code {code!r} at {at} has no system")
                continue
            out.add(f"{system}|{code}")
    return frozenset(out)


def _data(value: Any, where: str) -> tuple[DataItem, ...]:
    out = []
    for i, item in enumerate(_list(value, where + ".data")):
        at = f"{where}.data[{i}]"
        raw = _mapping(item, at)
        meaning = raw.get("meaning")
        if meaning not in DATA_MEANINGS:
            raise ConsentError(f"data.meaning {meaning!r} must be one of "
                               f"{sorted(DATA_MEANINGS)}", at + ".meaning")
        ref = _mapping(raw.get("reference"), at + ".reference", required=True)
        kind, ident = _reference(ref, at + ".reference")
        out.append(DataItem(str(meaning), f"{kind}/{ident}"))
    return tuple(out)


# --------------------------------------------------------------------------- primitives


def _mapping(value: Any, where: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping) or (required and not value):
        raise ConsentError(f"{where} is {'missing' if value is None else 'not an object'}",
                           where)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConsentError(f"{where} must be a JSON array", where)
    return value


def _codings(concept: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    if "coding" not in concept and "code" in concept:  # a bare Coding
        return [concept]
    return [_mapping(c, f"{where}.coding[{i}]")
            for i, c in enumerate(_list(concept.get("coding"), where + ".coding"))]


def _reference(ref: Mapping[str, Any], where: str) -> tuple[str, str]:
    text = ref.get("reference")
    match = _REFERENCE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConsentError(f"{where} must be a literal reference like 'Organization/123', "
                           f"got {text!r}", where)
    return match.group(1), match.group(2)


def _optional_str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConsentError(f"{where} must be a string", where)
    return value


def _instant(text: str | None, where: str) -> int | None:
    return None if text is None else _date(text, where)[0]


def _bound(text: str | None, where: str) -> int | None:
    return None if text is None else _date(text, where)[1]


def _date(text: str, where: str) -> tuple[int, int]:
    try:
        return date_range(text)
    except ValueError as exc:
        raise ConsentError(f"{where}: {exc}", where) from None


def _no_modifiers(raw: Mapping[str, Any], where: str) -> None:
    if raw.get("modifierExtension"):
        raise ConsentError("modifierExtension is not supported: the node cannot tell what "
                           "it changes, so it will not enforce this Consent", where)


@cache
def _resource_types() -> frozenset[str]:
    from healthmesh.fhir.validation import resource_types

    return resource_types()
