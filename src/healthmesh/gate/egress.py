"""The egress gate: the one way data leaves a node.

Every route and command that returns stored data asks the gate for a
:class:`GuardedRepository` built for the caller (who, why). Its methods apply,
in order: the purpose requirement, the patients' consents (in SQL for patients
whose consent covers all or none of their data for this caller, per record for
the rest), and they write one audit record per request — permitted or denied.
Nothing else in the API or the CLI reads the store for output (a test checks).
"""

from __future__ import annotations

import contextvars
import copy
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from healthmesh.audit import AuditLog, AuditRecord
from healthmesh.consent.decide import AccessRequest, Decision, decide
from healthmesh.consent.records import request_for_resource
from healthmesh.errors import FhirError, NotFound
from healthmesh.fhir.search_params import patient_compartment
from healthmesh.fhir.search_query import SearchQuery
from healthmesh.fhir.service import FhirService
from healthmesh.gate import access
from healthmesh.gate.requester import Forbidden, Requester
from healthmesh.gate.scopes import ALL, NONE, PARTIAL, AccessScopes
from healthmesh.store.base import HistoryEntry, SearchPage, StoredResource, WriteResult
from healthmesh.store.sqlite import now_us

__all__ = ["GATE_ACTIVE", "EgressGate", "GuardedRepository", "Population"]

#: True while a GuardedRepository method runs: tests use it to prove that no route
#: reads the store for output any other way.
GATE_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("gate_active", default=False)
_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = GATE_ACTIVE.set(True)
        try:
            return method(*args, **kwargs)
        finally:
            GATE_ACTIVE.reset(token)

    return wrapper  # type: ignore[return-value]

MAX_AUDITED_IDS = 2000
POPULATIONS_KEPT = 16
NEVER = 2**63 - 1
_PROBE = AccessRequest(patient_id="-", purpose=None, at=0)
_DATA_FIELDS = ("resource_type", "security_labels", "data_time", "codes", "resource_ref",
                "references", "sources")


@dataclass(frozen=True)
class Population:
    """Patient ids an aggregate may count, and ``Type/id`` keys of records it must skip;
    ``valid_until`` (epoch µs): when a consent period starts or ends and the answer must be
    decided again."""

    allowed: list[str]
    denied: list[str]
    valid_until: int = 2**63 - 1
    everyone: bool = False  # every patient of the node, no record withheld


class EgressGate:
    """Builds a guarded repository per request."""

    def __init__(
        self, fhir: FhirService, scopes: AccessScopes, audit: AuditLog | None,
        *, denied_status: int = 404,
    ) -> None:
        self.fhir = fhir
        self.scopes = scopes
        self.audit = audit
        self.denied_status = denied_status
        # aggregates' populations by (scope, consent epoch, types, last change of the types)
        self.populations: dict[tuple[Any, ...], Population] = {}

    def for_request(self, requester: Requester) -> GuardedRepository:
        return GuardedRepository(self, requester)


