"""Population programmes: immunizations, notifiable diseases, surveys, consents, coverage,
remote monitoring, genomics, allergies and pharmacy fills.

Rates (sources in docs/synthetic-data.md): influenza vaccination by age from CDC
FluVaxView 2019-20 (children ~55%, 18-49 ~33%, 50-64 ~48%, 65+ ~68%); COVID-19 primary
series 2021 (65+ ~92%, adults ~78%); routine childhood schedule from the CDC/ACIP
schedule with ~90% coverage; reported COVID-19 cases ~30% of the population 2020-2023
(CDC COVID Data Tracker); chlamydia ~550/100,000 a year, concentrated at 15-29; research
consent opt-in ~70% with ~6% later revocations (surveys of biobank participation).
"""

from __future__ import annotations

import random

from .clinical import Cond, Lab, Life, Shot, Visit
from .epidemiology import uniform_int
from .timeline import DAYS_PER_YEAR, year_of, year_start
from .visits import acute_case_visit, years

__all__ = ["VARIANTS", "allergies", "fills", "immunizations", "notifiable", "person_programs"]

# cvx -> ages in days at which a dose is due (ACIP routine schedule, simplified)
_CHILD_SCHEDULE = {
    "08": (0, 30, 180), "20": (61, 122, 183, 456, 1645), "10": (61, 122, 183, 1645),
    "49": (61, 122, 365), "133": (61, 122, 183, 365), "119": (61, 122), "03": (365, 1645),
    "21": (365, 1645), "83": (365, 548), "115": (4018,), "165": (4018, 4200), "114": (4018, 5844),
}
_NOTIFIABLE_RATE = {"influenza": 0.006, "hepatitis_c": 0.0004, "lyme": 0.0006,
                    "salmonellosis": 0.0002, "tuberculosis": 0.00003}
_COVID_CASES = {2020: 0.08, 2021: 0.1, 2022: 0.18, 2023: 0.04, 2024: 0.02, 2025: 0.015}
_ALLERGY_RATE = {"penicillin": 0.08, "peanut": 0.02, "shellfish": 0.02, "latex": 0.01,
                 "dander": 0.05, "grass": 0.06}
# variant key -> (gene, HGNC id, c.HGVS, g.HGVS, clinical significance)
VARIANTS = {
    "BRCA1_c68": ("BRCA1", "HGNC:1100", "NM_007294.4:c.68_69del",
                  "NC_000017.11:g.43124027_43124028del", "pathogenic"),
    "BRCA1_c5266": ("BRCA1", "HGNC:1100", "NM_007294.4:c.5266dup",
                    "NC_000017.11:g.43057065dup", "pathogenic"),
    "BRCA2_c5946": ("BRCA2", "HGNC:1101", "NM_000059.4:c.5946del",
                    "NC_000013.11:g.32340301del", "pathogenic"),
    "APOE_e4": ("APOE", "HGNC:613", "NM_000041.4:c.388T>C", "NC_000019.10:g.44908684T>C",
                "risk"),
    "LDLR_c1775": ("LDLR", "HGNC:6547", "NM_000527.5:c.1775G>A", "NC_000019.10:g.11113383G>A",
                   "pathogenic"),
    "APOB_c10580": ("APOB", "HGNC:603", "NM_000384.3:c.10580G>A", "NC_000002.12:g.21006288C>T",
                    "pathogenic"),
    "PCSK9_c1120": ("PCSK9", "HGNC:20001", "NM_174936.4:c.1120G>T", "NC_000001.11:g.55063514G>T",
                    "likely_pathogenic"),
}
GENE_PANELS = {"hboc": ("BRCA1", "BRCA2"), "fh": ("LDLR", "APOB", "PCSK9"), "apoe": ("APOE",)}


def allergies(life: Life, rng: random.Random) -> None:
    """Allergies with an onset in childhood (or at birth for the youngest)."""
    for key, rate in _ALLERGY_RATE.items():
        if rng.random() < rate:
            onset = life.person.birth + uniform_int(rng, 180, 3650)
            life.allergies.append((key, min(onset, life.last)))


