"""Hospital encounters: emergency visits, admissions, screening, oncology, in-hospital deaths.

Rates are per person-year and scale with age, chronic conditions and a person-level
frailty (a gamma-distributed multiplier, so that a minority of people account for most
visits, as in real utilisation data): about 0.4 emergency visits and 0.1 admissions per
person-year on average (CDC NHAMCS / NHDS orders of magnitude). Reasons depend on age,
conditions and calendar year (COVID-19 from 2020).
"""

from __future__ import annotations

import random

from .clinical import Cond, Life, Visit, blood_pressure, heart_rate, lab_panel
from .epidemiology import uniform_int
from .timeline import year_of
from .visits import new_visit, poisson, post_discharge_followup, prescribe, years

__all__ = ["hospital_encounters"]

# reason -> (procedures, labs, discharge medications)
_WORKUP = {
    "chest_pain": (("ecg",), ("troponin",), ()),
    "ankle_sprain": ((), (), ("naproxen",)),
    "back_pain": ((), (), ("naproxen",)),
    "forearm_fracture": (("immobilization",), (), ("acetaminophen",)),
    "uti": ((), (), ("amoxicillin",)),
    "pneumonia": (("chest_xray", "oxygen"), ("cbc",), ("amoxicillin",)),
    "sinusitis": ((), (), ()),
    "bronchitis": ((), (), ()),
    "influenza": ((), (), ("acetaminophen",)),
    "covid19": (("oxygen",), ("cbc",), ()),
    "appendicitis": (("appendectomy",), ("cbc",), ("acetaminophen",)),
    "copd_exacerbation": (("oxygen",), ("cbc",), ()),
    "heart_failure": (("echo",), ("bmp",), ()),
    "mi": (("ecg", "pci"), ("troponin", "cbc"), ("aspirin", "clopidogrel")),
    "stroke": ((), ("cbc", "bmp"), ("aspirin",)),
    "sepsis": ((), ("cbc", "bmp"), ()),
}
_CHRONIC_AFTER = {"mi": "cad", "heart_failure": "heart_failure"}


def hospital_encounters(life: Life, rng: random.Random) -> None:
    """Schedule and fill the person's hospital encounters."""
    incident_cancer = [c for c in life.conditions.values()
                       if c.key.endswith("_cancer") and life.first <= c.onset <= life.last]
    if incident_cancer:
        life.uses["hospital"] = True
    if not life.uses["hospital"]:
        return
    for lo, hi, year in years(life):
        _year(life, rng, lo, hi, year)
    for c in incident_cancer:
        _oncology(life, rng, c)
    if life.person.death is not None and rng.random() < 0.35:
        day = max(life.first, life.last - uniform_int(rng, 1, 10))
        _admission(life, rng, day, _fatal(life, rng), dies=True)


def _year(life: Life, rng: random.Random, lo: int, hi: int, year: int) -> None:
    age, share = life.age(lo), (hi - lo + 1) / 365.0
    chronic = sum(1 for c in life.conditions.values() if c.onset <= hi)
    scale = life.frailty * (1 + 0.4 * chronic) * share
    ed_rate = 0.11 * scale * (1.4 if age < 5 or age > 75 else 1.0)
    admit_rate = 0.014 * scale * (1 + max(0.0, age - 20) / 18)
    for _ in range(poisson(rng, ed_rate)):
        _emergency(life, rng, uniform_int(rng, lo, hi))
    for _ in range(poisson(rng, admit_rate)):
        day = uniform_int(rng, lo, hi)
        _admission(life, rng, day, _admission_reason(life, rng, day))
    _screening(life, rng, lo, hi, age, share)


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    keys = [k for k, w in weights.items() if w > 0]
    return rng.choices(keys, [weights[k] for k in keys])[0]


def _emergency_reason(life: Life, rng: random.Random, day: int) -> str:
    age, year, female = life.age(day), year_of(day), life.person.sex == "female"
    old_or_young = age < 15 or age > 70
    return _weighted(rng, {
        "chest_pain": 12 if age >= 25 else 1, "ankle_sprain": 10,
        "back_pain": 8 if age >= 18 else 0,
        "forearm_fracture": 10 if old_or_young else 5, "uti": 10 if female else 3,
        "pneumonia": 10 if age > 65 else 4, "sinusitis": 2, "bronchitis": 3, "influenza": 4,
        "covid19": 8 if 2020 <= year <= 2022 else 2 if year > 2022 else 0,
        "appendicitis": 2 if 8 <= age <= 45 else 0.3,
        "copd_exacerbation": 12 if life.has("copd", day) else 0,
    })


def _admission_reason(life: Life, rng: random.Random, day: int) -> str:
    age, year = life.age(day), year_of(day)
    cardiac = life.has("hypertension", day) or life.has("cad", day)
    risky = cardiac or life.has("diabetes", day) or life.smoking == "current"
    return _weighted(rng, {
        "pneumonia": 15, "heart_failure": 10 if cardiac else 0.5, "mi": 6 if risky else 0.5,
        "stroke": 5 if age > 55 else 0.3, "copd_exacerbation": 12 if life.has("copd", day) else 0,
        "sepsis": 6 if age > 65 else 1, "appendicitis": 3 if age < 50 else 1,
        "covid19": 10 if 2020 <= year <= 2022 else 2 if year > 2022 else 0,
        "forearm_fracture": 4 if age > 70 else 0.5,
    })


def _fatal(life: Life, rng: random.Random) -> str:
    cancer = any(k.endswith("_cancer") for k in life.conditions)
    options = ["pneumonia", "heart_failure", "stroke", "sepsis", "mi"]
    return "sepsis" if cancer and rng.random() < 0.5 else rng.choice(options)


