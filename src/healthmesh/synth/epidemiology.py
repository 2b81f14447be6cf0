"""Epidemiological parameters of the synthetic population, with their sources.

Prevalences are age-specific curves (piecewise linear in age) of the share of people who
*have had the condition by that age*; a person's onset age is drawn from the same curve
(:meth:`Curve.onset`), so the prevalence at every age, not only at the end of the window,
follows the curve. Numbers and their sources are listed in docs/synthetic-data.md:

* age/sex pyramid: US Census Bureau, 2020 Census (5-year age groups);
* hypertension (>=140/90 or treated): NCHS Data Brief 289 (NHANES 2015-2016):
  7.5% at 18-39, 33.2% at 40-59, 63.1% at 60+, 29.0% overall;
* diabetes: CDC National Diabetes Statistics Report 2022: 3.0% (18-44), 14.5% (45-64),
  24.4% (65+);
* obesity (BMI >= 30): NHANES 2017-March 2020, 41.9% of adults;
* high LDL / hyperlipidemia: CDC (about 1 in 4 adults with high LDL);
* CKD stage 3-4: CDC Chronic Kidney Disease Surveillance System (NHANES);
* asthma 8% adults / 6.5% children, COPD ~5% (CDC BRFSS / NHIS 2021);
* depression: NIMH (8.3% major depressive episode per year), BRFSS (18.4% lifetime);
* smoking 11.5% current / ~22% former: CDC MMWR 2023 (NHIS 2021);
* mortality: Gompertz-Makeham fit to the US 2019 period life table (NVSR 70-19).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from functools import cache
from typing import TypeVar

__all__ = ["CHRONIC", "PYRAMID", "Curve", "annual_death_probability", "draw_age", "pick",
           "uniform_int"]

T = TypeVar("T")

# US 2020 Census, share (%) by 5-year age group; the last group is 85-99.
PYRAMID = (
    (0, 5.7), (5, 6.0), (10, 6.4), (15, 6.6), (20, 6.6), (25, 6.9), (30, 6.9), (35, 6.6),
    (40, 6.3), (45, 6.1), (50, 6.2), (55, 6.6), (60, 6.4), (65, 5.5), (70, 4.4), (75, 2.9),
    (80, 1.9), (85, 2.0),
)
MALE_SHARE = 0.494


def pick(rng: random.Random, items: Sequence[T], cum_weights: Sequence[float]) -> T:
    """A weighted choice from precomputed cumulative weights (faster than ``rng.choices``)."""
    i = bisect.bisect(cum_weights, rng.random() * cum_weights[-1])
    return items[min(i, len(items) - 1)]


def uniform_int(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]`` (like ``rng.randint``, several times faster)."""
    return lo + int(rng.random() * (hi - lo + 1))


@cache
def _age_groups(minimum: int, maximum: int) -> tuple[list[tuple[float, float]], list[float]]:
    groups = [(lo, min(lo + (15 if lo == 85 else 5), maximum), w) for lo, w in PYRAMID]
    groups = [(max(lo, minimum), hi, w * (hi - max(lo, minimum)) / (hi - lo))
              for lo, hi, w in groups if hi > minimum and lo < maximum]
    return [(lo, hi) for lo, hi, _ in groups], list(itertools.accumulate(g[2] for g in groups))


def draw_age(rng: random.Random, minimum: int = 0, maximum: int = 100) -> float:
    """An age in years drawn from the pyramid, restricted to ``[minimum, maximum)``."""
    groups, cum = _age_groups(minimum, maximum)
    lo, hi = pick(rng, groups, cum)
    return lo + rng.random() * (hi - lo)


class Curve:
    """A piecewise-linear, non-decreasing function of age giving a probability."""

    __slots__ = ("ages", "values")

    def __init__(self, points: tuple[tuple[float, float], ...]) -> None:
        self.ages = [a for a, _ in points]
        self.values = [v for _, v in points]

    def __call__(self, age: float) -> float:
        ages, values = self.ages, self.values
        if age <= ages[0]:
            return values[0]
        if age >= ages[-1]:
            return values[-1]
        i = bisect.bisect_right(ages, age)
        a0, a1, v0, v1 = ages[i - 1], ages[i], values[i - 1], values[i]
        return v0 + (v1 - v0) * (age - a0) / (a1 - a0)

    def onset(self, rng: random.Random, age: float) -> float:
        """Onset age of someone who has the condition at ``age``: P(onset <= a) = p(a)/p(age)."""
        target = rng.random() * self(age)
        ages, values = self.ages, self.values
        for i in range(1, len(ages)):
            if values[i] >= target and ages[i - 1] < age:
                v0, v1 = values[i - 1], values[i]
                frac = 0.0 if v1 == v0 else max(0.0, (target - v0) / (v1 - v0))
                return min(age, ages[i - 1] + frac * (ages[i] - ages[i - 1]))
        return age


