"""The de-identification transform: :class:`Deidentifier` and its profiles.

``Deidentifier(profile, key).apply(resource)`` returns a de-identified copy of one FHIR
R4 resource (or None when nothing of it can be released). It is stateless per resource
given the key: the egress gate can apply it to each resource it releases, in any order
and in parallel, and references between the released resources stay resolvable because
ids are pseudonymised with the same key everywhere::

    from healthmesh.privacy.deid import Deidentifier, load_key_file
    deid = Deidentifier("pseudonymize", load_key_file("project.key"))
    released = deid.apply(observation)

Profiles (see docs/privacy.md for what each protects against):

* ``safe-harbor`` — HIPAA Safe Harbor: the 18 identifier kinds removed or generalised
  (dates to the year, ZIP-3, ages 90+), identifiers and free text dropped, ids opaque.
* ``date-shift`` — as safe-harbor, but dates keep their precision, shifted by a secret
  per-patient offset (intervals stay true). Needs a key.
* ``pseudonymize`` — as date-shift, and business identifiers (MRN, insurance number...)
  become keyed pseudonyms, so a project can link records across releases. Needs a key.

Each released resource carries ``meta.security`` labels from the HL7
v3-ObservationValue code system saying what was done: ``REDACTED`` (elements removed),
``ABSTRED`` (generalised: year, ZIP-3, 90+), ``MASKED`` (dates shifted or values replaced
by a data-absent-reason), ``PSEUDED`` (ids, references or identifiers pseudonymised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from healthmesh.fhir.search_params import patient_compartment
from healthmesh.privacy.deid.dates import (
    DEFAULT_MAX_SHIFT_DAYS,
    age_in_years,
    date_offset,
)
from healthmesh.privacy.deid.errors import DeidConfigError, DeidError
from healthmesh.privacy.deid.keys import DeidKey
from healthmesh.privacy.deid.pseudonyms import Pseudonyms
from healthmesh.privacy.deid.safelists import AGE_AT_EVENT_URL, UCUM, Zip3Rule, zip3_rule
from healthmesh.privacy.deid.walker import ResourceWalk

__all__ = ["PROFILES", "SECURITY_SYSTEM", "Deidentifier", "Profile"]

HL7_CANONICAL = "http://hl7.org/fhir/"
SECURITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
_DISPLAY = {"ABSTRED": "abstracted", "MASKED": "masked", "PSEUDED": "pseudonymized",
            "REDACTED": "redacted"}
_PATIENT_KEYS = ("patient", "subject", "beneficiary")
# Elements holding the date of the event a resource records, most specific first.
_EVENT_DATES = (
    ("effectiveDateTime",), ("effectivePeriod", "start"), ("effectiveInstant",),
    ("occurrenceDateTime",), ("occurrencePeriod", "start"), ("performedDateTime",),
    ("performedPeriod", "start"), ("onsetDateTime",), ("onsetPeriod", "start"),
    ("authoredOn",), ("recordedDate",), ("period", "start"), ("billablePeriod", "start"),
    ("whenHandedOver",), ("issued",), ("dateAsserted",), ("created",), ("date",),
    ("recorded",),
)


@dataclass(frozen=True)
class Profile:
    """What a profile does with dates and business identifiers."""

    name: str
    shift_dates: bool
    pseudonymize_identifiers: bool
    needs_key: bool
    description: str


PROFILES = {
    p.name: p for p in (
        Profile("safe-harbor", False, False, False,
                "HIPAA Safe Harbor: identifiers removed, dates to the year, ZIP-3, 90+"),
        Profile("date-shift", True, False, True,
                "Safe Harbor rules, but dates shifted by a secret per-patient offset"),
        Profile("pseudonymize", True, True, True,
                "date-shift, and business identifiers replaced by keyed pseudonyms"),
    )
}


class Deidentifier:
    """Applies one profile with one key to resources, one at a time.

    ``key`` is the project key (:func:`~healthmesh.privacy.deid.load_key_file`); the
    safe-harbor profile makes a one-time key when none is given (ids consistent within
    this object, unlinkable afterwards). ``allow_scrubbed_text`` keeps free-text elements
    after :func:`~healthmesh.privacy.deid.scrub_text` (a data steward's decision);
    ``age_at_event`` drops birth dates and adds the patient's age at the event to each
    resource of their compartment, for which ``birth_dates`` maps a patient id to the
    birth date (a Mapping or a callable, e.g. a store lookup). ``today`` is the date the
    90+ rule measures ages at. ``keep_canonicals`` lists URL prefixes of definitions
    (questionnaires, profiles) the steward trusts to name no person; canonicals under
    ``http://hl7.org/fhir/`` are always kept, others dropped.
    """

    def __init__(
        self, profile: str | Profile, key: DeidKey | None = None, *,
        allow_scrubbed_text: bool = False, age_at_event: bool = False,
        birth_dates: Mapping[str, str] | Callable[[str], str | None] | None = None,
        max_shift_days: int = DEFAULT_MAX_SHIFT_DAYS, today: date | None = None,
        zip3: Zip3Rule | None = None, keep_canonicals: tuple[str, ...] = (),
    ) -> None:
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise DeidConfigError(
                    f"unknown de-identification profile {profile!r}; "
                    f"choose one of {', '.join(PROFILES)}")
            profile = PROFILES[profile]
        if key is None and profile.needs_key:
            raise DeidConfigError(f"profile {profile.name} needs a project key (--key-file)")
        if not 1 <= max_shift_days <= 3650:
            raise DeidConfigError("max_shift_days must be between 1 and 3650")
        if age_at_event and birth_dates is None:
            raise DeidConfigError("age_at_event needs birth_dates (patient id -> birth date)")
        self.profile = profile
        self.key = key or DeidKey.one_time()
        self.pseudonyms = Pseudonyms(self.key)
        self.allow_scrubbed_text = allow_scrubbed_text
        self.age_at_event = age_at_event
        self._birth = birth_dates.get if isinstance(birth_dates, Mapping) else birth_dates
        self.max_shift_days = max_shift_days
        self.today = today or date.today()
        self.zip3 = zip3 or zip3_rule()
        self.canonical_prefixes = (HL7_CANONICAL, *keep_canonicals)
        self._dates_key = self.key.subkey("dates")

    def apply(self, resource: dict[str, Any]) -> dict[str, Any] | None:
        """The de-identified copy of ``resource`` (never modified), or None if it is not
        a resource of a known type. Raises DeidError for a value that is not an object
        or is nested deeper than :data:`~healthmesh.privacy.deid.walker.MAX_DEPTH`."""
        if not isinstance(resource, dict):
            raise DeidError(f"a resource must be a JSON object, not {type(resource).__name__}")
        walk = ResourceWalk(self, self.offset_for(resource))
        out = walk.resource(resource)
        if out is None:
            return None
        if self.age_at_event:
            self._add_age(resource, out, walk.labels)
        if walk.labels:
            meta = out.setdefault("meta", {})
            codes = {c.get("code") for c in meta.get("security", [])}
            meta["security"] = meta.get("security", []) + [
                {"system": SECURITY_SYSTEM, "code": code, "display": _DISPLAY[code]}
                for code in sorted(walk.labels) if code not in codes]
        return out

    def nested(self, resource: dict[str, Any]) -> dict[str, Any] | None:
        """A resource inside another (Bundle entries, Parameters): its own patient."""
        return self.apply(resource)

    def patient_of(self, resource: dict[str, Any]) -> str | None:
        """The id of the patient whose compartment holds ``resource`` (source ids).

        ``patient``, ``subject`` or ``beneficiary`` naming a ``Patient/id`` decides at once
        (most clinical resources); otherwise the Patient compartment definition does."""
        if resource.get("resourceType") == "Patient":
            rid = resource.get("id")
            return rid if isinstance(rid, str) else None
        for key in _PATIENT_KEYS:
            ref = resource.get(key)
            target = ref.get("reference") if isinstance(ref, dict) else None
            if isinstance(target, str) and target.startswith("Patient/") and \
                    "/" not in target[8:] and len(target) > 8:
                return target[8:]
        try:
            return patient_compartment(resource)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def offset_for(self, resource: dict[str, Any]) -> int:
        """The date offset (days) of the patient of ``resource`` — or, outside every
        patient compartment, of the resource itself; 0 when dates are not shifted."""
        if not self.profile.shift_dates:
            return 0
        patient = self.patient_of(resource)
        subject = f"Patient/{patient}" if patient else \
            f"{resource.get('resourceType')}/{resource.get('id')}"
        return date_offset(self._dates_key, subject, self.max_shift_days)

    def _add_age(self, source: dict[str, Any], out: dict[str, Any], labels: set[str]) -> None:
        patient = self.patient_of(source)
        if source.get("resourceType") == "Patient" or patient is None or self._birth is None:
            return
        birth, event = self._birth(patient), _event_date(source)
        age = age_in_years(birth, event) if birth and event else None
        if age is None or age < 0:
            return
        value: dict[str, Any] = {"value": min(age, 90), "unit": "a", "system": UCUM, "code": "a"}
        if age >= 90:
            value["comparator"] = ">="
        out.setdefault("extension", []).append({"url": AGE_AT_EVENT_URL, "valueAge": value})
        labels.add("ABSTRED")


def _event_date(resource: dict[str, Any]) -> str | None:
    for path in _EVENT_DATES:
        value: Any = resource
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if isinstance(value, str):
            return value
    return None
