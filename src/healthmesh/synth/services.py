"""What each kind of site holds about a person, and how it is rendered.

* clinic, hospital: the EHR (:mod:`~healthmesh.synth.ehr`), allergies, consents; the clinic
  also gives immunizations and runs remote monitoring; the hospital runs its own lab;
* lab: results of the clinic's orders (Observation + DiagnosticReport) and genetic tests;
* pharmacy: MedicationDispense for every fill, and the vaccines it gives;
* dental: dental encounters, caries / gingivitis / periodontitis Conditions and Procedures;
* public-health: the immunization registry (every reported vaccine) and notifiable disease
  case reports;
* insurer: coverage and claims (:mod:`~healthmesh.synth.payer`).

:func:`render` returns the site's :class:`~healthmesh.synth.sites.Chart` for the person, or
``None`` when the person never had anything to do with that site.
"""

from __future__ import annotations

from typing import Any

from . import codes, consent, ehr, observations, payer
from .clinical import Life
from .noise import Recorded
from .patient import patient_resource
from .population import Region
from .sites import Chart, Site
from .timeline import Clock

__all__ = ["render"]

_DAYS = {"system": codes.UCUM, "code": "d", "unit": "days"}
_REPORTERS = ("hospital", "clinic", "pharmacy", "public-health")


def render(site: Site, life: Life, rec: Recorded, clock: Clock, region: Region) -> Chart | None:
    """The person's resources at ``site`` (Patient first), or None if they are not there."""
    chart = Chart(site, life.person.index)
    if not _RENDERERS[site.kind](chart, life, clock):
        return None
    known = life.extra["death_known"].get(site.kind, False)
    deceased = clock.at(life.person.death, 720) if life.person.death and known else None
    chart.out.insert(0, patient_resource(site, chart.pid, life.person, rec, region, deceased))
    return chart


def _ehr(chart: Chart, life: Life, clock: Clock) -> bool:
    kind = chart.site.kind
    visits = [v for v in life.visits if v.site == kind]
    shots = [s for s in life.shots if s.site == kind]
    if not visits and not shots:
        return False
    first = visits[0] if visits else None
    if first is not None:
        ehr.allergies(chart, life, first.day)
        if life.age(first.day) >= 18:
            consent.consents(chart, clock, life.extra["consent"], first.day, first.minute,
                             life.window.end)
    for visit in visits:
        ehr.encounter_visit(chart, clock, life, visit, labs=kind == "hospital")
    performer = chart.site.practitioner(life.person.index % 997)
    for shot in shots:
        chart.add(ehr.immunization(chart, shot, performer, registry=False))
    program = life.extra.get("monitoring")
    if kind == "clinic" and program:
        series = [_home_bp(life, program["start"] + 7 * w) for w in range(program["weeks"])]
        observations.monitoring(chart, clock, program, series)
    return True


def _home_bp(life: Life, day: int) -> tuple[int, int]:
    """Home readings run ~5 mm[Hg] below office readings (no white-coat effect)."""
    visit = _nearest_bp(life, day)
    if visit is None:
        return 125, 78
    return visit[0] - 5, visit[1] - 3


def _nearest_bp(life: Life, day: int) -> tuple[int, int] | None:
    best, gap = None, 10**9
    for v in life.visits:
        if v.bp is not None and abs(v.day - day) < gap:
            best, gap = v.bp, abs(v.day - day)
    return best


def _lab(chart: Chart, life: Life, clock: Clock) -> bool:
    if not life.uses["lab"]:
        return False
    labs = [lab for v in life.visits if v.site == "clinic" for lab in v.labs]
    site = chart.site
    for n, lab in enumerate(labs):
        observations.lab_report(chart, clock, lab, None, site.org_ref, site.practitioner(n))
    return bool(labs)


def _pharmacy(chart: Chart, life: Life, clock: Clock) -> bool:
    site = chart.site
    pharmacist = site.practitioner(life.person.index)
    found = False
    for med in life.meds:
        for n, day in enumerate(med.fills):
            chart.add(_dispense(chart, clock, med.key, med.chronic, n, day, pharmacist))
            found = True
    for shot in life.shots:
        if shot.site == "pharmacy":
            chart.add(ehr.immunization(chart, shot, pharmacist, registry=False))
            found = True
    return found


def _dispense(chart: Chart, clock: Clock, key: str, chronic: bool, n: int, day: int,
              pharmacist: dict[str, str]) -> dict[str, Any]:
    form = codes.MED_FORM[key]
    supply = 30 if key == "insulin" else 90 if chronic else 10
    minute = 600 + (day * 37) % 480
    return {
        "resourceType": "MedicationDispense", "id": chart.new_id(), "status": "completed",
        "type": codes.DISPENSE_TYPE["FF" if n == 0 else "RF"],
        "medicationCodeableConcept": codes.MED[key], "subject": chart.subject,
        "performer": [{"actor": pharmacist}],
        "quantity": {"value": 1 if form == "inhaler" else supply, "unit": form},
        "daysSupply": dict(_DAYS, value=supply),
        "whenPrepared": clock.at(day, minute), "whenHandedOver": clock.at(day, minute + 25),
    }


def _dental(chart: Chart, life: Life, clock: Clock) -> bool:
    visits = [v for v in life.visits if v.site == "dental"]
    for visit in visits:
        ehr.encounter_visit(chart, clock, life, visit, labs=False)
    return bool(visits)


def _public_health(chart: Chart, life: Life, clock: Clock) -> bool:
    found = False
    for shot in life.shots:
        if shot.reported:
            reporter = {"reference": f"Organization/{shot.site}"} if shot.site in _REPORTERS \
                else None
            chart.add(ehr.immunization(chart, shot, reporter, registry=True))
            found = True
    for case in life.cases:
        ehr.condition(chart, life, case, None, case.onset + 2)
        found = True
    return found


def _insurer(chart: Chart, life: Life, clock: Clock) -> bool:
    return payer.claims(chart, clock, life)


_RENDERERS = {"hospital": _ehr, "clinic": _ehr, "lab": _lab, "pharmacy": _pharmacy,
              "dental": _dental, "public-health": _public_health, "insurer": _insurer}
