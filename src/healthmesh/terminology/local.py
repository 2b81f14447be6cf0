"""A node's own lab codes mapped to LOINC: ``FOLDER/terminology/local-loinc.csv``.

Laboratories send their in-house codes (``GLU``, ``K+``, ``HBA1C-IFCC``). The node keeps a
CSV table with the columns ``system,code,loinc,unit`` (and optionally ``display``): each row
says that the local ``system|code`` is the LOINC code ``loinc`` and that its values are
stored in the UCUM ``unit`` (empty: leave units alone). At ingest, :meth:`LocalCodes.apply`
adds the LOINC coding next to the original one (the original is kept, first) and converts the
value to ``unit`` when it was reported in another unit, using the analyte's molar mass when
the conversion needs one (mg/dL -> mmol/L)::

    system,code,loinc,unit
    urn:oid:1.2.3.4.5,GLU,2339-0,mg/dL
    urn:oid:1.2.3.4.5,CHOL-SI,14647-2,mmol/L

A malformed table is a :class:`~healthmesh.errors.ConfigError` naming the line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthmesh.errors import ConfigError
from healthmesh.terminology.codesystems import LOINC, code_system, syntax_problem
from healthmesh.terminology.errors import UnitError
from healthmesh.terminology.units import UCUM, analyte_for_loinc, convert, ucum_code

__all__ = ["LOCAL_LOINC_FILE", "LocalCode", "LocalCodes"]

LOCAL_LOINC_FILE = Path("terminology") / "local-loinc.csv"
MAX_TABLE_BYTES = 16 * 1024 * 1024
_COLUMNS = ("system", "code", "loinc", "unit")


@dataclass(frozen=True, slots=True)
class LocalCode:
    """One row: the local ``system|code`` is LOINC ``loinc``, stored in ``unit``."""

    system: str
    code: str
    loinc: str
    unit: str | None
    display: str | None


class LocalCodes:
    """The node's local-code -> LOINC table (empty when the node has none)."""

    def __init__(self, rows: list[LocalCode] | None = None) -> None:
        self._rows = {(r.system, r.code): r for r in rows or []}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, system: str, code: str) -> LocalCode | None:
        """The row for ``system|code``, or None."""
        return self._rows.get((system, code))

    @classmethod
    def for_node(cls, folder: Path) -> LocalCodes:
        """The table of the node in ``folder`` (empty when the file does not exist)."""
        path = Path(folder) / LOCAL_LOINC_FILE
        return cls.read(path) if path.exists() else cls()

    @classmethod
    def read(cls, path: Path) -> LocalCodes:
        """Read and check a table file."""
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_TABLE_BYTES // (1024 * 1024)} MiB")
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                return cls(_rows(path, csv.reader(handle)))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"{path}: not a readable UTF-8 CSV file ({exc})") from None

    def apply(self, resource: dict[str, Any]) -> dict[str, Any]:
        """``resource`` with LOINC codings (and units) for its local codes; never mutates it.

        Raises :class:`~healthmesh.terminology.errors.UnitError` when a value cannot be
        converted to the table's unit.
        """
        if not self._rows or resource.get("resourceType") != "Observation":
            return resource
        out = resource
        concept = resource.get("code")
        row = _match(self, concept)
        if row is not None and isinstance(concept, dict):
            out = {**out, "code": _with_loinc(concept, row)}
            out = _convert_value(out, row)
        components = resource.get("component")
        if isinstance(components, list):
            new = [_component(self, c) for c in components]
            if any(a is not b for a, b in zip(new, components, strict=True)):
                out = {**out, "component": new}
        return out


def _component(table: LocalCodes, component: Any) -> Any:
    row = _match(table, component.get("code") if isinstance(component, dict) else None)
    if row is None:
        return component
    return _convert_value({**component, "code": _with_loinc(component["code"], row)}, row)


def _match(table: LocalCodes, concept: Any) -> LocalCode | None:
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return None
    codings = [c for c in concept["coding"] if isinstance(c, dict)]
    if any(c.get("system") == LOINC for c in codings):
        return None  # already has a LOINC code: the sender's LOINC wins
    for coding in codings:
        row = table.get(str(coding.get("system")), str(coding.get("code")))
        if row is not None:
            return row
    return None


def _with_loinc(concept: dict[str, Any], row: LocalCode) -> dict[str, Any]:
    cs = code_system(LOINC)
    display = row.display or (cs.display(row.loinc) if cs else None)
    loinc = {"system": LOINC, "code": row.loinc, **({"display": display} if display else {})}
    return {**concept, "coding": [*concept["coding"], loinc]}


def _convert_value(element: dict[str, Any], row: LocalCode) -> dict[str, Any]:
    qty = element.get("valueQuantity")
    if row.unit is None or not isinstance(qty, dict) or not isinstance(
            qty.get("value"), int | float):
        return element
    reported = qty.get("code") or qty.get("unit")
    target = {"unit": row.unit, "system": UCUM, "code": row.unit}
    if not reported:  # no unit given: the table says what the value is in
        return {**element, "valueQuantity": {**qty, **target}}
    if ucum_code(str(reported)) == row.unit:
        return {**element, "valueQuantity": {**qty, **target}}
    item = analyte_for_loinc(row.loinc)
    try:
        value = convert(qty["value"], str(reported), row.unit,
                        analyte_name=item.name if item else None)
    except UnitError as exc:
        raise UnitError(f"local code {row.system}|{row.code} (LOINC {row.loinc}): {exc}") from None
    return {**element, "valueQuantity": {**qty, "value": value, **target}}


def _rows(path: Path, reader: Any) -> list[LocalCode]:
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"{path}: line 1: the header lacks column(s) {', '.join(missing)} "
                          f"(expected {','.join(_COLUMNS)}[,display])")
    index = {name: header.index(name) for name in (*_COLUMNS, "display") if name in header}
    rows: list[LocalCode] = []
    seen: set[tuple[str, str]] = set()
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise ConfigError(f"{path}: line {line}: {len(values)} fields, expected "
                              f"{len(header)}")
        row = _row(path, line, {k: values[i].strip() for k, i in index.items()})
        if (row.system, row.code) in seen:
            raise ConfigError(f"{path}: line {line}: {row.system}|{row.code} is listed twice")
        seen.add((row.system, row.code))
        rows.append(row)
    return rows


def _row(path: Path, line: int, v: dict[str, str]) -> LocalCode:
    where = f"{path}: line {line}"
    if not v["system"] or not v["code"]:
        raise ConfigError(f"{where}: system and code are required")
    loinc_cs = code_system(LOINC)
    assert loinc_cs is not None
    problem = syntax_problem(loinc_cs, v["loinc"]) if v["loinc"] else "is empty"
    if problem:
        raise ConfigError(f"{where}: loinc {v['loinc']!r} {problem}")
    unit = ucum_code(v["unit"]) if v["unit"] else None
    return LocalCode(v["system"], v["code"], v["loinc"], unit, v.get("display") or None)
