"""What a decision needs to know about one record (a FHIR resource about the patient).

:func:`request_for_resource` fills the data attributes of an :class:`AccessRequest`
from the resource the egress gate is about to release: its type, sensitivity labels
(:func:`~healthmesh.consent.labels_for`), clinically relevant time, codes, its own
reference, the references it contains, and its sources (authors, performers,
custodians — plus the node's own organisation, which holds it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from healthmesh.fhir.search_params import date_range

from .decide import AccessRequest
from .labels import labels_from
from .labels import normal_reference as _normal
from .labels import walk as _walk

__all__ = ["data_time", "request_for_resource"]

_TIME_FIELDS = (
    "effectiveDateTime", "effectiveInstant", "effectivePeriod", "onsetDateTime", "onsetPeriod",
    "occurrenceDateTime", "occurrencePeriod", "performedDateTime", "performedPeriod",
    "authoredOn", "recordedDate", "recorded", "issued", "authored", "dateAsserted",
    "whenHandedOver", "whenPrepared", "created", "date", "sent", "period", "billablePeriod",
)
_SOURCE_FIELDS = (
    "author", "recorder", "asserter", "performer", "requester", "resultsInterpreter",
    "custodian", "source", "informationSource", "serviceProvider", "provider", "enterer",
    "sender", "organization",
)


def request_for_resource(request: AccessRequest, resource: Mapping[str, Any]) -> AccessRequest:
    """``request`` with every data attribute taken from ``resource``."""
    codings, references = _walk(resource)
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    ref = f"{rtype}/{rid}" if isinstance(rtype, str) and isinstance(rid, str) else None
    sources = _sources(resource)
    if request.node_org:
        sources.add(request.node_org)
    return replace(
        request,
        resource_type=rtype if isinstance(rtype, str) else None,
        security_labels=labels_from(resource, codings),
        data_time=data_time(resource),
        codes=frozenset(f"{s}|{c}" for s, c in codings),
        resource_ref=ref,
        references=frozenset(references),
        sources=frozenset(sources),
    )


def data_time(resource: Mapping[str, Any]) -> int | None:
    """The clinically relevant time of a record (epoch µs), or None if it has none.

    The first of effective[x], onset[x], occurrence[x], performed[x], authoredOn,
    recordedDate, issued, ..., date, period, then meta.lastUpdated; for a Period, its start.
    """
    for name in _TIME_FIELDS:
        found = _instant(resource.get(name))
        if found is not None:
            return found
    meta = resource.get("meta")
    return _instant(meta.get("lastUpdated")) if isinstance(meta, Mapping) else None


def _instant(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("start") or value.get("end")
    if not isinstance(value, str):
        return None
    try:
        return date_range(value)[0]
    except ValueError:
        return None


def _sources(resource: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for name in _SOURCE_FIELDS:
        value = resource.get(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Mapping):
                ref = _ref(item) or _ref(item.get("actor"))
                if ref:
                    out.add(ref)
    return out


def _ref(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None
    text = value.get("reference")
    return _normal(text) if isinstance(text, str) else None


