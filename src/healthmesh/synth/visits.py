"""Building blocks shared by the encounter schedulers (clinic, hospital, programmes)."""

from __future__ import annotations

import math
import random

from .clinical import Cond, Life, Med, Visit, blood_pressure, heart_rate
from .epidemiology import uniform_int
from .timeline import year_of, year_start

__all__ = ["acute_case_visit", "new_visit", "poisson", "post_discharge_followup", "prescribe",
           "years"]

SLOTS = tuple(range(8 * 60, 17 * 60, 15))


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method; the rates here are small)."""
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def years(life: Life) -> list[tuple[int, int, int]]:
    """(first day, last day, year) of each calendar year the person is alive in the window."""
    out = []
    for year in range(year_of(life.first), year_of(life.last) + 1):
        lo, hi = max(life.first, year_start(year)), min(life.last, year_start(year + 1) - 1)
        if lo <= hi:
            out.append((lo, hi, year))
    return out


def new_visit(life: Life, rng: random.Random, site: str, cls: str, kind: str, day: int,
               practitioner: int, minutes: int = 20) -> Visit:
    minute = SLOTS[int(rng.random() * len(SLOTS))]
    end_minute = min(1439, minute + minutes + int(rng.random() * 20))
    visit = Visit(site, cls, kind, day, minute, day, end_minute, practitioner)
    life.visits.append(visit)
    return visit


def prescribe(life: Life, rng: random.Random, visit: Visit, key: str, reason: Cond | None,
               start: int, chronic: bool = True) -> Med:
    end = None if chronic else start + uniform_int(rng, 7, 14)
    if chronic and rng.random() < 0.08:
        end = start + uniform_int(rng, 120, 1500)
    med = Med(key, start, end, reason, visit.site, chronic)
    life.meds.append(med)
    visit.meds.append(med)
    return med


def post_discharge_followup(life: Life, rng: random.Random, day: int, new: list[Cond]) -> None:
    """A clinic visit after a hospital stay that records conditions diagnosed there."""
    if not life.uses["clinic"] or day > life.last:
        return
    visit = new_visit(life, rng, "clinic", "AMB", "followup", day, life.person.index % 997)
    visit.reason = new[0] if new else None
    visit.diagnoses.extend(new)
    visit.bp = blood_pressure(life, day, rng)
    visit.heart_rate = heart_rate(life, rng, day)
    visit.cost = round(rng.uniform(90, 170), 2)




def acute_case_visit(life: Life, rng: random.Random, case: Cond) -> None:
    """A clinic visit at which a notifiable infection is diagnosed."""
    if not life.uses["clinic"] or not life.first <= case.onset <= life.last:
        return
    visit = new_visit(life, rng, "clinic", "AMB", "problem", case.onset, life.person.index % 997)
    visit.reason = case
    visit.diagnoses.append(case)
    if life.age(case.onset) >= 3:
        visit.bp = blood_pressure(life, case.onset, rng)
    visit.heart_rate = heart_rate(life, rng, case.onset)
    visit.cost = round(rng.uniform(80, 150), 2)
