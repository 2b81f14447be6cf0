"""Clinical resources that an EHR holds: encounters and what was recorded during them.

Shared by the clinic, the hospital and the dental practice: Encounter (AMB / EMER / IMP with
period, reasonCode and discharge disposition), Condition (SNOMED CT + ICD-10-CM, problem
list or encounter diagnosis, abatement for resolved episodes), vital-sign and social-history
Observations, in-house lab reports (hospital), Procedure, MedicationRequest (RxNorm),
Immunization (CVX), AllergyIntolerance, CarePlan and the questionnaires filled in during a
visit. Everything refers to the site's own Patient, Practitioners and Organization.
"""

from __future__ import annotations

from typing import Any

from . import codes, observations, surveys
from .clinical import Cond, Life, Med, Shot, Visit
from .codes import CONDITION, MED, MED_FORM, UCUM
from .sites import Chart
from .timeline import DAYS_PER_YEAR, Clock, day_str

__all__ = ["allergies", "encounter_visit", "immunization", "medication_request"]

_RESOLVED_STATUS = {"depression": "remission"}
_SIG = {"tablet": "Take one tablet by mouth once daily", "capsule": "Take one capsule by mouth "
        "once daily", "inhaler": "Inhale two puffs as needed", "mL": "Inject as directed"}
_CP = "http://terminology.hl7.org/CodeSystem/"
_ALLERGY_CLINICAL = {"coding": [{"system": _CP + "allergyintolerance-clinical", "code": "active"}]}
_ALLERGY_VERIFIED = {"coding": [{"system": _CP + "allergyintolerance-verification",
                                 "code": "confirmed"}]}
_DAYS = {"system": UCUM, "code": "d", "unit": "days"}


def encounter_visit(chart: Chart, clock: Clock, life: Life, visit: Visit, labs: bool) -> None:
    """An Encounter and everything recorded during it (``labs``: in-house lab reports)."""
    site = chart.site
    performer = site.practitioner(visit.practitioner)
    enc = {"resourceType": "Encounter", "id": chart.new_id(), "status": "finished",
           "class": codes.ENC_CLASS[visit.cls], "type": codes.ENC_TYPE[visit.kind],
           "subject": chart.subject,
           "participant": [{"type": codes.PRIMARY_PERFORMER, "individual": performer}],
           "period": clock.period(visit.day, visit.minute, visit.end, visit.end_minute)}
    if visit.reason is not None:
        enc["reasonCode"] = [CONDITION[visit.reason.key]]
    if visit.discharge is not None:
        enc["hospitalization"] = {"dischargeDisposition": codes.DISCHARGE[visit.discharge]}
    enc["serviceProvider"] = site.org_ref
    eref = chart.link(enc)
    when = clock.at(visit.day, visit.minute)
    for c in visit.diagnoses:
        condition(chart, life, c, eref, visit.day)
    _vitals(chart, visit, eref, when, performer)
    if labs:
        for lab in visit.labs:
            observations.lab_report(chart, clock, lab, eref, site.org_ref, None)
    for key in visit.procedures:
        chart.add(_procedure(chart, key, eref, clock.at(visit.day, min(1439, visit.minute + 10)),
                             performer))
    for med in visit.meds:
        chart.add(medication_request(chart, life, med, eref, performer))
    _questionnaires(chart, clock, life, visit, eref, when)
    if chart.site.kind == "clinic":
        _care_plans(chart, life, visit, eref)


def _status(life: Life, c: Cond) -> tuple[str, int | None]:
    if c.end is not None and c.end <= life.window.end:
        return _RESOLVED_STATUS.get(c.key, "resolved"), c.end
    if c.key.endswith("_cancer") and c.onset < life.window.start - 5 * DAYS_PER_YEAR:
        return "remission", None
    return "active", None


def condition(chart: Chart, life: Life, c: Cond, eref: dict[str, str] | None, day: int) -> None:
    """A Condition; its Reference is remembered for reasonReference / addresses."""
    status, end = _status(life, c)
    res: dict[str, Any] = {"resourceType": "Condition", "id": chart.new_id()}
    label = codes.SENSITIVE.get(c.key)
    if label is not None:
        res["meta"] = {"security": codes.SECURITY[label]}
    res["clinicalStatus"] = codes.CLINICAL[status]
    res["verificationStatus"] = codes.CONFIRMED
    res["category"] = codes.PROBLEM_LIST if c.chronic else codes.ENCOUNTER_DX
    res["code"] = CONDITION[c.key]
    res["subject"] = chart.subject
    if eref is not None:
        res["encounter"] = eref
    res["onsetDateTime"] = day_str(c.onset)
    if end is not None:
        res["abatementDateTime"] = day_str(end)
    res["recordedDate"] = day_str(max(day, c.onset))
    chart.refs[id(c)] = chart.link(res)


def _vitals(chart: Chart, visit: Visit, eref: dict[str, str], when: str,
            performer: dict[str, str]) -> None:
    add = chart.add
    if visit.bp is not None:
        add(observations.blood_pressure(chart, eref, when, visit.bp[0], visit.bp[1], performer))
    if visit.heart_rate is not None:
        add(observations.vital(chart, "hr", eref, when, visit.heart_rate))
    if visit.body is not None:
        weight, height, bmi = visit.body
        add(observations.vital(chart, "weight", eref, when, weight))
        if height is not None:
            add(observations.vital(chart, "height", eref, when, height))
        add(observations.vital(chart, "bmi", eref, when, bmi))
    if visit.smoking is not None:
        add(observations.smoking(chart, eref, when, visit.smoking))


