"""The internal, immutable consent model: what a FHIR R4 ``Consent`` means to the node.

:func:`healthmesh.consent.parse_consent` turns a Consent resource into a
:class:`ParsedConsent`; everything downstream (decisions, the cohort index, the
plain-language text) works on these frozen objects and never looks at FHIR JSON again.

A consent holds one tree of :class:`Provision` rules. Each provision is ``permit`` or
``deny`` and narrows what it applies to with optional criteria (all given criteria must
hold; inside one criterion any listed value may match, except security labels, where
the data must carry every listed label, as FHIR R4 defines). A nested provision is an
exception to its parent: it is only considered when the parent applies, and it then
overrides the parent.

Times are epoch microseconds UTC; a :class:`Period` is ``[start, end)`` with the end
exclusive at the precision written (``"end": "2026-12-31"`` includes all of that day).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from healthmesh.errors import FhirError, Issue

__all__ = [
    "ACTIONS",
    "CONFIDENTIALITY",
    "GOVERNING_SCOPES",
    "SCOPES",
    "STATUSES",
    "Actor",
    "ConsentError",
    "DataItem",
    "ParsedConsent",
    "Period",
    "Provision",
]

STATUSES = frozenset({"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"})
"""Consent.status codes; only ``active`` consents take part in decisions."""

SCOPES = frozenset({"patient-privacy", "research", "treatment", "adr"})
"""Consent.scope codes (http://terminology.hl7.org/CodeSystem/consentscope)."""

GOVERNING_SCOPES = frozenset({"patient-privacy", "research"})
"""Scopes whose consents govern the use of data. ``treatment`` and ``adr`` (advance
directive) consents are about care, not data: they are parsed and kept, never applied."""

ACTIONS = frozenset({"access", "collect", "use", "disclose", "correct"})
"""Consent action codes (http://terminology.hl7.org/CodeSystem/consentaction)."""

CONFIDENTIALITY = ("U", "L", "M", "N", "R", "V")
"""v3-Confidentiality codes, least to most restricted; unlabelled data counts as ``N``."""


class ConsentError(FhirError):
    """A Consent resource that is malformed or asks for something the node cannot enforce.

    A FHIR client sees it as a 400 OperationOutcome; ``expression`` is the FHIRPath of
    the offending element (``Consent.provision.provision[0].actor[1].role``).
    """

    def __init__(self, message: str, expression: str | None = None) -> None:
        issue = Issue("error", "invalid", message, expression)
        FhirError.__init__(self, message, [issue], 400, "invalid")
        self.expression = expression


@dataclass(frozen=True, slots=True)
class Period:
    """A time window ``[start, end)`` in epoch microseconds; ``None`` ends are open."""

    start: int | None = None
    end: int | None = None
    start_text: str | None = None
    end_text: str | None = None

    def contains(self, when: int) -> bool:
        """Whether the instant ``when`` lies inside the window."""
        if self.start is not None and when < self.start:
            return False
        return self.end is None or when < self.end

    def edges(self) -> tuple[int, ...]:
        """The finite boundaries of the window (where a decision may change)."""
        return tuple(t for t in (self.start, self.end) if t is not None)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who a provision is about: a literal reference (``Organization/x``) and its role.

    ``recipient`` is True for roles that name who receives the data (PRCP, IRCP,
    DELEGATEE, GRANTEE, or no role) and False for roles that name where the data comes
    from (AUT author, CST custodian, INF informant, ENT data enterer).
    """

    reference: str
    role: str | None
    recipient: bool
    display: str | None = None


@dataclass(frozen=True, slots=True)
class DataItem:
    """A specific resource a provision is about (Consent.provision.data)."""

    meaning: str  # instance | related | dependents
    reference: str


@dataclass(frozen=True, slots=True)
class Provision:
    """One permit/deny rule of a consent, with its criteria and nested exceptions.

    Empty criteria match anything. ``path`` is the FHIRPath-like location inside the
    Consent (``provision`` for the root, ``provision.provision[1]`` for an exception).
    ``unenforceable`` is set on a permit whose criteria the node cannot check (e.g. a
    CDA-document class): such a permit never applies (an unverifiable permission is
    not granted); a deny with such criteria is rejected at parse time instead.
    """

    path: str
    type: str  # "permit" | "deny"
    period: Period | None = None
    actors: tuple[Actor, ...] = ()
    actions: frozenset[str] = frozenset()
    security_labels: frozenset[str] = frozenset()
    purposes: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    data_period: Period | None = None
    data: tuple[DataItem, ...] = ()
    provisions: tuple[Provision, ...] = ()
    unenforceable: str | None = None
    recipient_refs: frozenset[str] = field(init=False, repr=False, compare=False)
    source_refs: frozenset[str] = field(init=False, repr=False, compare=False)
    data_criteria: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        recipients = frozenset(a.reference for a in self.actors if a.recipient)
        sources = frozenset(a.reference for a in self.actors if not a.recipient)
        object.__setattr__(self, "recipient_refs", recipients)
        object.__setattr__(self, "source_refs", sources)
        given = {"recipient": recipients, "source": sources, "class": self.classes,
                 "labels": self.security_labels, "codes": self.codes,
                 "data_period": self.data_period, "data": self.data}
        object.__setattr__(self, "data_criteria", tuple(k for k, v in given.items() if v))

    @property
    def permit(self) -> bool:
        """True for a ``permit`` provision."""
        return self.type == "permit"

    @property
    def recipients(self) -> tuple[Actor, ...]:
        """The actors that constrain who receives the data."""
        return tuple(a for a in self.actors if a.recipient)

    @property
    def sources(self) -> tuple[Actor, ...]:
        """The actors that constrain where the data comes from."""
        return tuple(a for a in self.actors if not a.recipient)

    def walk(self) -> tuple[Provision, ...]:
        """This provision and all nested ones, depth first, in document order."""
        out: list[Provision] = [self]
        for child in self.provisions:
            out.extend(child.walk())
        return tuple(out)

    def about_data_only(self) -> bool:
        """True when the provision only narrows *which data* (labels, types, codes,
        data period, records): the kind of exception that reads "except X"."""
        return not (self.recipients or self.actions or self.purposes or self.period
                    or self.provisions)


_SHAPES: dict[tuple[object, ...], int] = {}
"""Structural identity of consents (ids, patient and period values left out) -> small int."""
_SHAPES_MAX = 1_000_000
_UNSHARED = itertools.count(-1, -1)


def _shape_id(key: tuple[object, ...]) -> int:
    """The interned id of a consent shape; past :data:`_SHAPES_MAX` shapes, a fresh
    negative id (never shared: still correct, only not memoised)."""
    found = _SHAPES.get(key)
    if found is None:
        found = len(_SHAPES) if len(_SHAPES) < _SHAPES_MAX else next(_UNSHARED)
        if found >= 0:
            _SHAPES[key] = found
    return found


def _shape_key(p: Provision) -> tuple[object, ...]:
    return (p.path, p.type, p.period is not None, p.actors, p.actions, p.security_labels,
            p.purposes, p.classes, p.codes, p.data_period, p.data, p.unenforceable)


@dataclass(frozen=True, slots=True)
class ParsedConsent:
    """A FHIR R4 Consent as the node understands it.

    ``period`` is the root provision's period: when the consent applies at all.
    ``policy_rules`` holds the policyRule codes (``OPTIN``, ``OPTOUT``, ``hipaa-research``).
    ``date_time`` is when the consent was given (epoch µs) and ``date_text`` as written.
    """

    id: str | None
    patient_id: str
    status: str
    scope: str
    provision: Provision
    date_time: int | None = None
    date_text: str | None = None
    policy_rules: frozenset[str] = frozenset()
    organizations: tuple[str, ...] = ()
    edges: tuple[int, ...] = field(default=(), compare=False)
    shape: int = field(init=False, repr=False, compare=False)
    periods: tuple[Period, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        walk = self.provision.walk()
        key = (self.status, self.scope, tuple(_shape_key(p) for p in walk))
        object.__setattr__(self, "shape", _shape_id(key))
        object.__setattr__(self, "periods", tuple(p.period for p in walk if p.period))

    def signature(self, at: int) -> tuple[int, tuple[bool, ...]]:
        """What a decision at time ``at`` can depend on, apart from the request: the
        consent's shape and which of its periods are in force. Consents with equal
        signatures get equal answers (the cohort index memoises on it)."""
        return self.shape, tuple(p.contains(at) for p in self.periods)

    @property
    def active(self) -> bool:
        """Only ``active`` consents count; draft, proposed, rejected, inactive and
        entered-in-error ones are ignored by every decision."""
        return self.status == "active"

    @property
    def governs_data(self) -> bool:
        """True for the scopes that govern data use (patient-privacy, research)."""
        return self.scope in GOVERNING_SCOPES

    @property
    def period(self) -> Period | None:
        """When the consent applies (Consent.provision.period)."""
        return self.provision.period

    @property
    def reference(self) -> str:
        """``Consent/<id>`` (or ``Consent/(unsaved)`` before the store assigns an id)."""
        return f"Consent/{self.id or '(unsaved)'}"
