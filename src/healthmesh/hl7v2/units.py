"""OBX-6 units to UCUM, OBX-7 reference ranges and OBX-8 abnormal flags.

Lab systems send unit texts (``mg/dl``, ``K/uL``, ``mmHg``) that are not UCUM
codes; :data:`UCUM` maps the common ones (looked up case-insensitively, since
``mg/dl`` and ``mg/dL`` mean the same). A unit outside the table keeps its text
as ``Quantity.unit`` with no code rather than a guessed one.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["INTERPRETATION", "interpretation", "quantity", "reference_range", "ucum"]

UCUM_SYSTEM = "http://unitsofmeasure.org"
_PAIRS = [
    # mass and substance concentrations
    ("mg/dL", "mg/dl"), ("g/dL", "g/dl"), ("g/L", "g/l"), ("mg/L", "mg/l"),
    ("ug/dL", "ug/dl|µg/dl|mcg/dl"), ("ug/L", "ug/l|µg/l|mcg/l"),
    ("ng/mL", "ng/ml"), ("ng/dL", "ng/dl"), ("pg/mL", "pg/ml"), ("ug/mL", "ug/ml|mcg/ml"),
    ("mmol/L", "mmol/l"), ("umol/L", "umol/l|µmol/l"), ("nmol/L", "nmol/l"),
    ("pmol/L", "pmol/l"), ("mol/L", "mol/l"), ("meq/L", "meq/l|mEq/l"),
    ("mosm/kg", "mosm/kg|mosm/kg h2o"), ("mg/(24.h)", "mg/24h|mg/24 hr"),
    # enzyme activity
    ("U/L", "u/l"), ("[IU]/L", "iu/l"), ("m[IU]/mL", "miu/ml"),
    ("u[IU]/mL", "uiu/ml|µiu/ml"), ("[IU]/mL", "iu/ml"), ("U/mL", "u/ml"),
    # counts
    ("10*3/uL", "10*3/ul|10^3/ul|x10e3/ul|x10(3)/ul|k/ul|k/mm3|thou/ul|10*3/mm3|10^3/mm3"),
    ("10*6/uL", "10*6/ul|10^6/ul|x10e6/ul|x10(6)/ul|m/ul|m/mm3|mill/ul|10*6/mm3|10^6/mm3"),
    ("10*9/L", "10*9/l|10^9/l|x10e9/l"), ("10*12/L", "10*12/l|10^12/l|x10e12/l"),
    ("/uL", "/ul|cells/ul|/mm3|cells/mm3"), ("/[HPF]", "/hpf"), ("/[LPF]", "/lpf"),
    # volumes, lengths, masses
    ("fL", "fl"), ("pg", "pg"), ("mL", "ml|cc"), ("L", "l"), ("dL", "dl"),
    ("kg", "kg|kgs"), ("g", "g|gm"), ("mg", "mg"), ("[lb_av]", "lb|lbs"),
    ("[oz_av]", "oz"), ("cm", "cm"), ("mm", "mm"), ("m", "m"), ("[in_i]", "in|inch"),
    ("kg/m2", "kg/m2|kg/m^2"), ("m2", "m2|m^2"),
    # rates, time, pressure, temperature, ratios
    ("/min", "/min|beats/min|bpm|breaths/min|{beats}/min|{breaths}/min"),
    ("mm/h", "mm/h|mm/hr"), ("mL/min", "ml/min"),
    ("mL/min/{1.73_m2}", "ml/min/1.73m2|ml/min/1.73 m2|ml/min/1.73m^2"),
    ("s", "s|sec|secs"), ("min", "min"), ("h", "h|hr|hrs"), ("d", "d|day|days"),
    ("wk", "wk|week|weeks"), ("mo", "mo|month|months"), ("a", "a|yr|year|years"),
    ("mm[Hg]", "mmhg|mm hg|mm[hg]"), ("Cel", "cel|degc|°c|deg c"),
    ("[degF]", "degf|°f|deg f"), ("%", "%|percent|pct"), ("{ratio}", "ratio"),
    ("[pH]", "ph"), ("{INR}", "inr"), ("1", "1|{titer}"),
]
UCUM: dict[str, str] = {}
for _code, _aliases in _PAIRS:
    UCUM[_code.lower()] = _code
    for _alias in _aliases.split("|"):
        UCUM.setdefault(_alias.lower(), _code)

# v2 table 0078 flags that are codes of v3 ObservationInterpretation as they stand
INTERPRETATION = frozenset((
    "<", ">", "A", "AA", "AC", "B", "CAR", "D", "DET", "E", "EX", "H", "HH", "HU", "HX", "I",
    "IND", "L", "LL", "LU", "LX", "MS", "N", "NCL", "ND", "NEG", "NR", "NS", "POS", "QCF", "R",
    "RR", "S", "SDD", "SYN-R", "SYN-S", "TOX", "U", "UNE", "VS", "W", "WR",
))
_INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*(?:-|–|_|to|\.\.)\s*({_NUMBER})\s*\S*\s*$", re.I)
_BOUND = re.compile(rf"^\s*(<=|>=|<|>|≤|≥)\s*({_NUMBER})\s*\S*\s*$")


def ucum(unit_text: str, system: str = "") -> str | None:
    """The UCUM code of an OBX-6 unit (as sent when it is marked UCUM), else None."""
    text = unit_text.strip()
    if not text:
        return None
    if system.strip().upper() in ("UCUM", "UCUM-CS"):
        return text
    return UCUM.get(text.lower()) or UCUM.get(re.sub(r"\s+", " ", text.lower()))


def quantity(value: float | int, unit_text: str, unit_system: str,
             comparator: str | None = None) -> dict[str, Any]:
    """A Quantity with the UCUM code when the unit is known."""
    out: dict[str, Any] = {"value": value}
    if comparator:
        out["comparator"] = comparator
    if unit_text:
        out["unit"] = unit_text
        code = ucum(unit_text, unit_system)
        if code is not None:
            out["system"] = UCUM_SYSTEM
            out["code"] = code
    return out


def number(text: str) -> float | int | None:
    """A decimal as int or float (None when it is not a number)."""
    text = text.strip()
    if not re.fullmatch(_NUMBER, text):
        return None
    if re.fullmatch(r"[-+]?\d+", text) and len(text.lstrip("+-")) < 16:
        return int(text)
    return float(text)


def reference_range(text: str, unit_text: str, unit_system: str) -> dict[str, Any] | None:
    """OBX-7 (``3.5-5.0``, ``70_105``, ``15.0 to 45.0``, ``<5``, ``>=60``) -> referenceRange."""
    text = text.strip()
    if not text:
        return None
    match = _RANGE.match(text)
    if match:
        low, high = number(match.group(1)), number(match.group(2))
        if low is not None and high is not None and low <= high:
            return {"low": _simple(low, unit_text, unit_system),
                    "high": _simple(high, unit_text, unit_system), "text": text}
    bound = _BOUND.match(text)
    if bound:
        value = number(bound.group(2))
        if value is not None:
            side = "high" if bound.group(1) in ("<", "<=", "≤") else "low"
            return {side: _simple(value, unit_text, unit_system), "text": text}
    return {"text": text}


def _simple(value: float | int, unit_text: str, unit_system: str) -> dict[str, Any]:
    return quantity(value, unit_text, unit_system)


def interpretation(flag: str, text: str = "") -> dict[str, Any] | None:
    """One OBX-8 abnormal flag -> CodeableConcept (v3 ObservationInterpretation)."""
    flag = flag.strip()
    if not flag:
        return None
    if flag.upper() in INTERPRETATION:
        coding: dict[str, Any] = {"system": _INTERPRETATION_SYSTEM, "code": flag.upper()}
        out: dict[str, Any] = {"coding": [coding]}
        if text and text != flag:
            out["text"] = text
        return out
    return {"text": text or flag}
