"""The disease model: risk factors, chronic conditions, deaths and physiology of one person.

A :class:`Life` is everything that happens to one person in the simulated window, as
plain data (no FHIR): conditions with onset dates, visits to each kind of site with what
was measured, ordered, prescribed and given there, medication episodes and their fills.
Site renderers (``ehr``, ``services``) turn the parts a site would hold into resources.

This module draws the person-level state (:func:`new_life`) and measures it
(:func:`blood_pressure`, :func:`lab_value`); the encounters are scheduled by
:mod:`healthmesh.synth.care` and :mod:`healthmesh.synth.programs`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from .epidemiology import (
    CANCERS,
    CHRONIC,
    COMORBID_RR,
    DEATH_RR,
    OBESITY_RR,
    SEX_SPECIFIC,
    SMOKING_RR,
    adult_bmi,
    adult_height,
    annual_death_probability,
    child_bmi,
    child_height,
    smoking_status,
    uniform_int,
)
from .population import Person
from .timeline import DAYS_PER_YEAR, year_of, year_start

__all__ = ["Cond", "Lab", "Life", "Med", "Shot", "Visit", "Window", "blood_pressure",
           "lab_value", "new_life"]

HTN_DRUGS = ("lisinopril", "amlodipine", "hctz")


@dataclass(frozen=True, slots=True)
class Window:
    """The simulated period (day ordinals, inclusive)."""

    start: int
    end: int


@dataclass(slots=True, eq=False)
class Cond:
    """A condition episode: chronic (no end, or remission) or acute (with an end)."""

    key: str
    onset: int
    end: int | None = None
    chronic: bool = True


@dataclass(slots=True, eq=False)
class Med:
    """A medication episode prescribed at one site, with the days it was dispensed."""

    key: str
    start: int
    end: int | None
    reason: Cond | None
    site: str
    chronic: bool = True
    fills: list[int] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Lab:
    """A lab panel (or genetic test) with its results: ``(analyte key, value)`` pairs."""

    panel: str
    day: int
    minute: int
    results: list[tuple[str, float]]
    variants: list[str] | None = None


@dataclass(slots=True, eq=False)
class Shot:
    """An immunization: CVX code, day, and where it was given."""

    cvx: str
    day: int
    site: str
    reported: bool = True


@dataclass(slots=True, eq=False)
class Visit:
    """One encounter at a site and everything recorded during it."""

    site: str
    cls: str
    kind: str
    day: int
    minute: int
    end: int
    end_minute: int
    practitioner: int
    reason: Cond | None = None
    bp: tuple[int, int] | None = None
    heart_rate: int | None = None
    body: tuple[float, float | None, float] | None = None
    smoking: str | None = None
    labs: list[Lab] = field(default_factory=list)
    procedures: list[str] = field(default_factory=list)
    diagnoses: list[Cond] = field(default_factory=list)
    meds: list[Med] = field(default_factory=list)
    phq9: tuple[int, ...] | None = None
    pain: int | None = None
    experience: tuple[int, ...] | None = None
    sdoh: bool = False
    cost: float = 0.0
    discharge: str | None = None


@dataclass(slots=True, eq=False)
class Life:
    """One person's simulated window: state, conditions and events."""

    person: Person
    window: Window
    first: int
    last: int
    smoking: str
    bmi: float
    height: float
    adherence: float
    sbp_high: int
    dbp_high: int
    sbp_normal: int
    drug_effect: float
    frailty: float
    conditions: dict[str, Cond] = field(default_factory=dict)
    acute: list[Cond] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    meds: list[Med] = field(default_factory=list)
    shots: list[Shot] = field(default_factory=list)
    cases: list[Cond] = field(default_factory=list)
    allergies: list[tuple[str, int]] = field(default_factory=list)
    uses: dict[str, bool] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def age(self, day: int) -> float:
        """Age in years on ``day``."""
        return (day - self.person.birth) / DAYS_PER_YEAR

    def has(self, key: str, day: int) -> bool:
        """Whether the chronic condition ``key`` has started by ``day`` (and not ended)."""
        c = self.conditions.get(key)
        return c is not None and c.onset <= day and (c.end is None or c.end >= day)

    def active_meds(self, day: int, keys: tuple[str, ...] | None = None) -> list[Med]:
        """Medication episodes running on ``day`` (optionally only those in ``keys``)."""
        return [m for m in self.meds if m.start <= day and (m.end is None or m.end >= day)
                and (keys is None or m.key in keys)]


