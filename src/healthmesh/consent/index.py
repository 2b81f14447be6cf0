"""``ConsentIndex``: every consent of a node, with cached cohort-level answers.

The egress gate asks two kinds of question. Per record: :meth:`ConsentIndex.decide`
(no cache: the record's attributes vary). Per patient or cohort: "does this requester,
for this purpose, get all, none or part of each patient's data?" —
:meth:`ConsentIndex.coverage`, :meth:`ConsentIndex.partition`,
:meth:`ConsentIndex.permitted_patients` and :meth:`ConsentIndex.permitted_mask`.

Cohort answers are cached per query (purpose, requester, affiliations, patient flag,
action, node organisation) in a :class:`_Slice`: the coverage of each patient that has
consents, grouped into ``all``/``partial``/``none`` sets, plus the one coverage every
patient *without* consents gets. A cohort is then answered with C-speed set operations.
Each cached answer carries the time window in which it holds (between the period
boundaries of the patient's consents), so a consent that starts or expires is honoured
at once. Filling a query costs one evaluation per distinct consent *shape* (structure
and which periods are in force): most patients share a few. :meth:`update` and
:meth:`remove` recompute the affected patient in every cached query before returning:
no cached answer outlives a revocation.

Payment (``recipients = "payers"``) depends on each patient's payers: the cache holds
the answer for an eligible requester and the payers map is applied per query.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .decide import (
    AccessRequest,
    Coverage,
    Decision,
    consents_matter,
    coverage,
    decide,
    for_patient,
    patient_coverage,
)
from .model import ConsentError, ParsedConsent
from .parse import parse_consent
from .policy import Policy, default_policy

__all__ = ["CohortCoverage", "ConsentIndex"]

_FAR = 2**63
_MEMO_MAX = 100_000


@dataclass(frozen=True, slots=True)
class CohortCoverage:
    """A cohort split by coverage: patients the requester gets all, part or none of."""

    all: set[str]
    partial: set[str]
    none: set[str]


@dataclass(slots=True)
class _Slice:
    template: AccessRequest
    default: Coverage
    at: int = 0
    request: AccessRequest | None = None  # the template at time ``at``
    lo: int = _FAR
    hi: int = -_FAR
    complete: bool = False
    entries: dict[str, tuple[Coverage, int, int]] = field(default_factory=dict)
    memo: dict[tuple[object, ...], Coverage] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(
        default_factory=lambda: {"all": set(), "partial": set(), "none": set()})


class ConsentIndex:
    """All consents of a node, indexed by patient, with cached cohort decisions."""

    def __init__(self, policy: Policy | None = None, *, max_queries: int = 256) -> None:
        self.policy = policy or default_policy()
        self._by_id: dict[str, ParsedConsent] = {}
        self._by_patient: dict[str, list[ParsedConsent]] = {}
        self._edges: dict[str, tuple[int, ...]] = {}
        self._slices: OrderedDict[AccessRequest, _Slice] = OrderedDict()
        self._max = max_queries
        self._lock = threading.RLock()

    @classmethod
    def from_consents(cls, consents: Iterable[ParsedConsent | Mapping[str, Any]],
                      policy: Policy | None = None) -> ConsentIndex:
        """An index of ``consents`` (parsed or FHIR JSON; every one needs an id)."""
        index = cls(policy)
        for item in consents:
            parsed = _parsed(item)
            old = index._by_id.get(str(parsed.id))
            if old is not None:  # the same id twice: the later version wins
                index._discard(old)
            index._add(parsed)
        for patient in index._by_patient:
            index._edges[patient] = _edges_of(index._by_patient[patient])
        return index

    # ----------------------------------------------------------------- maintenance

    def update(self, consent: ParsedConsent | Mapping[str, Any]) -> ParsedConsent:
        """Add or replace a consent (by id). The next decision reflects it."""
        parsed = _parsed(consent)
        with self._lock:
            old = self._by_id.get(str(parsed.id))
            if old is not None:
                self._discard(old)
            self._add(parsed)
            self._refresh({parsed.patient_id} | ({old.patient_id} if old else set()))
        return parsed

    def remove(self, consent_id: str) -> None:
        """Forget a consent (deleted from the store). Unknown ids are ignored."""
        with self._lock:
            old = self._by_id.get(consent_id)
            if old is not None:
                self._discard(old)
                self._refresh({old.patient_id})

    def consents_for(self, patient_id: str) -> tuple[ParsedConsent, ...]:
        """The consents of ``patient_id`` that can take part in a decision (active, and
        with a scope that governs data use); others are kept by id only."""
        return tuple(self._by_patient.get(patient_id, ()))

    def patients(self) -> frozenset[str]:
        """The patients that have at least one consent taking part in decisions."""
        return frozenset(self._by_patient)

    def consents(self) -> tuple[ParsedConsent, ...]:
        """Every consent held (all statuses and scopes)."""
        return tuple(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, consent_id: object) -> bool:
        return consent_id in self._by_id

    # ----------------------------------------------------------------- questions

    def decide(self, request: AccessRequest) -> Decision:
        """:func:`~healthmesh.consent.decide` with this patient's consents."""
        return decide(request, self.consents_for(request.patient_id), self.policy)

    def coverage(self, patient_id: str, purpose: str | None, requester: str | None = None,
                 **options: Any) -> Coverage:
        """Cached coverage of one patient. ``options`` are the :class:`AccessRequest`
        fields ``requester_affiliations``, ``requester_is_patient``, ``action``,
        ``node_org``, ``patient_payers`` and ``at`` (default: now)."""
        payers = frozenset(options.pop("patient_payers", ()))
        at = _now(options.pop("at", None))
        with self._lock:
            found = self._uniform(purpose, requester, at, options)
            if isinstance(found, str):
                return found
            template, by_payer = found
            if by_payer and template.identities().isdisjoint(payers):
                return "none"
            return self._entry(self._slice(template, at), patient_id)

    def partition(self, patient_ids: Iterable[str], purpose: str | None,
                  requester: str | None = None, *,
                  payers: Mapping[str, Collection[str]] | None = None,
                  **options: Any) -> CohortCoverage:
        """Split a cohort into patients whose data the requester gets all / part / none
        of. ``payers`` maps patient id -> payer references (needed for HPAYMT)."""
        ids = patient_ids if isinstance(patient_ids, set) else set(patient_ids)
        at = _now(options.pop("at", None))
        with self._lock:
            found = self._uniform(purpose, requester, at, options)
            if isinstance(found, str):
                return _everyone(ids, found)
            template, by_payer = found
            s = self._slice(template, at)
            split = _split(ids, self._complete(s), s.default)
        return _by_payer(split, template, payers) if by_payer else split

    def permitted_patients(self, patient_ids: Iterable[str], purpose: str | None,
                           requester: str | None = None, *,
                           payers: Mapping[str, Collection[str]] | None = None,
                           **options: Any) -> set[str]:
        """The patients whose data ``requester`` may have in full for ``purpose``
        (coverage ``"all"``). Patients with ``"partial"`` coverage are not included:
        the gate decides their records one by one (see :meth:`partition`)."""
        at = _now(options.pop("at", None))
        with self._lock:
            found = self._uniform(purpose, requester, at, options)
            if isinstance(found, str):
                return set(patient_ids) if found == "all" else set()
            template, by_payer = found
            s = self._slice(template, at)
            groups = self._complete(s)
            if s.default == "all":
                ids = patient_ids if isinstance(patient_ids, set) else set(patient_ids)
                allowed = ids.difference(groups["none"], groups["partial"])
            else:
                allowed = groups["all"].intersection(patient_ids)
        if by_payer:
            allowed = {p for p in allowed if _pays(template, payers, p)}
        return allowed

    def permitted_mask(self, patient_ids: Iterable[str], purpose: str | None,
                       requester: str | None = None, *,
                       payers: Mapping[str, Collection[str]] | None = None,
                       **options: Any) -> list[bool]:
        """For each patient id, in order: True when coverage is ``"all"``."""
        ids = patient_ids if isinstance(patient_ids, (list, tuple)) else list(patient_ids)
        at = _now(options.pop("at", None))
        with self._lock:
            found = self._uniform(purpose, requester, at, options)
            if isinstance(found, str):
                return [found == "all"] * len(ids)
            template, by_payer = found
            s = self._slice(template, at)
            groups = self._complete(s)
            if s.default == "all":
                blocked = groups["none"] | groups["partial"]
                mask = [p not in blocked for p in ids]
            else:
                allowed = groups["all"]
                mask = [p in allowed for p in ids]
        if by_payer:
            mask = [m and _pays(template, payers, p) for m, p in zip(mask, ids, strict=True)]
        return mask

    # ----------------------------------------------------------------- internals

    def _uniform(self, purpose: str | None, requester: str | None, at: int,
                 options: dict[str, Any]) -> Coverage | tuple[AccessRequest, bool]:
        """The coverage every patient shares, if consents cannot change it; otherwise
        the cache key and whether each patient's payers still have to be checked."""
        template = AccessRequest(patient_id="", purpose=purpose, at=at, requester=requester,
                                 **_options(options))
        rule = self.policy.rule_for(purpose or "PATRQT")
        by_payer = rule is not None and rule.recipients == "payers"
        if by_payer:
            template = for_patient(template, "", template.identities())
        if not consents_matter(template, self.policy):
            return coverage(template, (), self.policy)
        return replace(template, at=0), by_payer

    def _slice(self, template: AccessRequest, at: int) -> _Slice:
        s = self._slices.get(template)
        if s is None:
            default = coverage(template, (), self.policy)
            s = self._slices[template] = _Slice(template, default, at)
            if len(self._slices) > self._max:
                self._slices.popitem(last=False)
        else:
            self._slices.move_to_end(template)
        self._aim(s, at)
        if not s.lo <= at < s.hi:
            self._advance(s, at)
        return s

    @staticmethod
    def _aim(s: _Slice, at: int) -> None:
        if s.request is None or s.at != at:
            s.at, s.request = at, replace(s.template, at=at)

    def _advance(self, s: _Slice, at: int) -> None:
        """Re-aim a slice at time ``at``: recompute the entries that changed."""
        self._aim(s, at)
        s.lo, s.hi = -_FAR, _FAR
        for patient, (_, lo, hi) in list(s.entries.items()):
            if lo <= at < hi:
                s.lo, s.hi = max(s.lo, lo), min(s.hi, hi)
            else:
                self._store(s, patient)

    def _entry(self, s: _Slice, patient: str) -> Coverage:
        entry = s.entries.get(patient)
        if entry is None:
            if patient not in self._by_patient:
                return s.default
            return self._store(s, patient)
        return entry[0]

    def _complete(self, s: _Slice) -> dict[str, set[str]]:
        if not s.complete:
            for patient in self._by_patient:
                if patient not in s.entries:
                    self._store(s, patient)
            s.complete = True
        return s.groups

    def _store(self, s: _Slice, patient: str) -> Coverage:
        """(Re)compute one patient's coverage at ``s.at`` and file it in the slice."""
        old = s.entries.pop(patient, None)
        if old is not None:
            s.groups[old[0]].discard(patient)
        consents = self._by_patient.get(patient)
        if not consents:
            return s.default
        found = self._evaluate(s, patient, consents)
        lo, hi = _window(self._edges.get(patient, ()), s.at)
        s.entries[patient] = (found, lo, hi)
        s.groups[found].add(patient)
        s.lo, s.hi = max(s.lo, lo), min(s.hi, hi)
        return found

    def _evaluate(self, s: _Slice, patient: str, consents: list[ParsedConsent]) -> Coverage:
        """A patient's coverage at ``s.at``, memoised on the consents' signatures (most
        patients share a few consent shapes, so a cohort costs a few evaluations)."""
        key = tuple(sorted(c.signature(s.at) for c in consents))
        found = s.memo.get(key)
        if found is None:
            self._aim(s, s.at)
            assert s.request is not None
            found = patient_coverage(s.request, patient, consents, self.policy)
            if len(s.memo) >= _MEMO_MAX:
                s.memo.clear()
            s.memo[key] = found
        return found

    def _add(self, consent: ParsedConsent) -> None:
        self._by_id[str(consent.id)] = consent
        if consent.active and consent.governs_data:
            self._by_patient.setdefault(consent.patient_id, []).append(consent)

    def _discard(self, consent: ParsedConsent) -> None:
        del self._by_id[str(consent.id)]
        held = [c for c in self._by_patient.get(consent.patient_id, ()) if c.id != consent.id]
        if held:
            self._by_patient[consent.patient_id] = held
        else:
            self._by_patient.pop(consent.patient_id, None)

    def _refresh(self, patients: set[str]) -> None:
        """Recompute ``patients`` in every cached query (revocation takes effect now)."""
        for patient in patients:
            self._edges[patient] = _edges_of(self._by_patient.get(patient, ()))
            for s in self._slices.values():
                if patient in s.entries or (s.complete and patient in self._by_patient):
                    self._store(s, patient)


