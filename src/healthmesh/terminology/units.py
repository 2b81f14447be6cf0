"""UCUM unit conversion for the quantities analytics use (mg/dL <-> mmol/L, lb <-> kg, ...).

Dimensional conversion is done by pint; this module adds what pint lacks:

- UCUM codes: pint does not parse UCUM (``mm[Hg]``, ``[lb_av]``, ``Cel``,
  ``{beats}/min``), so :data:`_PINT` maps each UCUM code healthmesh converts to a pint
  expression, and :func:`ucum_code` turns the unit text found in exports (``mg/dl``,
  ``bpm``, ``lbs``, ``°F``) into UCUM;
- mass <-> substance concentration: mg/dL and mmol/L differ by the analyte's molar mass,
  which no unit library can know; ``data/analytes.json`` lists the molar masses (with
  sources) and the LOINC codes of each analyte;
- scale changes that are not unit conversions: HbA1c in NGSP % vs IFCC mmol/mol follows
  the IFCC-NGSP master equation, not 1 mmol/mol = 0.1 %.

Results are rounded to 6 significant digits (the float noise of unit factors is not data).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from healthmesh.terminology.codesystems import load_data
from healthmesh.terminology.errors import UnitError

__all__ = ["UCUM", "Analyte", "analyte", "analyte_for_loinc", "convert", "quantity", "ucum_code"]

UCUM = "http://unitsofmeasure.org"

_PINT = {
    "mg/dL": "mg/dL", "g/dL": "g/dL", "g/L": "g/L", "mg/L": "mg/L", "ug/mL": "ug/mL",
    "mol/L": "mol/L", "mmol/L": "mmol/L", "umol/L": "umol/L", "nmol/L": "nmol/L",
    "meq/L": "mmol/L",  # monovalent ions (Na+, K+, Cl-): 1 mEq = 1 mmol
    "mmol/mol": "mmol/mol", "%": "percent", "1": "dimensionless",
    "kg": "kg", "g": "g", "[lb_av]": "lb", "[oz_av]": "oz",
    "m": "m", "cm": "cm", "mm": "mm", "[in_i]": "inch", "[ft_i]": "foot",
    "Cel": "degC", "[degF]": "degF", "K": "kelvin",
    "mm[Hg]": "mmHg", "kPa": "kPa",
    "/min": "1/min", "{beats}/min": "1/min", "/h": "1/hour", "/d": "1/day", "{steps}/d": "1/day",
    "s": "second", "min": "minute", "h": "hour", "d": "day",
    "kg/m2": "kg/m**2", "mL/min": "mL/min", "mL/min/{1.73_m2}": "mL/min",
}

_ALIASES = {
    "mg/dl": "mg/dL", "g/dl": "g/dL", "g/l": "g/L", "mg/l": "mg/L", "mmol/l": "mmol/L",
    "umol/l": "umol/L", "µmol/l": "umol/L", "μmol/l": "umol/L", "nmol/l": "nmol/L",
    "meq/l": "meq/L", "mmol/mol": "mmol/mol", "%": "%", "percent": "%",
    "kg": "kg", "kgs": "kg", "g": "g", "lb": "[lb_av]", "lbs": "[lb_av]", "pound": "[lb_av]",
    "pounds": "[lb_av]", "oz": "[oz_av]", "m": "m", "cm": "cm", "mm": "mm", "in": "[in_i]",
    "inch": "[in_i]", "inches": "[in_i]", "ft": "[ft_i]", "feet": "[ft_i]",
    "c": "Cel", "°c": "Cel", "cel": "Cel", "degc": "Cel", "f": "[degF]", "°f": "[degF]",
    "degf": "[degF]", "mmhg": "mm[Hg]", "mm hg": "mm[Hg]", "mm[hg]": "mm[Hg]", "kpa": "kPa",
    "bpm": "/min", "/min": "/min", "beats/min": "/min", "{beats}/min": "/min",
    "per min": "/min", "s": "s", "sec": "s", "min": "min", "mins": "min", "minutes": "min",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h", "d": "d", "day": "d",
    "days": "d", "kg/m2": "kg/m2", "kg/m²": "kg/m2", "ml/min": "mL/min",
    "ml/min/1.73m2": "mL/min/{1.73_m2}", "ml/min/{1.73_m2}": "mL/min/{1.73_m2}",
    "steps": "{steps}", "{steps}": "{steps}", "steps/day": "{steps}/d", "/d": "/d",
}


def ucum_code(text: str) -> str:
    """The UCUM code for unit text as exports write it (``mg/dl`` -> ``mg/dL``).

    Text that is already a UCUM code (or that healthmesh does not know) is returned as is.
    """
    stripped = text.strip()
    if stripped in _PINT:
        return stripped
    return _ALIASES.get(stripped.lower(), stripped)


@dataclass(frozen=True, slots=True)
class Analyte:
    """What is measured: its molar mass (g/mol) or a linear scale change, and its codes."""

    name: str
    molar_mass: float | None
    linear: dict[str, Any] | None
    loinc: tuple[str, ...]
    source: str


@cache
def _analytes() -> dict[str, Analyte]:
    raw = load_data("analytes.json")["analytes"]
    return {name: Analyte(name, v.get("molar_mass"), v.get("linear"), tuple(v["loinc"]),
                          v["source"]) for name, v in raw.items()}


def analyte(name: str) -> Analyte | None:
    """The analyte called ``name`` (``glucose``, ``cholesterol``, ...), or None."""
    return _analytes().get(name)


def analyte_for_loinc(code: str) -> Analyte | None:
    """The analyte a LOINC code measures, when healthmesh knows it."""
    for item in _analytes().values():
        if code in item.loinc:
            return item
    return None


@cache
def _registry() -> Any:
    import pint  # loading the registry takes most of a second: only when converting

    return pint.UnitRegistry()


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def convert(value: float, source: str, target: str, *, analyte_name: str | None = None) -> float:
    """``value`` in unit ``source`` expressed in ``target`` (UCUM codes or export unit text).

    ``analyte_name`` is needed to convert between mass and substance concentration
    (``mg/dL`` <-> ``mmol/L``) and for the HbA1c % <-> mmol/mol scale.
    """
    src, dst = ucum_code(source), ucum_code(target)
    if src == dst:
        return value
    item = _analytes().get(analyte_name) if analyte_name else None
    if analyte_name and item is None:
        known = ", ".join(sorted(_analytes()))
        raise UnitError(f"unknown analyte {analyte_name!r} (known: {known})")
    if item is not None and item.linear is not None:
        return _linear(value, src, dst, item)
    return _round(_pint_convert(value, src, dst, item))


def _linear(value: float, src: str, dst: str, item: Analyte) -> float:
    rule = item.linear or {}
    if (src, dst) == (rule["from"], rule["to"]):  # e.g. NGSP % -> IFCC mmol/mol
        return _round((value - rule["offset"]) / rule["scale"])
    if (src, dst) == (rule["to"], rule["from"]):
        return _round(value * rule["scale"] + rule["offset"])
    raise UnitError(f"{item.name} converts only between {rule['from']} and {rule['to']}, "
                    f"not {src} -> {dst}")


def _pint_convert(value: float, src: str, dst: str, item: Analyte | None) -> float:
    scale, offset = _linear_factors(src, dst, item.molar_mass if item else None,
                                    item.name if item else None)
    return value * scale + offset


@cache
def _linear_factors(src: str, dst: str, molar_mass: float | None,
                    name: str | None) -> tuple[float, float]:
    """``(scale, offset)`` with ``dst = src * scale + offset``, found once per unit pair.

    Every UCUM unit healthmesh converts is linear or affine (temperatures) in the others,
    so two points computed by pint give the conversion; pint's own conversion costs about
    a millisecond, too slow to run per row of a large file.
    """
    zero = _pint_point(0.0, src, dst, molar_mass, name)
    return _pint_point(1.0, src, dst, molar_mass, name) - zero, zero


def _pint_point(value: float, src: str, dst: str, molar_mass: float | None,
                name: str | None) -> float:
    import pint

    for unit in (src, dst):
        if unit not in _PINT:
            raise UnitError(f"unit {unit!r} is not supported for conversion "
                            f"(supported UCUM units: {', '.join(sorted(_PINT))})")
    reg = _registry()
    qty = reg.Quantity(value, _PINT[src])
    target = reg.Unit(_PINT[dst])
    try:
        return float(qty.to(target).magnitude)
    except pint.DimensionalityError:
        pass
    mass, substance = reg.Unit("g/L").dimensionality, reg.Unit("mol/L").dimensionality
    pair = (qty.dimensionality, target.dimensionality)
    if pair not in ((mass, substance), (substance, mass)):
        raise UnitError(f"cannot convert {src} to {dst}: different dimensions") from None
    if molar_mass is None:
        raise UnitError(f"converting {src} to {dst} needs the analyte's molar mass: "
                        "name the analyte (e.g. glucose, cholesterol)")
    molar = reg.Quantity(molar_mass, "g/mol")
    qty = qty / molar if pair[0] == mass else qty * molar
    return float(qty.to(target).magnitude)


def quantity(value: float, unit: str, *, to: str | None = None,
             analyte_name: str | None = None) -> dict[str, Any]:
    """A FHIR Quantity with a UCUM code, converted to ``to`` when given."""
    code = ucum_code(unit)
    if to is not None:
        value, code = convert(value, code, to, analyte_name=analyte_name), ucum_code(to)
    out: dict[str, Any] = {"value": value, "unit": code}
    if code in _PINT or code.startswith("{"):
        out.update(system=UCUM, code=code)
    return out