def new_life(person: Person, window: Window, rng: random.Random) -> Life:
    """Draw a person's risk factors, chronic conditions and death date."""
    age_end = (window.end - person.birth) / DAYS_PER_YEAR
    life = Life(
        person=person, window=window, first=max(window.start, person.birth), last=window.end,
        smoking=smoking_status(rng, age_end) if age_end >= 18 else "never",
        bmi=adult_bmi(rng) if age_end >= 18 else child_bmi(rng, age_end),
        height=adult_height(rng, person.sex), adherence=rng.uniform(0.6, 1.0),
        sbp_high=max(142, round(rng.gauss(153, 9))), dbp_high=max(84, round(rng.gauss(93, 6))),
        sbp_normal=min(132, round(rng.gauss(115, 8))), drug_effect=max(5.0, rng.gauss(11.5, 3.0)),
        frailty=rng.gammavariate(0.8, 1 / 0.8),
    )
    _chronic_conditions(life, rng, age_end)
    _death(life, rng)
    return life


def _chronic_conditions(life: Life, rng: random.Random, age_end: float) -> None:
    person = life.person
    for key, curve in CHRONIC.items():
        if SEX_SPECIFIC.get(key, person.sex) != person.sex:
            continue
        p = curve(age_end) * _risk(life, key)
        if rng.random() < p:
            onset_age = curve.onset(rng, age_end)
            life.conditions[key] = Cond(key, person.birth + int(onset_age * DAYS_PER_YEAR))
    if life.bmi >= 30 and age_end >= 18 and rng.random() < 0.55:
        onset = max(life.first, person.birth + int(18 * DAYS_PER_YEAR))
        life.conditions["obesity"] = Cond("obesity", onset)
    depression = life.conditions.get("depression")
    if depression is not None and rng.random() < 0.5:
        depression.end = depression.onset + uniform_int(rng, 200, 900)


def _risk(life: Life, key: str) -> float:
    rr = 1.0
    if key in OBESITY_RR:
        rr *= OBESITY_RR[key][0 if life.bmi >= 30 else 1]
    if key in SMOKING_RR:
        rr *= SMOKING_RR[key][life.smoking]
    for other, factor in COMORBID_RR.get(key, ()):
        if other in life.conditions:
            rr *= factor
    return rr


def _death(life: Life, rng: random.Random) -> None:
    """Walk the window year by year with an age- and condition-specific hazard."""
    person, window = life.person, life.window
    for year in range(year_of(life.first), year_of(window.end) + 1):
        lo = max(life.first, year_start(year))
        hi = min(window.end, year_start(year + 1) - 1)
        if hi < lo:
            continue
        age = (lo - person.birth) / DAYS_PER_YEAR
        hazard = annual_death_probability(age) * _death_rr(life, hi) * (hi - lo + 1) / 365.0
        if rng.random() < hazard:
            person.death = life.last = uniform_int(rng, lo, hi)
            break
    for key in [k for k, c in life.conditions.items() if c.onset > life.last]:
        del life.conditions[key]


def _death_rr(life: Life, day: int) -> float:
    rr = 1.0
    for key, factor in DEATH_RR.items():
        c = life.conditions.get(key)
        if c is not None and c.onset <= day:
            rr *= factor
    return rr


# --- physiology -------------------------------------------------------------------------

def blood_pressure(life: Life, day: int, rng: random.Random) -> tuple[int, int]:
    """An office reading (mm[Hg]): true level, treatment effect and measurement noise."""
    age = life.age(day)
    if age < 18:
        return round(rng.gauss(96 + 1.2 * age, 7)), round(rng.gauss(58 + 0.8 * age, 6))
    if life.has("hypertension", day):
        drugs = len(life.active_meds(day, HTN_DRUGS))
        effect = drugs * life.drug_effect * life.adherence
        sbp = life.sbp_high - effect
        dbp = life.dbp_high - 0.2 * max(0.0, age - 55) - 0.55 * effect
    else:
        sbp = min(136.0, life.sbp_normal + 0.3 * max(0.0, age - 40))
        dbp = min(86.0, 72 + 0.15 * (sbp - 115))
    return round(sbp + rng.gauss(0, 6)), round(dbp + rng.gauss(0, 5))


def heart_rate(life: Life, rng: random.Random, day: int) -> int:
    """Heart rate (/min) at rest."""
    age = life.age(day)
    base = 120 - 4 * age if age < 10 else 72 + (4 if life.bmi >= 30 else 0)
    return round(rng.gauss(base, 8))


def body(life: Life, day: int, rng: random.Random) -> tuple[float, float, float]:
    """(weight kg, height cm, BMI) on ``day``."""
    age = life.age(day)
    if age < 18:
        height = child_height(life.height, age)
        bmi = child_bmi(rng, age) if age >= 2 else round(rng.gauss(17, 1.2), 1)
    else:
        height = life.height
        bmi = round(life.bmi + rng.gauss(0, 0.6), 1)
    weight = round(bmi * (height / 100) ** 2, 1)
    return weight, height, round(weight / (height / 100) ** 2, 1)


def lab_value(life: Life, analyte: str, day: int, rng: random.Random) -> float:
    """A measured value of ``analyte`` on ``day`` (see :data:`ANALYTES` for units)."""
    return round(_LAB[analyte](life, day, rng), ANALYTES[analyte][1])


