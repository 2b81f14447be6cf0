"""Encounters: who goes where, when, and what happens at each visit.

:func:`simulate` builds a person's :class:`~healthmesh.synth.clinical.Life`: which network
sites they use at all (a hospital sees a share of the population, the clinic most adults,
the lab most patients with chronic disease through clinic orders, ...), then the clinic
visits (well-child schedule, check-ups, chronic follow-ups, acute problems; diagnosis,
treatment and titration, labs, screening questionnaires), hospital encounters (emergency,
inpatient, screening and oncology outpatient; in-hospital deaths) and dental visits.
Population-level programmes (immunizations, notifiable diseases, consents, coverage,
remote monitoring, genomics) come from :mod:`healthmesh.synth.programs`.
"""

from __future__ import annotations

import random

from . import programs
from .clinical import (
    HTN_DRUGS,
    Cond,
    Life,
    Visit,
    Window,
    blood_pressure,
    body,
    heart_rate,
    lab_panel,
    new_life,
)
from .epidemiology import uniform_int
from .hospital import hospital_encounters
from .population import Person
from .timeline import DAYS_PER_YEAR, year_of
from .visits import new_visit, poisson, prescribe, years

__all__ = ["simulate"]

_WELL_CHILD_MONTHS = (0.2, 2, 4, 6, 9, 12, 15, 18, 24, 30, 36)
_CHILD_ACUTE = ("otitis_media", "pharyngitis", "bronchitis", "sinusitis")
_ADULT_ACUTE = ("sinusitis", "bronchitis", "pharyngitis", "uti", "back_pain", "ankle_sprain")
_ANTIBIOTIC = {"sinusitis": 0.4, "pharyngitis": 0.3, "otitis_media": 0.7, "uti": 0.9,
               "bronchitis": 0.2, "pneumonia": 1.0}
_PAINFUL = ("back_pain", "ankle_sprain", "forearm_fracture", "chest_pain", "appendicitis")
_DIAGNOSED_AT_HOSPITAL = ("breast_cancer", "prostate_cancer", "colorectal_cancer", "lung_cancer")


def simulate(person: Person, window: Window, rng: random.Random) -> Life:
    """Everything that happens to ``person`` during ``window``."""
    life = new_life(person, window, rng)
    _participation(life, rng)
    programs.allergies(life, rng)
    _clinic(life, rng)
    hospital_encounters(life, rng)
    _dental(life, rng)
    programs.immunizations(life, rng)
    programs.notifiable(life, rng)
    programs.person_programs(life, rng)
    programs.fills(life, rng)
    life.visits.sort(key=lambda v: (v.day, v.minute))
    return life


def _participation(life: Life, rng: random.Random) -> None:
    age = life.age(life.window.end)
    chronic = len(life.conditions)
    clinic = 0.82 if age < 18 else min(0.97, 0.7 + 0.08 * chronic + (0.1 if age >= 65 else 0))
    life.uses = {
        "clinic": rng.random() < clinic,
        "hospital": rng.random() < 0.62,
        "lab": rng.random() < 0.9,
        "dental": rng.random() < 0.55,
        "pharmacy": rng.random() < 0.72,
        "insurer": life.person.household.insured,
    }


# --- clinic ------------------------------------------------------------------------------

class _ClinicState:
    __slots__ = ("recorded", "last_lab", "body_years", "smoking_years", "last_change",
                 "treated", "genetic")

    def __init__(self) -> None:
        self.recorded: set[str] = set()
        self.last_lab: dict[str, int] = {}
        self.body_years: set[int] = set()
        self.smoking_years: set[int] = set()
        self.last_change = -10**9
        self.treated: dict[str, bool] = {}
        self.genetic = False


def _clinic(life: Life, rng: random.Random) -> None:
    if not life.uses["clinic"]:
        return
    state = _ClinicState()
    for day, kind, reason in sorted(_clinic_schedule(life, rng), key=lambda s: s[0]):
        _clinic_visit(life, rng, state, day, kind, reason)


def _clinic_schedule(life: Life, rng: random.Random) -> list[tuple[int, str, Cond | None]]:
    plan: list[tuple[int, str, Cond | None]] = []
    birth = life.person.birth
    for months in _WELL_CHILD_MONTHS + tuple(range(48, 216, 12)):
        day = birth + int(months * 30.44) + int(rng.random() * 14)
        if life.first <= day <= life.last and rng.random() < 0.85:
            plan.append((day, "wellchild", None))
    for lo, hi, _ in years(life):
        plan.extend((lo + int(rng.random() * (hi - lo + 1)), kind, None)
                    for kind in _year_visits(life, rng, lo, hi))
    for c in life.conditions.values():
        if life.first < c.onset <= life.last and c.key not in _DIAGNOSED_AT_HOSPITAL:
            plan.append((min(life.last, c.onset + rng.randrange(0, 45)), "problem", c))
    return plan


