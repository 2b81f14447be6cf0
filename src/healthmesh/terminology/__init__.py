"""Terminology: the code lists healthmesh ships, code checks, maps and unit conversion.

- :mod:`.codesystems` — curated code lists (LOINC, SNOMED CT, ICD-10-CM, ICD-10, RxNorm,
  CVX) with displays, sources and syntax checks (LOINC mod-10, SNOMED CT Verhoeff);
- :mod:`.valuesets` — the value sets of the indicators and cohorts (the single source the
  cohort language loads);
- :mod:`.conceptmaps` — SNOMED CT <-> ICD-10-CM translation;
- :mod:`.checks` — unknown/malformed codes recorded as warnings on each written resource;
- :mod:`.local` — the node's local lab code -> LOINC table;
- :mod:`.units` — UCUM conversion, including mass <-> substance concentration by molar mass;
- :mod:`.operations` — ``$lookup``, ``$validate-code`` and ``$translate`` as Parameters.

None of it is a full terminology server: the lists are curated subsets, each with its
source noted (see docs/terminology.md).
"""

from healthmesh.terminology.checks import (
    WARNING_EXTENSION,
    WARNING_SYSTEM,
    CodeWarning,
    annotate,
    code_warnings,
    warnings_in,
)
from healthmesh.terminology.codesystems import (
    CVX,
    ICD10,
    ICD10CM,
    LOINC,
    RXNORM,
    SNOMED,
    CodeSystem,
    code_system,
    code_systems,
    resolve_system,
)
from healthmesh.terminology.conceptmaps import Translation, translate
from healthmesh.terminology.errors import TerminologyError, UnitError
from healthmesh.terminology.local import LocalCodes
from healthmesh.terminology.units import convert, quantity, ucum_code
from healthmesh.terminology.valuesets import ValueSet, value_set, value_set_by_url, value_sets

__all__ = [
    "CVX",
    "ICD10",
    "ICD10CM",
    "LOINC",
    "RXNORM",
    "SNOMED",
    "WARNING_EXTENSION",
    "WARNING_SYSTEM",
    "CodeSystem",
    "CodeWarning",
    "LocalCodes",
    "TerminologyError",
    "Translation",
    "UnitError",
    "ValueSet",
    "annotate",
    "code_system",
    "code_systems",
    "code_warnings",
    "convert",
    "quantity",
    "resolve_system",
    "translate",
    "ucum_code",
    "value_set",
    "value_set_by_url",
    "value_sets",
    "warnings_in",
]