def _dose_site(life: Life, rng: random.Random, pharmacy_share: float) -> str:
    if life.uses["pharmacy"] and rng.random() < pharmacy_share:
        return "pharmacy"
    return "clinic" if life.uses["clinic"] else "other"


def immunizations(life: Life, rng: random.Random) -> None:
    """Childhood schedule, seasonal influenza, COVID-19, Td/Tdap, zoster, pneumococcal."""
    attitude = rng.random()
    birth = life.person.birth
    for cvx, ages in _CHILD_SCHEDULE.items():
        for days in ages:
            day = birth + days + rng.randrange(0, 21)
            if life.first <= day <= life.last and rng.random() < 0.6 + 0.38 * attitude:
                life.shots.append(Shot(cvx, day, "clinic" if life.uses["clinic"] else "other"))
    for _, _, year in _season_years(life):
        _flu(life, rng, year, attitude)
    _covid_vaccines(life, rng, attitude)
    _adult_vaccines(life, rng, attitude)
    for shot in life.shots:
        shot.reported = shot.site == "public-health" or rng.random() < 0.95


def _season_years(life: Life) -> list[tuple[int, int, int]]:
    out = []
    for year in range(year_of(life.first), year_of(life.last) + 1):
        lo, hi = year_start(year) + 243, year_start(year) + 348  # 1 Sep - 15 Dec
        lo, hi = max(lo, life.first), min(hi, life.last)
        if lo <= hi:
            out.append((lo, hi, year))
    return out


def _flu(life: Life, rng: random.Random, year: int, attitude: float) -> None:
    lo = max(life.first, year_start(year) + 243)
    hi = min(life.last, year_start(year) + 348)
    age = life.age(lo)
    if age < 0.5:
        return
    base = 0.55 if age < 18 else 0.33 if age < 50 else 0.48 if age < 65 else 0.68
    if rng.random() < min(0.97, base * (0.3 + 1.4 * attitude)):
        site = "clinic" if age < 18 and life.uses["clinic"] else _dose_site(life, rng, 0.45)
        cvx = "140" if rng.random() < 0.7 else "141"
        life.shots.append(Shot(cvx, uniform_int(rng, lo, hi), site))


def _covid_vaccines(life: Life, rng: random.Random, attitude: float) -> None:
    first = year_start(2021) + uniform_int(rng, 10, 200)
    age = life.age(first)
    base = 0.92 if age >= 65 else 0.78 if age >= 18 else 0.6 if age >= 12 else 0.35 if age >= 5 \
        else 0.0
    if not rng.random() < base * (0.5 + attitude):
        return
    cvx = "207" if age >= 18 and rng.random() < 0.4 else "208"
    doses = [first, first + (28 if cvx == "207" else 21)]
    if age >= 18 and rng.random() < 0.6:
        doses.append(first + uniform_int(rng, 240, 420))
    if age >= 50 and rng.random() < 0.45:
        doses.append(year_start(2022) + uniform_int(rng, 250, 340))
    site = rng.choices(("pharmacy", "public-health", "clinic"), (50, 30, 20))[0]
    if site != "public-health":
        site = _dose_site(life, rng, 1.0 if site == "pharmacy" else 0.0)
    for day in doses:
        if life.first <= day <= life.last:
            life.shots.append(Shot(cvx, day, site))


def _adult_vaccines(life: Life, rng: random.Random, attitude: float) -> None:
    for lo, hi, _ in _season_years(life):
        age = life.age(lo)
        if age >= 19 and rng.random() < 0.06 * (0.5 + attitude):
            life.shots.append(Shot("113" if rng.random() < 0.5 else "115", uniform_int(rng, lo, hi),
                                   _dose_site(life, rng, 0.2)))
        if age >= 50 and "zoster" not in life.extra and rng.random() < 0.05 * (0.5 + attitude):
            life.extra["zoster"] = True
            day = uniform_int(rng, lo, hi)
            site = _dose_site(life, rng, 0.6)
            life.shots += [Shot("187", d, site) for d in (day, day + 75) if d <= life.last]
        if age >= 65 and "ppsv" not in life.extra and rng.random() < 0.15 * (0.5 + attitude):
            life.extra["ppsv"] = True
            life.shots.append(Shot("33", uniform_int(rng, lo, hi), _dose_site(life, rng, 0.2)))