def _procedure(chart: Chart, key: str, eref: dict[str, str], when: str,
               performer: dict[str, str]) -> dict[str, Any]:
    return {"resourceType": "Procedure", "id": chart.new_id(), "status": "completed",
            "code": codes.PROCEDURE[key], "subject": chart.subject, "encounter": eref,
            "performedDateTime": when, "performer": [{"actor": performer}]}


def _med_status(life: Life, med: Med) -> str:
    if med.end is not None and med.end <= life.window.end:
        return "stopped" if med.chronic else "completed"
    return "stopped" if life.person.death is not None else "active"


def medication_request(chart: Chart, life: Life, med: Med, eref: dict[str, str] | None,
                       requester: dict[str, str]) -> dict[str, Any]:
    """A MedicationRequest for one medication episode."""
    form = MED_FORM[med.key]
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": chart.new_id(),
        "status": _med_status(life, med), "intent": "order",
        "medicationCodeableConcept": MED[med.key], "subject": chart.subject}
    if eref is not None:
        res["encounter"] = eref
    res["authoredOn"] = day_str(med.start)
    res["requester"] = requester
    reason = chart.refs.get(id(med.reason)) if med.reason is not None else None
    if reason is not None:
        res["reasonReference"] = [reason]
    res["dosageInstruction"] = [{"text": _SIG[form]}]
    supply = 30 if med.key == "insulin" else 90 if med.chronic else 10
    validity = {"start": day_str(med.start)}
    if med.end is not None and med.end <= life.window.end:
        validity["end"] = day_str(med.end)
    res["dispenseRequest"] = {
        "validityPeriod": validity, "numberOfRepeatsAllowed": 3 if med.chronic else 0,
        "quantity": {"value": supply if form != "inhaler" else 1, "unit": form},
        "expectedSupplyDuration": dict(_DAYS, value=supply)}
    return res


def immunization(chart: Chart, shot: Shot, performer: dict[str, str] | None,
                 registry: bool) -> dict[str, Any]:
    """An Immunization as given (``registry=False``) or as reported to a registry."""
    res: dict[str, Any] = {"resourceType": "Immunization", "id": chart.new_id(),
                           "status": "completed", "vaccineCode": codes.VACCINE[shot.cvx],
                           "patient": chart.subject, "occurrenceDateTime": day_str(shot.day)}
    primary = not registry or shot.site == "public-health"
    res["primarySource"] = primary
    if not primary:
        res["reportOrigin"] = codes.IMMUNIZATION_ORIGIN
    res["lotNumber"] = f"L{(shot.day * 31 + int(shot.cvx)) % 100000:05d}"
    if performer is not None:
        res["performer"] = [{"actor": performer}]
    return res


def allergies(chart: Chart, life: Life, recorded: int) -> None:
    """The patient's allergies, recorded on day ``recorded``."""
    for key, onset in life.allergies:
        _, _, category, reaction = codes.ALLERGY[key]
        chart.add({
            "resourceType": "AllergyIntolerance", "id": chart.new_id(),
            "clinicalStatus": _ALLERGY_CLINICAL, "verificationStatus": _ALLERGY_VERIFIED,
            "type": "allergy", "category": [category],
            "criticality": "high" if reaction == "anaphylaxis" else "low",
            "code": codes.ALLERGY_CODE[key], "patient": chart.subject,
            "onsetDateTime": day_str(onset), "recordedDate": day_str(max(onset, recorded)),
            "reaction": [{"manifestation": codes.REACTION[reaction]}]})


def _questionnaires(chart: Chart, clock: Clock, life: Life, visit: Visit,
                    eref: dict[str, str], when: str) -> None:
    if visit.phq9 is not None:
        chart.add(surveys.phq9_response(chart.new_id(), chart.subject, eref, when, visit.phq9))
        chart.add(observations.phq9_total(chart, eref, when, sum(visit.phq9)))
    if visit.pain is not None:
        chart.add(surveys.pain_response(chart.new_id(), chart.subject, eref, when, visit.pain))
    if visit.experience is not None:
        done = clock.at(visit.end, visit.end_minute)
        chart.add(surveys.experience_response(chart.new_id(), chart.subject, eref, done,
                                              visit.experience))
    if visit.sdoh:
        ids = [chart.new_id() for _ in range(5)]
        answers = _sdoh(life, chart.site.region.currency)
        for obs in surveys.sdoh_observations(ids, chart.subject, eref, when, answers):
            chart.add(obs)


def _sdoh(life: Life, currency: str) -> dict[str, Any]:
    house, person = life.person.household, life.person
    insecure = house.food_insecure
    return {
        "food_worry": ("often" if house.income < 20000 else "sometimes") if insecure else "never",
        "food_last": "sometimes" if insecure else "never",
        "housing": "unhoused" if house.unhoused else "housed",
        "education": person.education,
        "income": {"value": house.income, "unit": f"{currency}/year"},
    }


def _care_plans(chart: Chart, life: Life, visit: Visit, eref: dict[str, str]) -> None:
    for c in visit.diagnoses:
        plan = codes.CAREPLAN.get(c.key)
        if plan is None or c.onset > visit.day:
            continue
        category, activities = plan
        done = life.person.death is not None or (c.end is not None and c.end <= life.window.end)
        status = "completed" if done else "active"
        chart.add({
            "resourceType": "CarePlan", "id": chart.new_id(), "status": status,
            "intent": "plan", "category": [codes.CAREPLAN_CATEGORY, category],
            "subject": chart.subject, "encounter": eref,
            "period": {"start": day_str(visit.day)}, "created": day_str(visit.day),
            "addresses": [chart.refs[id(c)]],
            "activity": [{"detail": {"code": a, "status": "completed" if done else "in-progress"}}
                         for a in activities]})