def _emergency(life: Life, rng: random.Random, day: int) -> None:
    reason = _emergency_reason(life, rng, day)
    if reason == "appendicitis":
        _admission(life, rng, day, reason)
        return
    visit = new_visit(life, rng, "hospital", "EMER", "emergency", day, rng.randrange(40),
                       minutes=120)
    visit.end_minute = min(1439, visit.minute + uniform_int(rng, 90, 420))
    _workup(life, rng, visit, reason, 14)
    visit.cost = round(rng.uniform(700, 3200), 2)


def _admission(life: Life, rng: random.Random, day: int, reason: str, dies: bool = False) -> None:
    los = min(21, 1 + int(rng.expovariate(1 / 3.5)))
    end = min(life.last, day + los)
    if dies:
        end = life.last
    visit = new_visit(life, rng, "hospital", "IMP", "inpatient", day, rng.randrange(40))
    visit.end, visit.end_minute = end, rng.choice(range(9 * 60, 18 * 60, 15))
    if visit.end == visit.day:
        visit.end_minute = max(visit.end_minute, min(1439, visit.minute + 240))
    visit.discharge = "exp" if dies else "home"
    new = _workup(life, rng, visit, reason, 30)
    _comorbidities(life, visit)
    visit.cost = round(rng.uniform(6000, 14000) * (1 + 0.35 * (end - day)), 2)
    if not dies and rng.random() < 0.3:
        visit.experience = _experience(rng)
    if new and not dies:
        post_discharge_followup(life, rng, end + uniform_int(rng, 5, 14), new)


def _workup(life: Life, rng: random.Random, visit: Visit, reason: str, heal: int) -> list[Cond]:
    """Diagnosis, vitals, labs, procedures and discharge medications; returns new chronic."""
    day = visit.day
    procedures, labs, meds = _WORKUP[reason]
    c = Cond(reason, day, day + uniform_int(rng, 7, heal), chronic=False)
    new = []
    if reason in _CHRONIC_AFTER and _CHRONIC_AFTER[reason] not in life.conditions:
        chronic = Cond(_CHRONIC_AFTER[reason], day)
        life.conditions[chronic.key] = chronic
        visit.diagnoses.append(chronic)
        new.append(chronic)
    life.acute.append(c)
    visit.reason = c
    visit.diagnoses.append(c)
    visit.bp = blood_pressure(life, day, rng)
    visit.heart_rate = heart_rate(life, rng, day) + (15 if reason in ("sepsis", "pneumonia") else 0)
    visit.procedures.extend(procedures)
    for panel in labs:
        lab = lab_panel(life, panel, day, min(1439, visit.minute + 20), rng)
        if panel == "troponin" and reason == "mi":
            lab.results = [("troponin", float(uniform_int(rng, 150, 4000)))]
        if panel == "cbc" and reason in ("pneumonia", "sepsis", "appendicitis"):
            lab.results[1] = ("wbc", round(rng.uniform(12, 22), 1))
        visit.labs.append(lab)
    for key in meds:
        prescribe(life, rng, visit, key, c, visit.end, chronic=key in ("aspirin", "clopidogrel"))
    if reason in ("chest_pain", "ankle_sprain", "back_pain", "forearm_fracture", "appendicitis"):
        visit.pain = min(10, max(1, round(rng.gauss(6.5, 2))))
    return new


def _comorbidities(life: Life, visit: Visit) -> None:
    """An admission records the chronic conditions the patient already has."""
    recorded = life.extra.setdefault("hospital_recorded", set())
    for c in life.conditions.values():
        if c.onset <= visit.day and c.key not in recorded and c not in visit.diagnoses:
            recorded.add(c.key)
            visit.diagnoses.append(c)


def _screening(life: Life, rng: random.Random, lo: int, hi: int, age: float,
               share: float) -> None:
    """Screening mammography (women 50-74, biennial) and colonoscopy (45-75, decennial)."""
    last = life.extra.setdefault("screening", {})
    day = uniform_int(rng, lo, hi)
    if life.person.sex == "female" and 50 <= age <= 74 and day - last.get("mammography", -10**9) \
            > 700 and rng.random() < 0.55 * share:
        last["mammography"] = day
        _outpatient(life, rng, day, "mammography", 250)
    if 45 <= age <= 75 and day - last.get("colonoscopy", -10**9) > 3650 and rng.random() < (
            0.08 * share):
        last["colonoscopy"] = day
        _outpatient(life, rng, day, "colonoscopy", 1800)


def _outpatient(life: Life, rng: random.Random, day: int, procedure: str, cost: float) -> Visit:
    visit = new_visit(life, rng, "hospital", "AMB", "checkup", day, rng.randrange(40), 45)
    visit.procedures.append(procedure)
    visit.cost = round(cost * rng.uniform(0.8, 1.3), 2)
    return visit


def _oncology(life: Life, rng: random.Random, cancer: Cond) -> None:
    """Diagnosis visit at onset, then chemotherapy sessions over about six months."""
    visit = _outpatient(life, rng, cancer.onset, "chest_xray" if cancer.key == "lung_cancer"
                        else "mammography" if cancer.key == "breast_cancer" else "colonoscopy", 900)
    visit.kind, visit.reason = "oncology", cancer
    visit.diagnoses.append(cancer)
    life.extra.setdefault("hospital_recorded", set()).add(cancer.key)
    for i in range(uniform_int(rng, 3, 6)):
        day = cancer.onset + 21 * (i + 1) + rng.randrange(7)
        if day > life.last:
            break
        session = _outpatient(life, rng, day, "chemotherapy", 4500)
        session.kind, session.reason = "oncology", cancer


def _experience(rng: random.Random) -> tuple[int, ...]:
    from .programs import experience_answers

    return experience_answers(rng)