def notifiable(life: Life, rng: random.Random) -> None:
    """Reportable infections (all reach the public-health site; some visit the clinic)."""
    for lo, hi, year in years(life):
        age, share = life.age(lo), (hi - lo + 1) / 365.0
        rates = dict(_NOTIFIABLE_RATE)
        rates["chlamydia"] = (0.022 if life.person.sex == "female" else 0.012) \
            if 15 <= age < 30 else 0.0008
        rates["pertussis"] = 0.0004 if age < 12 else 0.00005
        rates["covid19"] = _COVID_CASES.get(year, 0.0) if year >= 2020 else 0.0
        for key, rate in rates.items():
            if rng.random() < rate * share:
                first = max(lo, year_start(2020) + 70) if key == "covid19" else lo
                if first > hi:
                    continue
                day = uniform_int(rng, first, hi)
                end = None if key == "hepatitis_c" else day + uniform_int(rng, 10, 30)
                case = Cond(key, day, end, chronic=key == "hepatitis_c")
                life.cases.append(case)
                if rng.random() < 0.3:
                    acute_case_visit(life, rng, case)


def person_programs(life: Life, rng: random.Random) -> None:
    """Consent decisions, insurance coverage periods and remote monitoring."""
    life.extra["consent"] = _consent_decisions(rng)
    life.extra["coverage"] = _coverage(life, rng) if life.uses["insurer"] else []
    life.extra["monitoring"] = _monitoring(life, rng)
    known = (rng.random() < 0.8, rng.random() < 0.3, rng.random() < 0.95)
    died_in_hospital = any(v.discharge == "exp" for v in life.visits)
    life.extra["death_known"] = {"clinic": known[0], "hospital": known[1] or died_in_hospital,
                                 "insurer": known[2], "public-health": True}


def _consent_decisions(rng: random.Random) -> dict[str, object]:
    permit = rng.random() < 0.70
    return {
        "asked": rng.random() < 0.85,
        "permit": permit,
        "revoke_after": uniform_int(rng, 60, 2000) if permit and rng.random() < 0.06 else None,
        "research_deny": rng.choice(("GDIS", "PSY", "HIV")) if permit and rng.random() < 0.15
        else None,
        "privacy": rng.random() < 0.5,
        "privacy_deny": rng.choice(("PSY", "ETH", "HIV", "STD")) if rng.random() < 0.12 else None,
        "day_offset": uniform_int(rng, 0, 30),
    }


def _coverage(life: Life, rng: random.Random) -> list[tuple[int, int | None, str]]:
    """(start, end, plan) periods; plans change at 65 (public plan) or on a job change."""
    start, end = life.first, None if life.person.death is None else life.last
    turns65 = life.person.birth + int(65 * DAYS_PER_YEAR)
    if start < turns65 <= life.last:
        return [(start, turns65 - 1, "commercial"), (turns65, end, "public")]
    plan = "public" if turns65 <= start else "commercial"
    if rng.random() < 0.12 and life.last - start > 400:
        switch = uniform_int(rng, start + 200, life.last - 100)
        return [(start, switch - 1, plan), (switch, end, plan)]
    return [(start, end, plan)]


