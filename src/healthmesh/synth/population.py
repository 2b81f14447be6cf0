"""People and households: names, ages, sexes, addresses, phones and real-world identifiers.

The population is generated household by household (:func:`households`); a household is
drawn from its reference person's age (partner, children, an adult child or an elderly
parent living in), so that children share their parents' surname and address and each
household has one family health card number. Everything about a household comes from one
``random.Random`` seeded from ``(seed, household index)``, so households are independent
and the stream is reproducible.

Ground truth (person and household indices) never leaves this module except through
``truth/linkage.csv``; identifiers shown to sites (national id, family health card) are
keyed permutations of those indices (see :mod:`healthmesh.synth.keys`).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .epidemiology import MALE_SHARE, draw_age, pick
from .keys import Permutation, derive
from .timeline import DAYS_PER_YEAR

__all__ = ["Household", "Names", "Person", "Region", "households", "load_region"]

_POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


def _data(name: str) -> Any:
    node = resources.files(__package__).joinpath("data")
    for part in name.split("/"):
        node = node.joinpath(part)
    return json.loads(node.read_text("utf-8"))


def _rank_weights(n: int) -> list[float]:
    """Cumulative Zipf-like weights for a list ordered by popularity."""
    return list(itertools.accumulate(1.0 / (rank + 8) for rank in range(n)))


class Names:
    """The shipped name lists, with cumulative weights for fast weighted choice."""

    def __init__(self) -> None:
        given, surnames = _data("given_names.json"), _data("surnames.json")
        self.given = {"male": given["male"], "female": given["female"]}
        self.given_cum = {sex: _rank_weights(len(v)) for sex, v in self.given.items()}
        self.surnames = surnames["surnames"]
        self.surnames_cum = _rank_weights(len(self.surnames))
        self.nicknames: dict[str, list[str]] = _data("nicknames.json")["nicknames"]
        streets = _data("streets.json")
        self.streets = streets["names"]
        self.street_types = [tuple(t) for t in streets["types"]]
        self.street_type_cum = list(itertools.accumulate(streets["type_weights"]))

    def first(self, rng: random.Random, sex: str) -> str:
        return pick(rng, self.given[sex], self.given_cum[sex])

    def last(self, rng: random.Random) -> str:
        return pick(rng, self.surnames, self.surnames_cum)


@cache
def names() -> Names:
    """The shipped name lists (loaded once)."""
    return Names()


@dataclass(frozen=True)
class Region:
    """Where the population lives: cities, postal codes, phone and national id schemes."""

    name: str
    country: str
    state: str | None
    currency: str
    tz: str
    race_ethnicity: bool
    median_income: int
    national_id: dict[str, str]
    phone: str
    cities: tuple[dict[str, Any], ...]
    race: tuple[tuple[str, str, float], ...] = ()
    hispanic_share: float = 0.0
    city_cum: tuple[float, ...] = field(default=(), repr=False)
    race_cum: tuple[float, ...] = field(default=(0.0,), repr=False)


def load_region(region: str) -> Region:
    """A shipped region by name (``default``, ``uk``) or a region JSON file by path."""
    path = Path(region)
    if region.endswith(".json") and path.is_file():
        spec = json.loads(path.read_text("utf-8"))
    else:
        try:
            spec = _data(f"regions/{region}.json")
        except (FileNotFoundError, OSError):
            known = ", ".join(sorted(_shipped_regions()))
            raise ValueError(f"unknown region {region!r}: use one of {known} "
                             "or the path of a region JSON file") from None
    return _region_from_spec(spec)


def _shipped_regions() -> list[str]:
    folder = resources.files(__package__).joinpath("data").joinpath("regions")
    return [p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")]


def _region_from_spec(spec: dict[str, Any]) -> Region:
    try:
        cities = tuple(spec["cities"])
        return Region(
            name=spec["name"], country=spec["country"], state=spec.get("state"),
            currency=spec.get("currency", "USD"), tz=spec.get("tz", "+00:00"),
            race_ethnicity=bool(spec.get("race_ethnicity", False)),
            median_income=int(spec.get("median_income", 50000)),
            national_id=spec["national_id"], phone=spec.get("phone", "us"), cities=cities,
            race=tuple(tuple(r) for r in spec.get("race", ())),
            hispanic_share=float(spec.get("hispanic_share", 0.0)),
            city_cum=tuple(itertools.accumulate(c["weight"] for c in cities)),
            race_cum=tuple(itertools.accumulate(r[2] for r in spec.get("race", ()))) or (0.0,),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"invalid region specification: missing or bad field {exc}") from None


@dataclass(slots=True)
class Address:
    """A postal address (the household's); sites render it in their own style."""

    number: int
    street: str
    street_type: tuple[str, str]
    unit: str | None
    city: str
    state: str | None
    postal_code: str
    country: str


@dataclass(slots=True)
class Household:
    """People sharing an address and a family health card."""

    index: int
    key: str
    address: Address
    previous: Address | None
    moved_on: int | None
    card: str
    landline: str | None
    insured: bool
    income: int
    food_insecure: bool
    unhoused: bool
    members: list[Person] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Person:
    """One true person (ground truth; sites see noisy copies of these fields)."""

    index: int
    key: str
    household: Household
    role: str
    sex: str
    birth: int
    given: str
    middle: str | None
    family: str
    maiden: str | None
    nickname: str | None
    prefers_nickname: bool
    race: tuple[str, str] | None
    hispanic: bool
    national_id: str
    phone: str | None
    marital: str
    education: str
    guardian: Person | None = None
    death: int | None = None


class _Context:
    """What household generation needs: the region, names, permutations, the reference date."""

    def __init__(self, seed: int, region: Region, end: int) -> None:
        self.seed, self.region, self.end, self.names = seed, region, end, names()
        scheme = region.national_id["scheme"]
        size = 50_000_000 if scheme == "us-ssn" else 10_000_000
        self.national = Permutation(derive(seed, "national-id"), size)
        self.card = Permutation(derive(seed, "family-card"), 100_000_000)
        self.area_codes = {c["name"]: c.get("area_codes") or ["555"] for c in region.cities}


def households(seed: int, region: Region, end: int, patients: int) -> Iterator[Household]:
    """Households until ``patients`` people exist (the last one may be cut short)."""
    ctx = _Context(seed, region, end)
    made = 0
    for h in itertools.count():
        rng = random.Random(derive(seed, "household", h))
        house = _household(ctx, rng, h, made)
        house.members = house.members[: patients - made]
        made += len(house.members)
        yield house
        if made >= patients:
            return


def _household(ctx: _Context, rng: random.Random, h: int, first: int) -> Household:
    address = _address(ctx, rng)
    moved = rng.random() < 0.3
    house = Household(
        index=h, key=f"household-{h:07d}", address=address,
        previous=_address(ctx, rng) if moved else None,
        moved_on=ctx.end - rng.randrange(1, 3650) if moved else None,
        card=f"FHC{ctx.card(h % ctx.card.size):08d}",
        landline=_phone(ctx, rng, address.city) if rng.random() < 0.35 else None,
        insured=rng.random() < 0.88, income=_income(ctx, rng),
        food_insecure=False, unhoused=rng.random() < 0.02,
    )
    house.food_insecure = rng.random() < (0.25 if house.income < 30_000 else 0.06)
    _members(ctx, rng, house, first)
    return house


def _members(ctx: _Context, rng: random.Random, house: Household, first: int) -> None:
    age = draw_age(rng, 18, 100)
    head_sex = "male" if rng.random() < MALE_SHARE else "female"
    family = ctx.names.last(rng)
    add = _adder(ctx, rng, house, first)
    head = add("head", age, head_sex, family)
    partner = None
    if rng.random() < _partner_probability(age):
        partner = _partner(ctx, rng, add, head, age)
    else:
        head.marital = _single_status(rng, age)
    for child_age in _children_ages(rng, age):
        dad = head if head.sex == "male" else partner
        surname = dad.family if dad is not None else head.family
        child = add("child", child_age, _sex(rng), surname)
        child.guardian = head
    if 35 <= age <= 62 and rng.random() < 0.04:
        add("relative", min(99.0, age + rng.uniform(22, 35)), _sex(rng), ctx.names.last(rng))


def _adder(ctx: _Context, rng: random.Random, house: Household, first: int):  # noqa: ANN202
    def add(role: str, age: float, sex: str, family: str) -> Person:
        person = _person(ctx, rng, house, first + len(house.members), role, age, sex, family)
        house.members.append(person)
        return person

    return add


def _partner(ctx: _Context, rng: random.Random, add, head: Person, age: float) -> Person:  # noqa: ANN001
    same_sex = rng.random() < 0.04
    sex = head.sex if same_sex else ("female" if head.sex == "male" else "male")
    p_age = min(99.0, max(18.0, age + rng.gauss(-2.0 if sex == "female" else 2.0, 3.5)))
    married = rng.random() < 0.72
    partner = add("partner", p_age, sex, ctx.names.last(rng))
    head.marital = partner.marital = "M" if married else "T"
    if married and not same_sex and rng.random() < 0.75:
        wife, husband = (partner, head) if sex == "female" else (head, partner)
        wife.maiden, wife.family = wife.family, husband.family
    return partner


def _single_status(rng: random.Random, age: float) -> str:
    """Never married (S), divorced (D) or widowed (W), by age."""
    u = rng.random()
    if age >= 65:
        return "W" if u < 0.45 else "D" if u < 0.65 else "S"
    return "S" if u < 0.62 or age < 30 else "D" if u < 0.95 else "W"


def _partner_probability(age: float) -> float:
    if age < 25:
        return 0.3
    return 0.62 if age < 65 else 0.55 if age < 75 else 0.38


def _children_ages(rng: random.Random, age: float) -> list[float]:
    p = (0.0, 0.24, 0.42, 0.5, 0.28, 0.08)[min(5, max(0, int((age - 15) // 10)))] if age < 65 else 0
    if rng.random() >= p:
        return []
    count = rng.choices((1, 2, 3, 4), weights=(38, 38, 17, 7))[0]
    oldest = min(17.99, age - 18)
    ages = sorted((rng.uniform(0, oldest) for _ in range(count)), reverse=True)
    for i in range(1, len(ages)):
        if rng.random() < 0.03:
            ages[i] = ages[i - 1]  # twins: same birth date, same surname, same address
    if 45 <= age < 65 and rng.random() < 0.25:
        ages.insert(0, rng.uniform(18, 26))  # an adult child still living at home
    return ages


def _sex(rng: random.Random) -> str:
    return "male" if rng.random() < 0.512 else "female"


def _person(ctx: _Context, rng: random.Random, house: Household, index: int, role: str,
            age: float, sex: str, family: str) -> Person:
    name_list = ctx.names
    given = name_list.first(rng, sex)
    nick = name_list.nicknames.get(given)
    birth = ctx.end - int(age * DAYS_PER_YEAR)
    adult = age >= 18
    return Person(
        index=index, key=f"person-{index:08d}", household=house, role=role, sex=sex, birth=birth,
        given=given, middle=name_list.first(rng, sex) if rng.random() < 0.75 else None,
        family=family, maiden=None, nickname=rng.choice(nick) if nick else None,
        prefers_nickname=bool(nick) and rng.random() < 0.35,
        race=_race(ctx.region, rng), hispanic=rng.random() < ctx.region.hispanic_share,
        national_id=_national_id(ctx, index),
        phone=_phone(ctx, rng, house.address.city) if adult else None,
        marital="S" if adult else "U", education=_education(rng) if age >= 25 else "hs",
    )


def _race(region: Region, rng: random.Random) -> tuple[str, str] | None:
    if not region.race_ethnicity:
        return None
    code, display, _ = pick(rng, region.race, region.race_cum)
    return code, display


def _education(rng: random.Random) -> str:
    """ACS 2021, adults 25+: 9% less than high school, 28% high school, 63% more."""
    u = rng.random()
    return "less_hs" if u < 0.09 else "hs" if u < 0.37 else "more_hs"


def _income(ctx: _Context, rng: random.Random) -> int:
    return int(round(ctx.region.median_income * 2.718281828 ** rng.gauss(0.0, 0.75), -2))


def _national_id(ctx: _Context, index: int) -> str:
    if ctx.region.national_id["scheme"] == "us-ssn":
        v = ctx.national(index % ctx.national.size)
        area, group, serial = 900 + v // 500_000, (v // 10_000) % 50, v % 10_000
        return f"{area}-{group:02d}-{serial:04d}"
    return _nhs_number(ctx.national, index)


def _nhs_number(perm: Permutation, index: int) -> str:
    """An NHS number in the 999 range (never issued) with a valid modulus-11 check digit."""
    v = perm(index % perm.size)
    while True:
        digits = f"999{v:07d}"[:9]
        check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            return f"{digits[:3]} {digits[3:6]} {digits[6:]}{check}"
        v = perm(v)


def _phone(ctx: _Context, rng: random.Random, city: str) -> str:
    """A fictitious number: 555 exchange (US) or the Ofcom drama range (UK)."""
    if ctx.region.phone == "uk":
        return f"07700 9{rng.randrange(100_000):05d}"
    return f"{rng.choice(ctx.area_codes[city])}-555-{rng.randrange(10_000):04d}"


def _address(ctx: _Context, rng: random.Random) -> Address:
    region, name_list = ctx.region, ctx.names
    city = pick(rng, region.cities, region.city_cum)
    number = int(rng.paretovariate(1.2) * 10) % 2000 + 1
    unit = f"{rng.randint(1, 40)}" if rng.random() < 0.3 else None
    street_type = pick(rng, name_list.street_types, name_list.street_type_cum)
    return Address(number=number, street=rng.choice(name_list.streets), street_type=street_type,
                   unit=unit, city=city["name"], state=region.state,
                   postal_code=_postal_code(region, rng, city), country=region.country)


def _postal_code(region: Region, rng: random.Random, city: dict[str, Any]) -> str:
    district = rng.choice(city["postal_codes"])
    if region.country != "GB":
        return district
    letters = rng.choice(_POSTCODE_LETTERS) + rng.choice(_POSTCODE_LETTERS)
    return f"{district} {rng.randint(1, 9)}{letters}"
