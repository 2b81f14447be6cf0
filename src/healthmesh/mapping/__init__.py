"""Flat files -> FHIR: declarative YAML mappings from CSV/Parquet columns to resources.

``load(name_or_path)`` gives a checked :class:`Mapping` (a shipped mapping by id, or a
YAML file); ``run_mapping(node, mapping, files, rejects_path=...)`` loads the rows into a
node and returns :class:`MappingStats`. Shipped mappings (``data/*.yaml``): ``claims``
(claim lines -> Claim + ExplanationOfBenefit), ``wearables`` (steps, heart rate, sleep,
home blood pressure -> Observation + Device) and ``sdoh`` (screening sheets ->
Observation). See docs/how-to/map-flat-files.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from healthmesh.mapping.model import Mapping, MappingError, load_mapping, parse_mapping
from healthmesh.mapping.run import MappingStats, run_mapping

__all__ = ["Mapping", "MappingError", "MappingStats", "load", "load_mapping", "parse_mapping",
           "run_mapping", "shipped_mappings"]


def shipped_mappings() -> dict[str, str]:
    """The shipped mappings: id -> YAML text."""
    folder = resources.files(__package__).joinpath("data")
    return {item.name.removesuffix(".yaml"): item.read_text("utf-8")
            for item in folder.iterdir() if item.name.endswith(".yaml")}


def load(name_or_path: str | Path) -> Mapping:
    """A mapping file by path, or a shipped mapping by id (``claims``, ``wearables``...)."""
    path = Path(name_or_path)
    if path.is_file():
        return load_mapping(path)
    shipped = shipped_mappings()
    if str(name_or_path) in shipped:
        return parse_mapping(shipped[str(name_or_path)], f"<shipped mapping {name_or_path}>")
    raise MappingError(f"no mapping file {name_or_path} (and no shipped mapping of that "
                       f"name; shipped: {', '.join(sorted(shipped))})")
