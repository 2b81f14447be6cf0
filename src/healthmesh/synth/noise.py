"""How each site records a person: demographic noise for record linkage.

Every site keeps its own copy of a person's demographics, typed in at registration by
different people, at different times, in different systems. :func:`record` draws that copy
from the true person with the per-site rates in :data:`PROFILES` (documented, with the
resulting cross-site disagreement rates, in docs/synthetic-data.md):

* given name replaced by the person's nickname (more often at informal sites, and mostly
  for people who go by their nickname), one-keystroke typos in given or family name
  (substitution by a neighbouring key, transposition, deletion, doubling),
  given/family swapped, a married person's maiden name (a registration older than the
  marriage), middle name kept in full, as an initial or dropped;
* birth date with day and month swapped (only when both are <= 12), a one-off typo
  (day +-1, year +-1, last two year digits transposed) or missing;
* gender missing (``unknown``); an address from before the household moved, a postal code
  typo, a missing address or phone; national id and family health card recorded only at
  some sites (with rare transcription errors);
* site conventions that are not errors: upper-case names and abbreviated street types
  at the insurer, unit on the same line or a second line, phone formats.

All draws come from the household's random stream in a fixed order over *all* site kinds,
so the copy a site gets does not depend on which other sites are generated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .population import Address, Person
from .timeline import day_str

__all__ = ["PROFILES", "NoiseProfile", "Recorded", "record"]


@dataclass(frozen=True, slots=True)
class NoiseProfile:
    """Per-record probabilities of each kind of noise at one site kind."""

    nickname_if_preferred: float = 0.5
    nickname_otherwise: float = 0.02
    typo_given: float = 0.02
    typo_family: float = 0.02
    maiden: float = 0.2
    swap_names: float = 0.004
    day_month_swap: float = 0.01
    date_typo: float = 0.008
    missing_birth_date: float = 0.0
    missing_gender: float = 0.002
    stale_address: float = 0.3
    missing_address: float = 0.02
    postcode_typo: float = 0.01
    missing_phone: float = 0.15
    national_id: float = 0.0
    national_id_typo: float = 0.005
    health_card: float = 0.0
    middle: str = "initial"
    upper: bool = False
    street_style: str = "full"


PROFILES: dict[str, NoiseProfile] = {
    "hospital": NoiseProfile(nickname_if_preferred=0.15, national_id=0.6, middle="full",
                             street_style="abbrev"),
    "clinic": NoiseProfile(nickname_if_preferred=0.6, national_id=0.3, health_card=0.7),
    "lab": NoiseProfile(nickname_if_preferred=0.2, typo_given=0.04, typo_family=0.04,
                        missing_birth_date=0.003, missing_gender=0.01, missing_address=0.3,
                        missing_phone=0.4, middle="none", street_style="abbrev"),
    "insurer": NoiseProfile(nickname_if_preferred=0.05, nickname_otherwise=0.0, maiden=0.1,
                            stale_address=0.15, missing_address=0.0, national_id=0.95,
                            health_card=0.9, middle="full", upper=True, street_style="abbrev"),
    "pharmacy": NoiseProfile(nickname_if_preferred=0.6, typo_given=0.03, typo_family=0.03,
                             missing_birth_date=0.003, missing_gender=0.01, missing_address=0.05,
                             national_id=0.1, middle="none", street_style="abbrev"),
    "dental": NoiseProfile(nickname_if_preferred=0.7, missing_birth_date=0.002,
                           missing_address=0.03, health_card=0.5, middle="none"),
    "public-health": NoiseProfile(nickname_if_preferred=0.1, maiden=0.25, national_id=0.5,
                                  health_card=0.6, middle="full", upper=False),
}

_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD):
    for _c, _ch in enumerate(_row):
        _near = [_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)]
        _near += [_KEYBOARD[rr][_c] for rr in (_r - 1, _r + 1)
                  if 0 <= rr < 3 and _c < len(_KEYBOARD[rr])]
        _NEIGHBOURS[_ch] = "".join(_near)


@dataclass(slots=True)
class Recorded:
    """A person's demographics as one site holds them (FHIR-ready fragments)."""

    given: list[str]
    family: str
    birth_date: str | None
    gender: str
    address: Address | None
    phone: str | None
    national_id: str | None
    health_card: str | None
    upper: bool
    street_style: str