def _monitoring(life: Life, rng: random.Random) -> dict[str, object] | None:
    """Remote monitoring: 26 weekly summaries for ~6% of adult clinic patients (more if HTN)."""
    window_start = max(life.first, year_start(2016))
    if not life.uses["clinic"] or life.age(life.last) < 18 or life.last - window_start < 200:
        return None
    htn = "hypertension" in life.conditions
    if rng.random() >= (0.15 if htn else 0.05):
        return None
    start = uniform_int(rng, window_start, life.last - 182)
    weeks = min(26, (life.last - start) // 7)
    steps0 = max(1500.0, rng.gauss(7500 - 60 * max(0.0, life.age(start) - 40), 2200))
    hr0 = rng.gauss(66 + (4 if life.bmi >= 30 else 0), 6)
    series = [(max(300, round(steps0 * rng.uniform(0.7, 1.25))), round(hr0 + rng.gauss(0, 2)))
              for _ in range(weeks)]
    return {"start": start, "weeks": weeks, "bp_cuff": htn and life.age(start) >= 18,
            "series": series}


def fills(life: Life, rng: random.Random) -> None:
    """Pharmacy fills: 90-day supplies (30 for insulin) while a prescription runs."""
    if not life.uses["pharmacy"]:
        return
    for med in life.meds:
        if not med.chronic:
            if life.first <= med.start <= life.last:
                med.fills.append(med.start)
            continue
        supply = 30 if med.key == "insulin" else 90
        day, stop = max(med.start, life.first), min(med.end or life.last, life.last)
        while day <= stop:
            if rng.random() < 0.5 + 0.5 * life.adherence:
                med.fills.append(day)
                day += supply + uniform_int(rng, -5, 10)
            else:
                day += uniform_int(rng, 20, 45)


# --- surveys, genetic tests -------------------------------------------------------------

def clinic_surveys(life: Life, rng: random.Random, visit: Visit, age: float) -> None:
    """PHQ-9 screening, SDOH screening and the experience-of-care survey at the clinic."""
    year = year_of(visit.day)
    depressed = life.has("depression", visit.day)
    screening = visit.kind == "checkup" and age >= 18 and year >= 2016 and rng.random() < 0.5
    follow = depressed and visit.reason is not None and visit.reason.key == "depression"
    if screening or follow:
        visit.phq9 = phq9_answers(life, rng, visit.day, depressed)
        visit.procedures.append("depression_screening")
    if visit.kind == "checkup" and age >= 18 and year >= 2018 and rng.random() < 0.35:
        visit.sdoh = True
    if age >= 18 and rng.random() < 0.06:
        visit.experience = experience_answers(rng)


def phq9_answers(life: Life, rng: random.Random, day: int, depressed: bool) -> tuple[int, ...]:
    """Nine item scores (0-3) summing to a total drawn from the person's state."""
    if depressed:
        treated = any(day - m.start > 60 for m in life.active_meds(day, ("sertraline",
                                                                          "fluoxetine")))
        total = round(rng.gauss(8 if treated else 14, 3.5))
    else:
        total = int(rng.expovariate(1 / 2.5))
    total = max(0, min(27, total))
    items = [0] * 9
    while sum(items) < total:
        i = rng.randrange(9 if total > 12 else 8)
        if items[i] < 3:
            items[i] += 1
    return tuple(items)


def experience_answers(rng: random.Random) -> tuple[int, ...]:
    """Overall rating 0-10 and four agreement items on a 1-5 scale."""
    mood = rng.gauss(0, 1)
    rating = max(0, min(10, round(8.3 + 1.4 * mood)))
    return (rating,) + tuple(max(1, min(5, round(4.1 + 0.8 * mood + rng.gauss(0, 0.5))))
                             for _ in range(4))


def wants_genetic_test(life: Life, rng: random.Random, day: int) -> bool:
    """About 3% of adult clinic patients get a genetic test; more with a matching history."""
    p = 0.003
    if life.has("breast_cancer", day):
        p = 0.3
    elif life.has("hyperlipidemia", day):
        p = 0.01
    return rng.random() < p


def genetic_test(life: Life, rng: random.Random, day: int, minute: int) -> Lab:
    """A gene panel chosen from the history, with the variants found."""
    if life.has("breast_cancer", day) or (life.person.sex == "female" and rng.random() < 0.3):
        panel, found = "hboc", [k for k in ("BRCA1_c68", "BRCA1_c5266", "BRCA2_c5946")
                                if rng.random() < 0.04]
    elif life.has("hyperlipidemia", day):
        panel, found = "fh", [k for k in ("LDLR_c1775", "APOB_c10580", "PCSK9_c1120")
                              if rng.random() < 0.05]
    else:
        panel, found = "apoe", ["APOE_e4"] if rng.random() < 0.25 else []
    return Lab("genetic:" + panel, day, minute, [], found)