class GuardedRepository:
    """Reads and writes for one requester: consent-filtered and audited."""

    def __init__(self, gate: EgressGate, requester: Requester) -> None:
        self.gate = gate
        self.fhir = gate.fhir
        self.scopes = gate.scopes
        self.requester = requester
        self._coverage: dict[str, int] = {}
        self._epoch: int | None = None

    # -- decisions -------------------------------------------------------------------

    def _require_purpose(self, action: str) -> None:
        if self.requester.access is not None and self.requester.purpose is None:
            self._audit(action, "deny", rule="purpose:missing", outcome=403,
                        reason="The access token carries no purpose of use")
            raise Forbidden("The access token carries no purpose of use")
        if self.requester.purpose is None and not self.requester.is_patient:
            self._audit(action, "deny", rule="purpose:missing", outcome=403,
                        reason="No purpose of use was given")
            raise Forbidden("A purpose of use (X-Purpose-Of-Use) is required to read data")

    def _patient_coverage(self, patient: str) -> int:
        if patient not in self._coverage:
            self._coverage[patient] = self.scopes.coverage(self.requester, patient)
        return self._coverage[patient]

    def decision(self, stored: StoredResource) -> Decision | None:
        """The consent decision for one stored resource (None: not a patient's data)."""
        if stored.content is None:
            return None
        patient = stored.patient
        if patient is None:  # e.g. an old version: find its patient in the content
            patient = patient_compartment(stored.resource())
            if patient is None:
                return None
        cov = self._patient_coverage(patient)
        if cov in (ALL, NONE):
            kind = "permit" if cov == ALL else "deny"
            return Decision(cov == ALL, f"coverage:{kind}", None,
                            f"This requester's access to the patient's data: {kind}")
        question = self.scopes.request(self.requester, patient, **_attributes_of(stored))
        return decide(question, self._consents_of(patient), self.scopes.policy)

    def _consents_of(self, patient: str) -> list[Any]:
        """The patient's parsed consents, read once per request."""
        if self._epoch is None:
            self._epoch = self.scopes.epoch()
        return self.scopes.consents_at(patient, self._epoch)

    def _allowed(self, stored: StoredResource) -> bool:
        decision = self.decision(stored)
        return decision is None or decision.permit

    def _denied(self, action: str, stored: StoredResource, decision: Decision) -> FhirError:
        self._audit(action, "deny", [stored], rule=decision.rule, reason=decision.reason,
                    outcome=self.gate.denied_status)
        if self.gate.denied_status == 403:
            return Forbidden(f"Access to {stored.type}/{stored.id} is not permitted")
        return NotFound(f"{stored.type}/{stored.id} is not known")

    # -- reads -----------------------------------------------------------------------

    def _scoped(self, action: str, check: Callable[[], Any]) -> Any:
        """Run a scope check; a refusal is audited like a consent refusal."""
        try:
            return check()
        except access.InsufficientScope as exc:
            self._audit(action, "deny", rule="scope", reason=str(exc)[:500], outcome=403)
            raise

    @_guarded
    def read(self, rtype: str, rid: str) -> StoredResource:
        self._require_purpose("read")
        self._scoped("read", lambda: access.scope_params(self.requester, rtype, "r"))
        stored = self.fhir.read(rtype, rid)
        return self._one("read", stored)

    @_guarded
    def vread(self, rtype: str, rid: str, version: str) -> StoredResource:
        self._require_purpose("vread")
        self._scoped("vread", lambda: access.scope_params(self.requester, rtype, "r"))
        stored = self.fhir.vread(rtype, rid, version)
        return self._one("vread", stored)

    def _one(self, action: str, stored: StoredResource) -> StoredResource:
        self._scoped(action, lambda: access.matches_constraints(self, self.requester, stored,
                                                                "r"))
        decision = self.decision(stored)
        if decision is not None and not decision.permit:
            raise self._denied(action, stored, decision)
        self._audit(action, "permit", [stored], rule=decision.rule if decision else None)
        return stored

    def parse(self, rtype: str, params: list[tuple[str, str]], *, strict: bool) -> SearchQuery:
        """A search of ``rtype``, narrowed by the access token's scope constraints."""
        extra = self._scoped("search", lambda: access.scope_params(self.requester, rtype, "s"))
        return self.fhir.parse(rtype, [*params, *extra], strict=strict)

    def _restrict(self, query: SearchQuery, *more: tuple[str, list[object]] | None) -> None:
        """AND the consent scope, the token's patient context and ``more`` into ``query``."""
        parts = [p for p in (self.scopes.restriction(self.requester),
                             access.context_condition(self.requester), *more) if p is not None]
        if parts:
            query.restrict = (" AND ".join(f"({p[0]})" for p in parts),
                              [a for p in parts for a in p[1]])

    @_guarded
    def search(self, query: SearchQuery, cursor: str | None = None) -> SearchPage:
        """A page of matches the requester may see; totals and includes filtered alike."""
        self._require_purpose("search")
        self._scoped("search", lambda: access.scope_params(
            self.requester, query.resource_type, "s"))
        self._restrict(query)
        page = self.fhir.search(query, cursor)
        page.matches = self._filter_partial(page.matches)
        if page.total is not None:
            page.total -= self._denied_partial(query)
        page.included = [s for s in page.included if self._allowed(s) and self._in_scope(s)]
        self._audit("search", "permit", [*page.matches, *page.included],
                    rule=f"scope:{self.requester.scope_key()}",
                    detail={"type": query.resource_type, "matches": len(page.matches)})
        return page

    def _in_scope(self, stored: StoredResource) -> bool:
        try:
            access.matches_constraints(self, self.requester, stored, "r")
        except access.InsufficientScope:
            return False
        return True

    def _filter_partial(self, items: list[StoredResource]) -> list[StoredResource]:
        """Drop the records of partially covered patients that the per-record check refuses."""
        partial = self.scopes.partial_among(self.requester, (s.patient for s in items))
        if not partial:
            return items
        for patient in partial:
            self._coverage[patient] = PARTIAL  # known from the scope: decide per record
        return [s for s in items if s.patient not in partial or self._allowed(s)]

    def _batches(self, query: SearchQuery, size: int = 500) -> Iterator[list[StoredResource]]:
        batch: list[StoredResource] = []
        for stored in self.fhir.store.stream(query):
            batch.append(stored)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _denied_partial(self, query: SearchQuery) -> int:
        """Matches (of the whole search) that the per-record check refuses: only the
        records of partially covered patients are read (none at all if there are none)."""
        only_partial = self.scopes.partial_condition(self.requester)
        if only_partial is None:
            return 0
        sql, args = only_partial
        query = copy.copy(query)  # the caller's query keeps its own condition
        if query.restrict is not None:
            sql, args = f"({query.restrict[0]}) AND {sql}", [*query.restrict[1], *args]
        query.restrict = (sql, args)
        return sum(len(b) - len(self._filter_partial(b)) for b in self._batches(query))

    def stream(
        self, query: SearchQuery, action: str = "export",
        extra: tuple[str, list[object]] | None = None,
    ) -> Iterator[StoredResource]:
        """Every match the requester may see (bulk export); audited in chunks.

        ``extra`` is one more SQL condition on ``resources r`` (e.g. a Group's members).
        """
        token = GATE_ACTIVE.set(True)
        try:
            yield from self._stream(query, action, extra)
        finally:
            GATE_ACTIVE.reset(token)

    def _stream(
        self, query: SearchQuery, action: str, extra: tuple[str, list[object]] | None
    ) -> Iterator[StoredResource]:
        self._require_purpose(action)
        self._scoped(action, lambda: access.scope_params(self.requester, query.resource_type,
                                                         "r"))
        self._restrict(query, extra)
        for batch in self._batches(query):
            kept = self._filter_partial(batch)
            yield from kept
            self._audit(action, "permit", kept, rule=f"scope:{self.requester.scope_key()}")

    @_guarded
    def history(
        self, rtype: str | None, rid: str | None, *, count: int, offset: int,
        since: int | None,
    ) -> list[HistoryEntry]:
        self._require_purpose("history")
        if rtype is not None:
            self._scoped("history", lambda: access.scope_params(self.requester, rtype, "r"))
        entries = self.fhir.history(rtype, rid, count=count, offset=offset, since=since)
        kept = [e for e in entries if self._history_allowed(e)
                and (e.stored.content is None or self._in_scope(e.stored))]
        self._audit("history", "permit", [e.stored for e in kept if e.stored.content])
        return kept

    def _history_allowed(self, entry: HistoryEntry) -> bool:
        stored = entry.stored
        if stored.content is None:  # a deletion: gate it by the resource's patient
            current = self.fhir.store.read(stored.type, stored.id)
            patient = current.patient if current else None
            return patient is None or self._patient_coverage(patient) != NONE
        return self._allowed(stored)

    @_guarded
    def everything(self, patient_id: str) -> list[StoredResource]:
        """The patient's record as far as this requester may see it."""
        self._require_purpose("everything")
        self._scoped("everything", lambda: access.scope_params(self.requester, "Patient", "r"))
        patient = self.fhir.read("Patient", patient_id)
        self._scoped("everything", lambda: access.matches_constraints(
            self, self.requester, patient, "r"))
        decision = self.decision(patient)
        if decision is not None and not decision.permit:
            raise self._denied("everything", patient, decision)
        out = [s for s in self.fhir.everything(patient_id) if self._allowed(s)
               and access.visible_type(self.requester, s.type) and self._in_scope(s)]
        self._audit("everything", "permit", out, rule=decision.rule if decision else None)
        return out

    # -- aggregates (federated tasks) ----------------------------------------------------

    @_guarded
    def population(self, types: Iterable[str]) -> Population:
        """Who may be counted in an aggregate for this requester and purpose: the patients
        whose consent allows it, and — for patients whose consent depends on the data
        (a sensitive category, a data period) — which of their records of ``types`` (the
        resource types the aggregate reads) must be left out.

        Deciding per record is the slow part (a consent decision per resource), so the
        answer is kept until a Consent is written (the consent epoch moves) or a resource
        of ``types`` changes (the store's last change of those types moves)."""
        self._require_purpose("aggregate")
        wanted = frozenset(types) | {"Patient"}
        scope, epoch, store = self.requester.scope_key(), self.scopes.epoch(), self.fhir.store
        now = now_us()
        for (c_scope, c_epoch, c_types, c_change), found in list(self.gate.populations.items()):
            # an answer for more types serves too: extra withheld records are never read
            if (c_scope, c_epoch) == (scope, epoch) and wanted <= c_types and (
                    now < found.valid_until and store.last_change(c_types) == c_change):
                return found
        change = store.last_change(wanted)  # before computing: a later write makes it stale
        found = self._population(wanted, now)
        if len(self.gate.populations) >= POPULATIONS_KEPT:
            self.gate.populations.pop(next(iter(self.gate.populations)))
        self.gate.populations[(scope, epoch, wanted, change)] = found
        return found

    def _population(self, types: frozenset[str], now: int) -> Population:
        restriction = self.scopes.restriction(self.requester)
        sql = "SELECT r.id FROM resources r WHERE r.type = 'Patient' AND r.content IS NOT NULL"
        args: list[object] = []
        if restriction is not None:
            sql, args = f"{sql} AND {restriction[0]}", list(restriction[1])
        allowed = [row[0] for row in self.fhir.store.reader().execute(sql, args)]
        denied: list[str] = []
        dropped: set[str] = set()
        valid_until = NEVER
        for patient in sorted(self.scopes.partial_among(self.requester, allowed)):
            record = self.fhir.store.read("Patient", patient)
            if record is not None and not self._allowed(record):
                dropped.add(patient)  # e.g. a consent whose period has ended
                continue
            denied += [f"{s.type}/{s.id}" for s in self.fhir.store.compartment(patient, types)
                       if not self._allowed(s)]
            # decisions that the passing of time will change: valid until the next edge
            for consent in self._consents_of(patient):
                edges = [consent.period, *(p.period for p in consent.provision.walk())]
                valid_until = min([valid_until, *(e for period in edges if period is not None
                                                  for e in period.edges() if e > now)])
        return Population([p for p in allowed if p not in dropped], denied, valid_until,
                          everyone=restriction is None and not denied and not dropped)

    @_guarded
    def release(self, action: str, *, population: Population, detail: dict[str, Any]) -> None:
        """Audit an aggregate leaving the node (one record per release: the task, the
        agreement, the algorithm, how many patients could be counted, the epsilon spent)."""
        self._audit(action, "permit", rule=f"scope:{self.requester.scope_key()}",
                    detail={**detail, "patients_in_scope": len(population.allowed),
                            "records_withheld": len(population.denied)})

    @_guarded
    def refuse(self, action: str, reason: str, detail: dict[str, Any]) -> None:
        """Audit a refused aggregate request."""
        self._audit(action, "deny", reason=reason[:500], outcome=403, detail=detail)

    @_guarded
    def group_members(self, group_id: str) -> list[str]:
        """Patient ids of a Group's members (for Group-level export)."""
        group = self.read("Group", group_id).resource()
        refs = [m.get("entity", {}).get("reference", "") for m in group.get("member", [])]
        return sorted({r.split("/", 1)[1] for r in refs if r.startswith("Patient/")})

    # -- writes (audited; authorisation of writers comes with the security layer) -----

    @_guarded
    def create(self, rtype: str, body: Any, if_none_exist: str | None) -> WriteResult:
        self._check_write("create", rtype, "c", body)
        result = self.fhir.create(rtype, body, if_none_exist=if_none_exist)
        if result.outcome == "existing":  # the match is returned: that is a read
            decision = self.decision(result.stored)
            if decision is not None and not decision.permit:
                self._audit("create", "deny", [result.stored], rule=decision.rule,
                            reason=decision.reason, outcome=403)
                raise Forbidden("A matching resource exists but may not be returned to you")
        self._audit("create", "n/a", [result.stored])
        return result

    @_guarded
    def update(self, rtype: str, rid: str, body: Any, if_match: str | None) -> WriteResult:
        self._check_write("update", rtype, "u", body)
        current = self.fhir.store.read(rtype, rid)
        if current is not None and not current.deleted:
            self._scoped("update", lambda: access.matches_constraints(
                self, self.requester, current, "u"))
        result = self.fhir.update(rtype, rid, body, if_match=if_match)
        self._audit("update", "n/a", [result.stored])
        return result

    @_guarded
    def delete(self, rtype: str, rid: str) -> None:
        self._check_write("delete", rtype, "d", None)
        current = self.fhir.store.read(rtype, rid)
        if current is not None and not current.deleted:
            self._scoped("delete", lambda: access.matches_constraints(
                self, self.requester, current, "d"))
        result = self.fhir.delete(rtype, rid)
        if result is not None:
            self._audit("delete", "n/a", [result.stored])

    def authorize_write(self, method: str, rtype: str, rid: str | None, body: Any) -> None:
        """The scope check of one write entry of a transaction or batch bundle."""
        perm = {"POST": "c", "DELETE": "d"}.get(method, "u")
        self._check_write(method.lower() if method != "POST" else "create", rtype, perm, body)
        current = self.fhir.store.read(rtype, rid) if rid and perm != "c" else None
        if current is not None and not current.deleted:
            self._scoped("update", lambda: access.matches_constraints(
                self, self.requester, current, perm))

    def _check_write(self, action: str, rtype: str, perm: str, body: Any) -> None:
        """Writes need the interaction in the token's scopes, and a token bound to one
        patient writes only that patient's data."""
        self._scoped(action, lambda: access.scope_params(self.requester, rtype, perm))
        self._scoped(action, lambda: access.body_within_context(self.requester, body))

    @_guarded
    def audit_bundle(self, btype: str, locations: list[str]) -> None:
        """Record what a transaction or batch wrote (GET entries audit themselves)."""
        refs = ["/".join(loc.split("/")[:2]) for loc in locations if loc.count("/") >= 1]
        written = self.fhir.store.read_many(
            [(r.split("/")[0], r.split("/")[1]) for r in refs[:MAX_AUDITED_IDS]]
        )
        self._audit(btype, "n/a", written, detail={"entries": len(locations)})

    # -- audit -------------------------------------------------------------------------

    def _audit(
        self, action: str, decision: str, items: list[StoredResource] | None = None,
        *, rule: str | None = None, reason: str | None = None, outcome: int | str = "success",
        detail: dict[str, Any] | None = None,
    ) -> None:
        log = self.gate.audit
        if log is None:
            return
        items = items or []
        refs = [f"{s.type}/{s.id}" for s in items][:MAX_AUDITED_IDS]
        patients = sorted({p for p in (s.patient for s in items) if p})
        req = self.requester
        log.append_journaled(AuditRecord.trusted(
            actor=req.actor, action=action, organisation=req.organisation, purpose=req.purpose,
            resource_types=tuple(sorted({s.type for s in items})), resources=tuple(refs),
            patients=tuple(patients), decision=decision, rule=rule, reason=reason,
            request_id=req.request_id, outcome=outcome,
            detail={**(detail or {}), "agent": req.agent} if req.agent else detail,
        ))


_ATTRIBUTES: dict[tuple[str, str, int], dict[str, Any]] = {}
_ATTRIBUTES_MAX = 50_000


def _attributes_of(stored: StoredResource) -> dict[str, Any]:
    """Data attributes of one resource version (immutable, so cached by type/id/version):
    type, sensitivity labels, time, codes, references and sources, as the consent model
    reads them (:func:`healthmesh.consent.request_for_resource`)."""
    key = (stored.type, stored.id, stored.version)
    found = _ATTRIBUTES.get(key)
    if found is None:
        if len(_ATTRIBUTES) > _ATTRIBUTES_MAX:
            _ATTRIBUTES.clear()
        probe = request_for_resource(_PROBE, stored.resource())
        found = _ATTRIBUTES[key] = {name: getattr(probe, name) for name in _DATA_FIELDS}
    return found