def _year_visits(life: Life, rng: random.Random, lo: int, hi: int) -> list[str]:
    age, share = life.age(lo), (hi - lo + 1) / 365.0
    if age < 18:
        return ["acute"] * poisson(rng, 0.45 * share)
    chronic = sum(1 for c in life.conditions.values() if c.onset <= hi and c.key != "obesity")
    kinds = ["checkup"] if rng.random() < (0.6 if age >= 65 else 0.42) * share else []
    if chronic:
        kinds += ["followup"] * min(4, poisson(rng, (1.2 + 0.45 * chronic) * share))
    return kinds + ["acute"] * poisson(rng, 0.3 * share)


def _clinic_visit(life: Life, rng: random.Random, state: _ClinicState, day: int, kind: str,
                  reason: Cond | None) -> None:
    visit = new_visit(life, rng, "clinic", "AMB", kind, day, life.person.index % 997)
    age = life.age(day)
    _record_chronic(life, rng, state, visit)
    if kind == "acute":
        _acute(life, rng, visit, _CHILD_ACUTE if age < 18 else _ADULT_ACUTE)
    elif kind == "followup":
        active = [life.conditions[k] for k in sorted(state.recorded) if life.has(k, day)]
        visit.reason = rng.choice(active) if active else None
    else:
        visit.reason = reason
    _vitals(life, rng, state, visit, age)
    _titrate(life, rng, state, visit)
    _order_labs(life, rng, state, visit, age)
    programs.clinic_surveys(life, rng, visit, age)
    if not state.genetic and age >= 18 and programs.wants_genetic_test(life, rng, day):
        state.genetic = True
        visit.labs.append(programs.genetic_test(life, rng, day, visit.minute + 45))
    if life.active_meds(day) and rng.random() < 0.3:
        visit.procedures.append("med_reconciliation")
    visit.cost = round(rng.uniform(*_CLINIC_COST[kind]), 2)


_CLINIC_COST = {"checkup": (150, 260), "wellchild": (120, 220), "followup": (90, 170),
                "problem": (90, 170), "acute": (80, 150)}


def _record_chronic(life: Life, rng: random.Random, state: _ClinicState, visit: Visit) -> None:
    for c in life.conditions.values():
        if c.key not in state.recorded and c.onset <= visit.day:
            state.recorded.add(c.key)
            visit.diagnoses.append(c)
            _treat(life, rng, state, visit, c)


def _treat(life: Life, rng: random.Random, state: _ClinicState, visit: Visit, c: Cond) -> None:
    prevalent = c.onset < life.window.start
    day = visit.day
    if c.key == "hypertension":
        state.treated[c.key] = rng.random() < 0.82
        count = rng.choices((0, 1, 2, 3), (15, 50, 25, 10))[0] if prevalent else 1
        for key in HTN_DRUGS[: count if state.treated[c.key] else 0]:
            prescribe(life, rng, visit, key, c, _start(rng, c, day, prevalent))
            state.last_change = day
    elif c.key == "diabetes" and rng.random() < 0.85:
        prescribe(life, rng, visit, "metformin", c, _start(rng, c, day, prevalent))
        if prevalent and rng.random() < 0.2:
            prescribe(life, rng, visit, "insulin", c, _start(rng, c, day, prevalent))
    elif c.key in ("hyperlipidemia", "cad") and rng.random() < 0.6:
        statin = "simvastatin" if year_of(day) < 2018 else "atorvastatin"
        if not life.active_meds(day, ("simvastatin", "atorvastatin")):
            prescribe(life, rng, visit, statin, c, _start(rng, c, day, prevalent))
        if c.key == "cad":
            prescribe(life, rng, visit, "aspirin", c, day)
    elif c.key in ("asthma", "copd"):
        prescribe(life, rng, visit, "albuterol", c, _start(rng, c, day, prevalent))
        if rng.random() < (0.5 if c.key == "asthma" else 0.7):
            prescribe(life, rng, visit, "fluticasone", c, _start(rng, c, day, prevalent))
    elif c.key == "depression" and rng.random() < 0.6:
        drug = "sertraline" if rng.random() < 0.6 else "fluoxetine"
        med = prescribe(life, rng, visit, drug, c, day)
        med.end = min(c.end or 10**9, day + uniform_int(rng, 270, 540))


def _start(rng: random.Random, c: Cond, day: int, prevalent: bool) -> int:
    """Treatment of a condition known before the window started before the window too."""
    if not prevalent:
        return day
    earliest = max(c.onset, day - int(5 * DAYS_PER_YEAR))
    return uniform_int(rng, earliest, max(earliest, day - 1))