def record(person: Person, site: str, rng: random.Random) -> Recorded:
    """The copy of ``person`` that ``site`` holds."""
    p = PROFILES[site]
    given, family = _names(person, p, rng)
    return Recorded(
        given=given, family=family, birth_date=_birth_date(person.birth, p, rng),
        gender="unknown" if rng.random() < p.missing_gender else person.sex,
        address=_address(person, p, rng),
        phone=None if person.phone is None or rng.random() < p.missing_phone else person.phone,
        national_id=_maybe_typo_digits(person.national_id, p, rng),
        health_card=person.household.card if rng.random() < p.health_card else None,
        upper=p.upper, street_style=p.street_style,
    )


def _names(person: Person, p: NoiseProfile, rng: random.Random) -> tuple[list[str], str]:
    first = person.given
    nick_p = p.nickname_if_preferred if person.prefers_nickname else p.nickname_otherwise
    if person.nickname and rng.random() < nick_p:
        first = person.nickname
    if rng.random() < p.typo_given:
        first = typo(first, rng)
    family = person.maiden if person.maiden and rng.random() < p.maiden else person.family
    if rng.random() < p.typo_family:
        family = typo(family, rng)
    if rng.random() < p.swap_names:
        first, family = family, first
    given = [first]
    if person.middle and p.middle != "none":
        given.append(person.middle if p.middle == "full" else person.middle[0])
    return given, family


def typo(word: str, rng: random.Random) -> str:
    """One keystroke error: neighbour-key substitution, transposition, deletion or doubling."""
    if len(word) < 3:
        return word + word[-1]
    i = rng.randrange(1, len(word))
    kind = rng.random()
    ch = word[i]
    if kind < 0.4 and ch.lower() in _NEIGHBOURS:
        return word[:i] + rng.choice(_NEIGHBOURS[ch.lower()]) + word[i + 1:]
    if kind < 0.65 and i < len(word) - 1 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind < 0.85:
        return word[:i] + word[i + 1:]
    return word[:i] + ch + word[i:]


def _birth_date(birth: int, p: NoiseProfile, rng: random.Random) -> str | None:
    u = rng.random()
    if u < p.missing_birth_date:
        return None
    u -= p.missing_birth_date
    text = day_str(birth)
    if u < p.day_month_swap:
        y, m, d = text[:4], text[5:7], text[8:10]
        return f"{y}-{d}-{m}" if int(d) <= 12 and d != m else text
    if u < p.day_month_swap + p.date_typo:
        return _date_typo(birth, text, rng)
    return text


def _date_typo(birth: int, text: str, rng: random.Random) -> str:
    """Day +-1, year +-1, or the last two digits of the year transposed."""
    kind = rng.randrange(3)
    if kind == 0 or text[5:] == "02-29":
        return day_str(birth + rng.choice((-1, 1)))
    if kind == 1:
        return f"{int(text[:4]) + rng.choice((-1, 1)):04d}{text[4:]}"
    swapped = text[:2] + text[3] + text[2] + text[4:]
    return swapped if swapped < text else day_str(birth + 1)


def _address(person: Person, p: NoiseProfile, rng: random.Random) -> Address | None:
    house = person.household
    u = rng.random()
    if u < p.missing_address:
        return None
    address = house.address
    if house.previous is not None and rng.random() < p.stale_address:
        address = house.previous
    if rng.random() < p.postcode_typo:
        code = address.postal_code
        i = rng.randrange(len(code) - 1)
        if code[i].isdigit() and code[i + 1].isdigit() and code[i] != code[i + 1]:
            code = code[:i] + code[i + 1] + code[i] + code[i + 2:]
            address = Address(address.number, address.street, address.street_type, address.unit,
                              address.city, address.state, code, address.country)
    return address


def _maybe_typo_digits(value: str, p: NoiseProfile, rng: random.Random) -> str | None:
    if rng.random() >= p.national_id:
        return None
    if rng.random() < p.national_id_typo:
        digits = [i for i, ch in enumerate(value) if ch.isdigit()]
        i = rng.choice(digits[3:])
        value = value[:i] + str((int(value[i]) + rng.randint(1, 9)) % 10) + value[i + 1:]
    return value