# Share of people who have had the condition by a given age (before risk-factor multipliers).
CHRONIC: dict[str, Curve] = {
    "hypertension": Curve(((18, 0.0), (20, 0.03), (30, 0.055), (39, 0.11), (50, 0.28),
                           (59, 0.44), (70, 0.62), (80, 0.73), (95, 0.78))),
    "diabetes": Curve(((18, 0.0), (20, 0.004), (30, 0.012), (44, 0.05), (54, 0.12), (64, 0.18),
                       (75, 0.26), (95, 0.26))),
    "hyperlipidemia": Curve(((20, 0.0), (30, 0.06), (40, 0.14), (50, 0.26), (65, 0.42),
                             (95, 0.45))),
    "ckd": Curve(((30, 0.0), (40, 0.008), (60, 0.04), (70, 0.11), (80, 0.25), (95, 0.38))),
    "asthma": Curve(((1, 0.0), (5, 0.04), (12, 0.075), (95, 0.08))),
    "copd": Curve(((40, 0.0), (50, 0.02), (65, 0.065), (80, 0.11), (95, 0.12))),
    "depression": Curve(((12, 0.0), (18, 0.04), (30, 0.09), (60, 0.13), (95, 0.14))),
    "cad": Curve(((40, 0.0), (55, 0.03), (70, 0.10), (85, 0.18), (95, 0.2))),
    "breast_cancer": Curve(((30, 0.0), (50, 0.012), (70, 0.045), (95, 0.07))),
    "prostate_cancer": Curve(((45, 0.0), (65, 0.045), (80, 0.11), (95, 0.13))),
    "colorectal_cancer": Curve(((40, 0.0), (65, 0.006), (85, 0.016), (95, 0.02))),
    "lung_cancer": Curve(((45, 0.0), (70, 0.006), (85, 0.011), (95, 0.012))),
}
CANCERS = ("breast_cancer", "prostate_cancer", "colorectal_cancer", "lung_cancer")
SEX_SPECIFIC = {"breast_cancer": "female", "prostate_cancer": "male"}

# Risk multipliers, chosen so that the population-average multiplier stays close to 1
# (obesity ~42% of adults, current smokers ~12%, former ~22%).
OBESITY_RR = {"hypertension": (1.4, 0.72), "diabetes": (1.6, 0.57), "ckd": (1.2, 0.86)}
SMOKING_RR = {"copd": {"current": 3.0, "former": 1.8, "never": 0.45},
              "lung_cancer": {"current": 6.0, "former": 2.5, "never": 0.15},
              "cad": {"current": 1.6, "former": 1.2, "never": 0.85}}
COMORBID_RR = {"ckd": (("hypertension", 1.6), ("diabetes", 1.8)),
               "cad": (("hypertension", 1.5), ("diabetes", 1.5))}

# Smoking status by age (current, former) among adults: CDC MMWR 72(18), 2023.
SMOKING_BY_AGE = ((18, 0.06, 0.03), (25, 0.11, 0.10), (45, 0.14, 0.22), (65, 0.08, 0.40))

# Deaths: Gompertz-Makeham annual probability, roughly the US 2019 life table.
_MAKEHAM, _GOMPERTZ_A, _GOMPERTZ_B = 0.0005, 6.1e-5, 0.085
DEATH_RR = {"diabetes": 1.5, "ckd": 1.6, "copd": 1.8, "cad": 1.5, "lung_cancer": 4.0,
            "colorectal_cancer": 2.0, "breast_cancer": 1.3, "prostate_cancer": 1.2}


def annual_death_probability(age: float) -> float:
    """Probability of dying within one year at ``age`` (infant mortality 0.56% in year 0)."""
    if age < 1:
        return 0.0056
    return min(0.6, _MAKEHAM + _GOMPERTZ_A * math.exp(_GOMPERTZ_B * age))


def smoking_status(rng: random.Random, age: float) -> str:
    """'current', 'former' or 'never' for an adult of ``age``."""
    current = former = 0.0
    for lo, c, f in SMOKING_BY_AGE:
        if age >= lo:
            current, former = c, f
    u = rng.random()
    return "current" if u < current else "former" if u < current + former else "never"


def adult_bmi(rng: random.Random) -> float:
    """Adult BMI: log-normal with median 28.8 so that ~42% are >= 30 (NHANES 2017-2020)."""
    return round(min(60.0, max(16.0, math.exp(rng.gauss(math.log(28.8), 0.2)))), 1)


def child_bmi(rng: random.Random, age: float) -> float:
    """Child BMI: a rough age curve (dip at 5-6 years) with ~20% above 30 at 18."""
    median = 17.0 - 1.0 * max(0.0, 6 - abs(age - 6)) / 6 + 0.45 * max(0.0, age - 6)
    return round(max(12.0, median * math.exp(rng.gauss(0.0, 0.15))), 1)


def adult_height(rng: random.Random, sex: str) -> float:
    """Adult height in cm (NHANES means 175.4 cm men, 161.7 cm women)."""
    return round(rng.gauss(175.4, 7.5) if sex == "male" else rng.gauss(161.7, 7.0), 1)


def child_height(adult: float, age: float) -> float:
    """Height of a child of ``age`` who will reach ``adult`` cm (a smooth growth curve)."""
    share = min(1.0, 0.29 + 0.71 * (1 - math.exp(-age / 5.5)) ** 1.15) if age < 18 else 1.0
    return round(adult * share, 1)
