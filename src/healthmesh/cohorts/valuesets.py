"""Value sets shipped with healthmesh (``data/valuesets.json``) and shared data loading.

A value set is a named list of ``"system|code"`` strings with a title and a source note
saying where the codes come from. They are small hand-curated subsets (they cover the
synthetic population and common equivalents), not official expansions.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

__all__ = ["ValueSet", "load_data", "value_set", "value_sets"]


class ValueSet:
    """A named set of codes; ``codes`` are ``"system|code"`` strings."""

    __slots__ = ("codes", "name", "source", "title")

    def __init__(self, name: str, title: str, source: str, codes: tuple[str, ...]) -> None:
        self.name, self.title, self.source, self.codes = name, title, source, codes

    def __repr__(self) -> str:
        return f"ValueSet({self.name!r}, {len(self.codes)} codes)"


def load_data(filename: str) -> Any:
    """A JSON file from ``healthmesh/cohorts/data``."""
    text = resources.files(__package__).joinpath("data").joinpath(filename).read_text("utf-8")
    return json.loads(text)


@cache
def value_sets() -> MappingProxyType[str, ValueSet]:
    """Every shipped value set by name (read once)."""
    raw = load_data("valuesets.json")
    sets = {name: ValueSet(name, v["title"], v["source"], tuple(v["codes"]))
            for name, v in raw.items() if not name.startswith("_")}
    return MappingProxyType(sets)


def value_set(name: str) -> ValueSet | None:
    """The shipped value set ``name``, or None."""
    return value_sets().get(name)
