"""The consent decision: may this requester have this patient's data for this purpose?

:func:`decide` is pure and deterministic (same inputs, same answer, whatever the order
of the consents). In order:

1. **Purpose.** No purpose → deny, except a request by the patient themself, which is
   treated as PATRQT. A purpose the policy has no rule for (nor for any ancestor) → deny.
2. **Recipient ceiling.** The purpose's ``recipients`` rule (payers, node, patient) must
   hold, whatever a consent says: consents can narrow access, never widen it past this.
3. **By law.** A purpose that is not ``overridable`` (PUBHLTH, PATRQT) gets the default.
4. **Consents.** Each *active* consent of the patient whose scope governs data
   (patient-privacy; research, for research purposes only) is evaluated: if its root
   provision applies (period covers ``at``, every given criterion matches), the deepest
   matching nested provision wins — an exception overrides its parent; among matching
   siblings a deny beats a permit. This gives each consent one verdict.
5. **Between consents, deny wins**: one consent that denies is enough, whichever is more
   detailed or more recent; all consents are treated as equally specific statements of
   the patient's will. To make an exception to a refusal, write it *inside* the refusing
   consent (a nested permit) or make the refusal inactive.
6. **No consent applies** → the purpose's default (permit or deny).

Criteria a request leaves unknown (``None``: no resource type, labels, data time,
codes, records or requester) are evaluated for every possibility: the answer is permit
only if it would be permit whatever the unknown values are. :func:`coverage` reports
the spread instead: ``"all"`` (every record of the patient is permitted), ``"none"`` or
``"partial"`` (depends on the record: decide per resource).

A purpose matches a provision's purpose or any ancestor of it (ETREAT matches a TREAT
rule, not the reverse); the other criteria are matched by :mod:`.match`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial as partial_fn
from typing import Any, Literal, Protocol, TypeVar

from .match import MAYBE, NO, match
from .model import ParsedConsent, Provision
from .policy import Policy, PurposeRule
from .text import consent_reason, default_reason, recipient_reason

__all__ = ["AccessRequest", "Coverage", "Decision", "coverage", "decide"]

Coverage = Literal["all", "none", "partial"]
_SCOPE_OK = frozenset({"patient-privacy", "research"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRequest:
    """One question to the consent model. ``None`` data attributes mean "unknown / any".

    ``requester`` is a reference (``Organization/uni-research``); ``requester_affiliations``
    the references it acts for (a practitioner's organisation). ``security_labels`` are
    the codes of :func:`~healthmesh.consent.labels_for`; ``codes`` are ``system|code``
    tokens of the data; ``data_time`` its clinically relevant time; ``resource_ref`` the
    record itself, ``references`` the records it refers to, ``sources`` its authors and
    custodians. ``at`` is the time of the request (epoch µs). ``patient_payers`` are the
    payor organisations of the patient's Coverage; ``node_org`` the node's organisation.
    """

    patient_id: str
    purpose: str | None
    at: int
    requester: str | None = None
    requester_affiliations: frozenset[str] = frozenset()
    requester_is_patient: bool = False
    action: str = "access"
    resource_type: str | None = None
    security_labels: frozenset[str] | None = None
    data_time: int | None = None
    codes: frozenset[str] | None = None
    resource_ref: str | None = None
    references: frozenset[str] | None = None
    sources: frozenset[str] | None = None
    patient_payers: frozenset[str] = frozenset()
    node_org: str | None = None

    def identities(self) -> frozenset[str]:
        """The requester and everything it acts for."""
        if self.requester is None:
            return self.requester_affiliations
        return self.requester_affiliations | {self.requester}


class Decision:
    """The answer, with its reason (datasette-style: every decision says why).

    ``rule`` is ``Consent/<id>#<provision path>`` (e.g. ``Consent/abc#provision.provision[1]``),
    ``default:<PURPOSE>`` (network default or law), ``recipient:<PURPOSE>`` (requester
    outside the purpose's recipients) or ``purpose:missing`` / ``purpose:unknown``.
    ``reason`` is a sentence for the patient; it is written on first access, so deciding
    thousands of records costs nothing for the text. Immutable; equality ignores nothing
    but the reason text.
    """

    __slots__ = ("_reason", "consent_id", "permit", "provision", "purpose", "rule")

    def __init__(self, permit: bool, rule: str, consent_id: str | None,
                 reason: str | Callable[[], str], provision: str | None = None,
                 purpose: str | None = None) -> None:
        for name, value in (("permit", permit), ("rule", rule), ("consent_id", consent_id),
                            ("_reason", reason), ("provision", provision),
                            ("purpose", purpose)):
            object.__setattr__(self, name, value)

    permit: bool
    rule: str
    consent_id: str | None
    provision: str | None
    purpose: str | None
    _reason: str | Callable[[], str]

    @property
    def reason(self) -> str:
        """Why, in a sentence a patient understands."""
        if not isinstance(self._reason, str):
            object.__setattr__(self, "_reason", self._reason())
        return str(self._reason)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for audit entries and API answers."""
        return {"permit": self.permit, "rule": self.rule, "consent_id": self.consent_id,
                "provision": self.provision, "purpose": self.purpose, "reason": self.reason}

    def _key(self) -> tuple[Any, ...]:
        return (self.permit, self.rule, self.consent_id, self.provision, self.purpose)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Decision is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Decision(permit={self.permit}, rule={self.rule!r}, "
                f"consent_id={self.consent_id!r}, reason={self.reason!r})")


@dataclass(frozen=True, slots=True)
class _Verdict:
    permit: bool
    consent: ParsedConsent | None = None
    provision: Provision | None = None


def decide(request: AccessRequest, consents: Sequence[ParsedConsent],
           policy: Policy) -> Decision:
    """Decide ``request`` against the patient's ``consents`` and the network ``policy``."""
    early = _before_consents(request, policy)
    if isinstance(early, Decision):
        return early
    purpose, rule = early
    finals = _finals(request, purpose, rule, consents, policy, request.patient_id)
    return _decision(finals, purpose, rule)


def coverage(request: AccessRequest, consents: Sequence[ParsedConsent],
             policy: Policy) -> Coverage:
    """How much of the patient's data ``request`` may have: ``"all"``, ``"none"`` or
    ``"partial"``. Data attributes left ``None`` range over every possible value."""
    return patient_coverage(request, request.patient_id, consents, policy)


def patient_coverage(request: AccessRequest, patient_id: str,
                     consents: Sequence[ParsedConsent], policy: Policy) -> Coverage:
    """:func:`coverage` of ``request`` aimed at ``patient_id`` (the cohort index's inner
    loop: one request serves every patient, no copy per patient)."""
    early = _before_consents(request, policy)
    if isinstance(early, Decision):
        return "all" if early.permit else "none"
    purpose, rule = early
    finals = _finals(request, purpose, rule, consents, policy, patient_id)
    kinds = {v.permit for v in finals}
    return "partial" if len(kinds) > 1 else ("all" if True in kinds else "none")


# --------------------------------------------------------------------------- steps 1-3


def consents_matter(request: AccessRequest, policy: Policy) -> bool:
    """False when the answer cannot depend on consents: no or unknown purpose, a
    requester outside the purpose's recipients, or a purpose decided by law."""
    return not isinstance(_before_consents(request, policy), Decision)


def _before_consents(request: AccessRequest,
                     policy: Policy) -> Decision | tuple[str, PurposeRule]:
    purpose = request.purpose
    if purpose is None:
        if not request.requester_is_patient:
            return Decision(False, "purpose:missing", None,
                            "The request did not say why the data is needed, so it is "
                            "refused.")
        purpose = "PATRQT"
    rule = policy.rule_for(purpose)
    if rule is None:
        return Decision(False, "purpose:unknown", None,
                        f"The purpose {purpose!r} is not one this network recognises, so "
                        f"the request is refused.", purpose=purpose)
    if not _eligible(rule, request):
        return Decision(False, f"recipient:{rule.code}", None,
                        recipient_reason(rule, request.requester), purpose=purpose)
    if not rule.overridable:
        return Decision(rule.permits_by_default, f"default:{rule.code}", None,
                        default_reason(rule, overridable=False), purpose=purpose)
    return purpose, rule


def _eligible(rule: PurposeRule, request: AccessRequest) -> bool:
    kind = rule.recipients
    if kind == "any":
        return True
    if kind == "patient":
        return request.requester_is_patient
    if kind == "payers":
        return not request.identities().isdisjoint(request.patient_payers)
    return request.node_org is not None and request.node_org in request.identities()


# --------------------------------------------------------------------------- steps 4-6


def _finals(request: AccessRequest, purpose: str, rule: PurposeRule,
            consents: Sequence[ParsedConsent], policy: Policy,
            patient_id: str) -> list[_Verdict]:
    """Every verdict the request can end with (one, unless data attributes are unknown)."""
    lineage = policy.lineage(purpose)
    outcomes: list[_Verdict | None] = [None]
    for consent in _ordered(consents, patient_id, lineage):
        outcomes = _combine(outcomes, _consent_outcomes(consent, request, lineage))
    default = _Verdict(rule.permits_by_default)
    return _unique([default if v is None else v for v in outcomes])


def _ordered(consents: Sequence[ParsedConsent], patient_id: str,
             lineage: tuple[str, ...]) -> list[ParsedConsent]:
    """The consents that can apply, newest first (ties by id): the order only decides
    which consent is *named* in the reason when several agree, never the answer."""
    usable = [c for c in consents if c.status == "active" and c.patient_id == patient_id
              and c.scope in _SCOPE_OK and (c.scope != "research" or "HRESCH" in lineage)]
    if len(usable) > 1:
        usable.sort(key=lambda c: (-(c.date_time or 0), c.id or ""))
    return usable


def _consent_outcomes(consent: ParsedConsent, request: AccessRequest,
                      lineage: tuple[str, ...]) -> list[_Verdict | None]:
    return [None if p is None else _Verdict(p.type == "permit", consent, p)
            for p in _provision_outcomes(consent.provision, request, lineage)]


def _provision_outcomes(provision: Provision, request: AccessRequest,
                        lineage: tuple[str, ...]) -> list[Provision | None]:
    """Possible winning provisions of this subtree (``None``: the subtree does not apply)."""
    matched = match(provision, request, lineage)
    if matched == NO:
        return [None]
    below: list[Provision | None] = [None]
    for child in provision.provisions:
        below = _combine(below, _provision_outcomes(child, request, lineage))
    out: list[Provision | None] = [provision if p is None else p for p in below]
    if matched == MAYBE:
        out.append(None)
    return _unique(out)


class _Permits(Protocol):
    @property
    def permit(self) -> bool: ...


_P = TypeVar("_P", bound=_Permits)
_T = TypeVar("_T")


def _combine(left: list[_P | None], right: list[_P | None]) -> list[_P | None]:
    """All results of choosing one outcome from each side; deny beats permit beats none."""
    if len(right) == 1 and right[0] is None:
        return left
    if len(left) == 1 and left[0] is None:
        return right
    return _unique([_stronger(a, b) for a in left for b in right])


def _stronger(a: _P | None, b: _P | None) -> _P | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if (a.permit and not b.permit) else a


def _unique(items: list[_T]) -> list[_T]:
    if len(items) < 2:
        return items
    out: list[_T] = []
    for item in items:
        if not any(item is seen for seen in out):
            out.append(item)
    return out


def _decision(finals: list[_Verdict], purpose: str, rule: PurposeRule) -> Decision:
    denies = [v for v in finals if not v.permit]
    chosen = denies[0] if denies else finals[0]
    partial = bool(denies) and len(denies) < len(finals)
    if chosen.consent is None or chosen.provision is None:
        return Decision(chosen.permit, f"default:{rule.code}", None,
                        partial_fn(default_reason, rule, overridable=True, partial=partial),
                        purpose=purpose)
    consent, provision = chosen.consent, chosen.provision
    return Decision(chosen.permit, f"{consent.reference}#{provision.path}", consent.id,
                    partial_fn(consent_reason, consent, provision, partial=partial),
                    provision=provision.path, purpose=purpose)


def for_patient(request: AccessRequest, patient_id: str,
                payers: frozenset[str] = frozenset()) -> AccessRequest:
    """``request`` re-aimed at another patient (used by the cohort index)."""
    return replace(request, patient_id=patient_id, patient_payers=payers)