def _a1c(life: Life, day: int, rng: random.Random) -> float:
    base = life.extra.setdefault("a1c", rng.gauss(5.35, 0.25) + (0.3 if life.bmi >= 30 else 0))
    if life.has("diabetes", day):
        treated = sum(1.0 if m.key == "metformin" else 1.4 for m in life.active_meds(
            day, ("metformin", "insulin")))
        base = life.extra.setdefault("a1c_dm", max(6.6, rng.gauss(8.2, 1.0)))
        base -= treated * life.adherence
    return max(4.2, base + rng.gauss(0, 0.2))


def _glucose(life: Life, day: int, rng: random.Random) -> float:
    return max(55.0, 28.7 * _a1c(life, day, rng) - 46.7 + rng.gauss(0, 12))


def _egfr(life: Life, day: int, rng: random.Random) -> float:
    age = life.age(day)
    ckd = life.conditions.get("ckd")
    if ckd is not None and ckd.onset <= day:
        base = life.extra.setdefault("egfr_ckd", rng.uniform(35, 58))
        value = base - 2.0 * (day - ckd.onset) / DAYS_PER_YEAR
    else:
        base = life.extra.setdefault("egfr", rng.gauss(112, 8))
        value = max(61.0, base - 0.8 * max(0.0, age - 25))
    return min(130.0, max(8.0, value + rng.gauss(0, 3)))


def _creatinine(life: Life, day: int, rng: random.Random) -> float:
    factor = 0.75 if life.person.sex == "female" else 1.0
    return factor * 1.0 * (90.0 / _egfr(life, day, rng)) ** 0.87


def _ldl(life: Life, day: int, rng: random.Random) -> float:
    if life.has("hyperlipidemia", day):
        base = life.extra.setdefault("ldl_high", max(135.0, rng.gauss(168, 22)))
    else:
        base = life.extra.setdefault("ldl", min(150.0, rng.gauss(110, 22)))
    for m in life.active_meds(day, ("simvastatin", "atorvastatin")):
        base *= 1 - (0.38 if m.key == "atorvastatin" else 0.3) * life.adherence
    return max(30.0, base + rng.gauss(0, 8))


def _hdl(life: Life, day: int, rng: random.Random) -> float:
    base = life.extra.setdefault("hdl", rng.gauss(59 if life.person.sex == "female" else 48, 10))
    return max(20.0, base + rng.gauss(0, 3))


def _tg(life: Life, day: int, rng: random.Random) -> float:
    high = life.bmi >= 30 or "diabetes" in life.conditions
    base = life.extra.setdefault("tg", math.exp(rng.gauss(math.log(150 if high else 105), 0.45)))
    return max(30.0, base * math.exp(rng.gauss(0, 0.1)))


_LAB = {
    "a1c": _a1c, "glucose": _glucose, "egfr": _egfr, "creatinine": _creatinine,
    "ldl": _ldl, "hdl": _hdl, "triglycerides": _tg,
    "potassium": lambda life, day, rng: rng.gauss(4.2, 0.3),
    "hemoglobin": lambda life, day, rng: rng.gauss(14.6 if life.person.sex == "male" else 13.2, 1),
    "wbc": lambda life, day, rng: max(2.0, rng.gauss(7.0, 1.7)),
    "platelets": lambda life, day, rng: max(60.0, rng.gauss(255, 55)),
    "troponin": lambda life, day, rng: abs(rng.gauss(6, 3)),
}
# analyte -> (unit, decimals)
ANALYTES = {
    "a1c": ("%", 1), "glucose": ("mg/dL", 0), "egfr": ("mL/min/{1.73_m2}", 0),
    "creatinine": ("mg/dL", 2), "ldl": ("mg/dL", 0), "hdl": ("mg/dL", 0),
    "triglycerides": ("mg/dL", 0), "cholesterol": ("mg/dL", 0), "potassium": ("mmol/L", 1),
    "hemoglobin": ("g/dL", 1), "wbc": ("10*3/uL", 1), "platelets": ("10*3/uL", 0),
    "troponin": ("ng/L", 0),
}
PANELS = {
    "bmp": ("glucose", "creatinine", "egfr", "potassium"),
    "lipid": ("cholesterol", "hdl", "triglycerides", "ldl"),
    "a1c": ("a1c",),
    "cbc": ("hemoglobin", "wbc", "platelets"),
    "troponin": ("troponin",),
}


def lab_panel(life: Life, panel: str, day: int, minute: int, rng: random.Random) -> Lab:
    """Measure every analyte of ``panel`` (total cholesterol from LDL + HDL + TG/5)."""
    values = {a: lab_value(life, a, day, rng) for a in PANELS[panel] if a != "cholesterol"}
    if panel == "lipid":
        values["cholesterol"] = round(values["ldl"] + values["hdl"] + values["triglycerides"] / 5)
    return Lab(panel, day, minute, [(a, values[a]) for a in PANELS[panel]])


def is_cancer(key: str) -> bool:
    """Whether a condition key is one of the modelled cancers."""
    return key in CANCERS
