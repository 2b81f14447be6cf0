"""The value sets cohorts use, and loading of the cohort package's data files.

The value sets themselves live in :mod:`healthmesh.terminology.valuesets` (their single
source, ``terminology/data/valuesets.json``); this module re-exports them so the cohort
language keeps its names.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from healthmesh.terminology.valuesets import ValueSet, value_set, value_sets

__all__ = ["ValueSet", "load_data", "value_set", "value_sets"]


def load_data(filename: str) -> Any:
    """A JSON file from ``healthmesh/cohorts/data``."""
    text = resources.files(__package__).joinpath("data").joinpath(filename).read_text("utf-8")
    return json.loads(text)