# --------------------------------------------------------------------------- helpers


def _parsed(consent: ParsedConsent | Mapping[str, Any]) -> ParsedConsent:
    parsed = consent if isinstance(consent, ParsedConsent) else parse_consent(consent)
    if not parsed.id:
        raise ConsentError("a Consent needs an id to be indexed", "Consent.id")
    return parsed


def _options(options: dict[str, Any]) -> dict[str, Any]:
    allowed = {"requester_affiliations", "requester_is_patient", "action", "node_org"}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    if "requester_affiliations" in options:
        options["requester_affiliations"] = frozenset(options["requester_affiliations"])
    return options


def _now(at: int | None) -> int:
    return time.time_ns() // 1000 if at is None else at


def _edges_of(consents: Iterable[ParsedConsent]) -> tuple[int, ...]:
    return tuple(sorted({e for c in consents for e in c.edges}))


def _window(edges: tuple[int, ...], at: int) -> tuple[int, int]:
    """The ``[lo, hi)`` window around ``at`` between consecutive period boundaries."""
    lo, hi = -_FAR, _FAR
    for edge in edges:
        if edge <= at:
            lo = edge
        else:
            hi = edge
            break
    return lo, hi


def _everyone(ids: set[str], found: Coverage) -> CohortCoverage:
    return CohortCoverage(set(ids) if found == "all" else set(),
                          set(ids) if found == "partial" else set(),
                          set(ids) if found == "none" else set())


def _split(ids: set[str], groups: dict[str, set[str]], default: Coverage) -> CohortCoverage:
    parts = {name: ids & groups[name] for name in ("all", "partial", "none")}
    rest = ids.difference(parts["all"], parts["partial"], parts["none"])
    parts[default] |= rest
    return CohortCoverage(parts["all"], parts["partial"], parts["none"])


def _pays(template: AccessRequest, payers: Mapping[str, Collection[str]] | None,
          patient: str) -> bool:
    held = payers.get(patient, ()) if payers else ()
    return any(ident in held for ident in template.identities())


def _by_payer(split: CohortCoverage, template: AccessRequest,
              payers: Mapping[str, Collection[str]] | None) -> CohortCoverage:
    out = CohortCoverage(set(), set(), set(split.none))
    for name in ("all", "partial"):
        for patient in getattr(split, name):
            (getattr(out, name) if _pays(template, payers, patient) else out.none).add(patient)
    return out
