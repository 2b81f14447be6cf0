"""The parsed form of a cohort definition: what :mod:`.schema` returns and :mod:`.compile`
turns into SQL. Every value here has been checked; nothing is a raw string from the caller
except codes and other literals, which the compiler binds as parameters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

__all__ = [
    "EVENT_KINDS",
    "AnyOf",
    "Cohort",
    "CodeSet",
    "Component",
    "Criterion",
    "Demographics",
    "Event",
    "Offset",
    "Threshold",
    "Window",
]

EVENT_KINDS = ("condition", "observation", "medication", "procedure", "immunization", "encounter")
PLACES = ("state", "city", "postal_code", "country")


@dataclass(frozen=True, slots=True)
class CodeSet:
    """Codes as parallel tuples; an empty system matches any system."""

    systems: tuple[str, ...]
    codes: tuple[str, ...]
    valueset: str | None = None


@dataclass(frozen=True, slots=True)
class Offset:
    """A signed distance from the index date: ``amount`` days, weeks, months or years."""

    amount: int
    unit: Literal["d", "w", "m", "y"]

    def approx_days(self) -> float:
        return self.amount * {"d": 1.0, "w": 7.0, "m": 30.44, "y": 365.25}[self.unit]


@dataclass(frozen=True, slots=True)
class Window:
    """Inclusive date bounds: relative offsets, absolute dates, or the algorithm's period."""

    kind: Literal["relative", "absolute", "period"]
    start: Offset | date | None = None
    end: Offset | date | None = None


@dataclass(frozen=True, slots=True)
class Threshold:
    op: Literal["<", "<=", ">", ">=", "="]
    value: float
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Component:
    codes: CodeSet
    value: Threshold


@dataclass(frozen=True, slots=True)
class Event:
    """A criterion over one event table: at least ``min_count`` matching resources."""

    kind: str
    codes: CodeSet | None
    window: Window | None = None
    min_count: int = 1
    status: tuple[str, ...] | None = None
    value: Threshold | None = None
    value_codes: CodeSet | None = None
    last: bool = False
    components: tuple[Component, ...] = ()
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Demographics:
    gender: tuple[str, ...] | None = None
    age_min: int | None = None
    age_max: int | None = None
    alive: bool | None = None
    places: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Criterion, ...]


Criterion = Event | Demographics | AnyOf


@dataclass(frozen=True, slots=True)
class Cohort:
    name: str
    description: str = ""
    index_date: date | None = None
    index_event: Event | None = None
    include: tuple[Criterion, ...] = ()
    exclude: tuple[Criterion, ...] = ()