def _acute(life: Life, rng: random.Random, visit: Visit, choices: tuple[str, ...]) -> None:
    key = rng.choice(choices)
    if key == "uti" and life.person.sex == "male" and rng.random() < 0.7:
        key = "sinusitis"
    c = Cond(key, visit.day, visit.day + uniform_int(rng, 7, 30), chronic=False)
    life.acute.append(c)
    visit.reason = c
    visit.diagnoses.append(c)
    if rng.random() < _ANTIBIOTIC.get(key, 0.0):
        prescribe(life, rng, visit, "amoxicillin", c, visit.day, chronic=False)
    if key in _PAINFUL:
        visit.pain = min(10, max(1, round(rng.gauss(6, 2))))
        if rng.random() < 0.5:
            prescribe(life, rng, visit, "naproxen", c, visit.day, chronic=False)


def _vitals(life: Life, rng: random.Random, state: _ClinicState, visit: Visit,
            age: float) -> None:
    year = year_of(visit.day)
    if age >= 3:
        visit.bp = blood_pressure(life, visit.day, rng)
    if age < 18:
        visit.heart_rate = heart_rate(life, rng, visit.day)
    if year not in state.body_years or visit.kind == "wellchild":
        weight, height, bmi = body(life, visit.day, rng)
        visit.body = (weight, height if age < 18 or not state.body_years else None, bmi)
        state.body_years.add(year)
    if age >= 13 and year not in state.smoking_years and (
            visit.kind == "checkup" or rng.random() < 0.3):
        state.smoking_years.add(year)
        visit.smoking = life.smoking


def _titrate(life: Life, rng: random.Random, state: _ClinicState, visit: Visit) -> None:
    """Add an antihypertensive when BP is uncontrolled; inertia falls with calendar year."""
    day = visit.day
    if visit.bp is None or not state.treated.get("hypertension") or not life.has(
            "hypertension", day):
        return
    if visit.bp[0] < 140 and visit.bp[1] < 90 or day - state.last_change < 90:
        return
    active = {m.key for m in life.active_meds(day, HTN_DRUGS)}
    missing = [k for k in HTN_DRUGS if k not in active]
    p = min(0.8, 0.3 + 0.05 * (year_of(day) - 2015))
    if missing and rng.random() < p:
        prescribe(life, rng, visit, missing[0], life.conditions["hypertension"], day)
        state.last_change = day


def _order_labs(life: Life, rng: random.Random, state: _ClinicState, visit: Visit,
                age: float) -> None:
    day, rec, last = visit.day, state.recorded, state.last_lab
    checkup = visit.kind == "checkup"

    def due(panel: str, interval: int) -> bool:
        return day - last.get(panel, -10**9) >= interval

    if not rec and not checkup:
        return
    orders = []
    if "diabetes" in rec and due("a1c", 80) or (
            checkup and age >= 35 and life.bmi >= 25 and due("a1c", 1095)):
        orders.append("a1c")
    if rec & {"hypertension", "diabetes", "ckd"} and due("bmp", 170 if "ckd" in rec else 330) or (
            checkup and age >= 40 and due("bmp", 1095)):
        orders.append("bmp")
    if rec & {"hyperlipidemia", "diabetes", "cad"} and due("lipid", 330) or (
            checkup and age >= 20 and due("lipid", 1825) and rng.random() < 0.6):
        orders.append("lipid")
    for panel in orders:
        state.last_lab[panel] = day
        visit.labs.append(lab_panel(life, panel, day, min(1439, visit.minute + 30), rng))


# --- dental ------------------------------------------------------------------------------

def _dental(life: Life, rng: random.Random) -> None:
    if not life.uses["dental"]:
        return
    dentist = life.person.index % 89
    perio = False
    for lo, hi, _ in years(life):
        if life.age(hi) < 2 or rng.random() >= 0.7 * (hi - lo + 1) / 365.0:
            continue
        for _ in range(1 if rng.random() < 0.5 else 2):
            visit = new_visit(life, rng, "dental", "AMB", "dental", uniform_int(rng, lo, hi),
                               dentist, minutes=40)
            perio = _dental_findings(life, rng, visit, perio)


def _dental_findings(life: Life, rng: random.Random, visit: Visit, perio: bool) -> bool:
    age = life.age(visit.day)
    visit.procedures.append("dental_exam")
    if rng.random() < 0.85:
        visit.procedures.append("dental_cleaning")
    cost = 120.0 + rng.uniform(0, 80)
    if rng.random() < 0.18:
        healed = visit.day + uniform_int(rng, 14, 60)
        visit.diagnoses.append(Cond("caries", visit.day, healed, False))
        if rng.random() < 0.12:
            visit.procedures.append("tooth_extraction")
            cost += 180
    if rng.random() < 0.08:
        visit.diagnoses.append(Cond("gingivitis", visit.day, visit.day + uniform_int(rng, 30, 120),
                                    False))
    if not perio and age >= 30 and rng.random() < 0.07:
        perio = True
        visit.diagnoses.append(Cond("periodontitis", visit.day))
    if 17 <= age <= 25 and rng.random() < 0.08:
        visit.procedures.append("wisdom_tooth")
        cost += 300
    visit.cost = round(cost, 2)
    return perio
