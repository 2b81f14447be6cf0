"""The FHIR interactions of a node, independent of HTTP.

:class:`FhirService` implements read, vread, create (conditional), update,
delete, search, history and ``$everything`` over a :class:`~healthmesh.store.base.Store`,
validating every resource before it is written. The HTTP layer
(:mod:`healthmesh.api.fhir`) only translates requests and responses; the
CLI's ingest uses the same service, so both paths apply the same rules.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from healthmesh.errors import (
    Conflict,
    Gone,
    InvalidRequest,
    InvalidResource,
    Issue,
    NotFound,
    PreconditionFailed,
)
from healthmesh.fhir.search_params import extract_index
from healthmesh.fhir.search_query import SearchQuery, parse_search
from healthmesh.fhir.validation import resource_types, validate
from healthmesh.store.base import HistoryEntry, SearchPage, Store, StoredResource, WriteResult

__all__ = ["EverythingPage", "FhirService", "check_type", "new_id", "parse_etag"]

Validator = Callable[..., list[Issue]]
# Relative references as the store writes JSON (orjson: no spaces); scanning the bytes
# is much cheaper than parsing every resource of a large compartment.
_RELATIVE_REF = re.compile(
    rb'"reference":"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[0-9]+)?"'
)


def new_id() -> str:
    """A new server-assigned resource id."""
    return str(uuid.uuid4())


def check_type(rtype: str) -> None:
    """Raise NotFound unless ``rtype`` is an R4 resource type."""
    if rtype not in resource_types():
        raise NotFound(f"Unknown resource type '{rtype}'")


@dataclass(slots=True)
class EverythingPage:
    resources: list[StoredResource]
    next_offset: int | None


class FhirService:
    """FHIR REST semantics over a store."""

    def __init__(self, store: Store, *, validator: Validator = validate) -> None:
        self.store = store
        self._validate = validator

    # -- validation --------------------------------------------------------------

    def validate(self, resource: Any, *, conditional_refs: bool = False) -> None:
        """Raise InvalidResource naming every problem, unless the resource is valid."""
        if not isinstance(resource, dict):
            raise InvalidResource("The body must be a JSON object holding a FHIR resource")
        issues = self._validate(resource, allow_conditional_references=conditional_refs)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            rtype = resource.get("resourceType", "resource")
            raise InvalidResource(
                f"{rtype} is not valid FHIR R4: {len(errors)} problem(s); first: "
                f"{errors[0].expression or ''} {errors[0].message}".strip(),
                errors,
            )
        if resource.get("resourceType") == "Consent" and not conditional_refs:
            from healthmesh.consent.parse import parse_consent

            parse_consent(resource)  # a Consent the node cannot enforce is refused (ConsentError)

    # -- instance interactions -------------------------------------------------

    def read(self, rtype: str, rid: str) -> StoredResource:
        check_type(rtype)
        stored = self.store.read(rtype, rid)
        if stored is None:
            raise NotFound(f"{rtype}/{rid} is not known")
        if stored.deleted:
            raise Gone(f"{rtype}/{rid} was deleted (version {stored.version})")
        return stored

    def vread(self, rtype: str, rid: str, version: str) -> StoredResource:
        check_type(rtype)
        if not version.isdigit():
            raise NotFound(f"{rtype}/{rid} has no version '{version}'")
        stored = self.store.vread(rtype, rid, int(version))
        if stored is None:
            raise NotFound(f"{rtype}/{rid} has no version {version}")
        if stored.deleted:
            raise Gone(f"{rtype}/{rid} version {version} is a deletion")
        return stored

    def create(
        self, rtype: str, resource: Any, *, if_none_exist: str | None = None
    ) -> WriteResult:
        """POST: assign a new id; with ``If-None-Exist``, return the match instead."""
        check_type(rtype)
        self._check_body_type(rtype, resource)
        if if_none_exist:
            found = self.find_conditional(rtype, if_none_exist)
            if found is not None:
                return WriteResult("existing", found)
        resource = {**resource, "id": new_id()}
        self.validate(resource)
        return self.store.put(resource, method="POST")

    def update(
        self, rtype: str, rid: str, resource: Any, *, if_match: str | None = None
    ) -> WriteResult:
        """PUT: update, or create with the client's id (create-on-update)."""
        check_type(rtype)
        self._check_body_type(rtype, resource)
        if resource.get("id") != rid:
            raise InvalidRequest(
                f"The resource id '{resource.get('id')}' does not match the URL id '{rid}'",
                [Issue("error", "invalid", "id in body must match the URL", f"{rtype}.id")],
            )
        self.validate(resource)
        version = parse_etag(if_match) if if_match is not None else None
        try:
            return self.store.put(resource, method="PUT", if_match=version)
        except Conflict as exc:
            raise PreconditionFailed(str(exc)) from None

    def delete(self, rtype: str, rid: str) -> WriteResult | None:
        check_type(rtype)
        return self.store.delete(rtype, rid)

    def _check_body_type(self, rtype: str, resource: Any) -> None:
        if not isinstance(resource, dict):
            raise InvalidResource("The body must be a JSON object holding a FHIR resource")
        if resource.get("resourceType") != rtype:
            raise InvalidResource(
                f"The body holds a {resource.get('resourceType')!r}, not a {rtype}",
                [Issue("error", "invalid", f"resourceType must be {rtype}", "resourceType")],
            )

    # -- search ------------------------------------------------------------------

    def parse(
        self, rtype: str, params: list[tuple[str, str]], *, strict: bool = False
    ) -> SearchQuery:
        check_type(rtype)
        return parse_search(rtype, params, strict=strict, resource_types=resource_types())

    def search(self, query: SearchQuery, cursor: str | None = None) -> SearchPage:
        page = self.store.search(query, cursor=cursor)
        if query.summary == "count":
            page.matches = []
            return page
        page.included = self._includes(query, page.matches)
        return page

    def find_conditional(self, rtype: str, criteria: str) -> StoredResource | None:
        """The single match of a conditional create or reference; 412 if several match."""
        params = _parse_query_string(criteria)
        query = self.parse(rtype, params, strict=True)
        query.count = 2
        page = self.store.search(query)
        if len(page.matches) > 1:
            raise PreconditionFailed(f"'{rtype}?{criteria}' matches more than one resource")
        return page.matches[0] if page.matches else None

    def _includes(self, query: SearchQuery, matches: list[StoredResource]) -> list[StoredResource]:
        if not matches or not (query.include or query.revinclude):
            return []
        seen = {(m.type, m.id) for m in matches}
        keys: list[tuple[str, str]] = []
        for inc in query.include:
            for m in matches:
                if m.type != inc.source:
                    continue
                for param, ttype, tid, _raw in extract_index(m.resource()).references:
                    wanted = inc.param in ("*", param) and inc.target in (None, ttype)
                    if wanted and ttype and tid:
                        keys.append((ttype, tid))
        included = [s for s in self.store.read_many(dict.fromkeys(keys))
                    if (s.type, s.id) not in seen]
        seen.update((s.type, s.id) for s in included)
        for inc in query.revinclude:
            included.extend(self._revinclude(inc, matches, seen))
        return included

    def _revinclude(
        self, inc: Any, matches: list[StoredResource], seen: set[tuple[str, str]]
    ) -> list[StoredResource]:
        out: list[StoredResource] = []
        for m in matches:
            params = [("_count", "1000")]
            if inc.param != "*":
                params.append((inc.param, f"{m.type}/{m.id}"))
            else:
                continue
            query = parse_search(inc.source, params)
            for s in self.store.search(query).matches:
                if (s.type, s.id) not in seen:
                    seen.add((s.type, s.id))
                    out.append(s)
        return out

    # -- history -------------------------------------------------------------------

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        *,
        count: int = 100,
        offset: int = 0,
        since: int | None = None,
    ) -> list[HistoryEntry]:
        if rtype is not None:
            check_type(rtype)
        if rid is not None and self.store.read(rtype or "", rid) is None:
            raise NotFound(f"{rtype}/{rid} is not known")
        return self.store.history(rtype, rid, since=since, count=count, offset=offset)

    # -- $everything -------------------------------------------------------------

    def everything(self, patient_id: str) -> Iterator[StoredResource]:
        """The patient, every resource in their compartment, and what those refer to."""
        patient = self.read("Patient", patient_id)
        yield patient
        seen = {("Patient", patient_id)}
        referenced: dict[tuple[str, str], None] = {}
        for stored in [patient, *self.store.compartment(patient_id)]:
            if stored is not patient:
                seen.add((stored.type, stored.id))
                yield stored
            for match in _RELATIVE_REF.finditer(stored.content or b""):
                referenced[(match.group(1).decode(), match.group(2).decode())] = None
        missing = [k for k in referenced if k not in seen]
        yield from self.store.read_many(missing)


def parse_etag(value: str) -> int:
    """The version number of an ETag (``W/"3"``, ``"3"`` or ``3``)."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidRequest(f"If-Match must be an ETag like W/\"3\", not '{value}'")
    return int(text)


def _parse_query_string(criteria: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    if "?" in criteria:
        criteria = criteria.split("?", 1)[1]
    try:
        return parse_qsl(criteria, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidRequest(f"Invalid search criteria '{criteria}'") from None
