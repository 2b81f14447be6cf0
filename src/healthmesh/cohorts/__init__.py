"""The cohort definition language: JSON in, one DuckDB query over the analytic tables out.

A cohort is the set of patients who meet every ``include`` criterion and no ``exclude``
criterion, each with an **index date**::

    {"name": "hypertension",
     "include": [{"condition": {"codes": ["http://snomed.info/sct|38341003",
                                          "http://hl7.org/fhir/sid/icd-10-cm|I10"]}}]}

    {"name": "uncontrolled diabetes in adults",
     "index": {"date": "2024-12-31"},
     "include": [{"demographics": {"age": {"min": 18, "max": 75}, "alive": true}},
                 {"condition": {"valueset": "diabetes", "window": {"end": "0d"}}},
                 {"observation": {"valueset": "hba1c", "last": true,
                                  "window": {"start": "-365d", "end": "0d"},
                                  "value": {"op": ">=", "value": 9.0, "unit": "%"}}}],
     "exclude": [{"medication": {"valueset": "antidiabetics", "min_count": 2}}]}

    {"name": "new hypertensives, followed up",
     "index": {"first": {"condition": {"valueset": "hypertension",
                                       "window": {"from": "2020-01-01", "to": "2023-12-31"}}}},
     "include": [{"any": [{"medication": {"valueset": "antihypertensives",
                                          "window": {"start": "0d", "end": "+90d"}}},
                          {"encounter": {"class": ["AMB"],
                                         "window": {"start": "+1d", "end": "+1y"}}}]}]}

Criteria: ``condition``, ``observation``, ``medication``, ``procedure``, ``immunization``,
``encounter`` (events: ``codes`` or ``valueset``, ``window``, ``min_count``, ``status``;
observations add ``value`` thresholds, ``value_codes``, ``last`` and ``components``;
encounters add ``class``), ``demographics`` (``gender``, ``age`` at the index date,
``alive``, ``state``/``city``/``postal_code``/``country``) and ``any`` (one of several).
Codes are ``"system|code"``; a bare code matches in any system. The full language is
the JSON Schema in ``data/cohort.schema.json``; :func:`parse_cohort` checks a definition
by hand and every error message starts with the JSON path of the problem.

Semantics worth knowing:

* index date: ``"index": {"date": ...}``, or each patient's first event of a criterion
  (``"first"``), or the ``index_date`` the caller passes (algorithms pass the period end),
  else today. Windows ``start``/``end`` are offsets from it (``-365d``, ``+6m``, ``-1y``),
  ``from``/``to`` are dates, ``"period"`` is the algorithm's analysis period; all inclusive.
  No window means any time, before or after the index date.
* event dates: condition onset (else recorded date), observation effective, medication
  start, procedure performed, immunization occurrence, encounter start. A record without
  a date fails every windowed criterion.
* ``min_count`` counts distinct resources; ``last`` judges only the patient's most recent
  matching observation in the window (with a ``value`` it is the most recent one that has a
  value, in ``unit`` if one is given); ``components`` must hold on components of that same
  observation (systolic and diastolic of one blood-pressure panel).
* records in error never count (condition refuted / entered-in-error, observation
  cancelled, medication not-taken, procedure or immunization not-done, ...).
* consent: the query reads patients only from the ``allowed_patient`` temp table and
  ignores every row whose ``resource_id`` is in ``denied_resource``
  (:func:`load_consent_scope` fills both).
"""

from .compile import CompiledCohort, compile_cohort, compile_values
from .errors import CohortError
from .model import Cohort
from .schema import json_schema, parse_cohort
from .scope import load_consent_scope
from .tables import ANALYTIC_TABLES, create_analytic_tables
from .valuesets import ValueSet, value_set, value_sets

__all__ = [
    "ANALYTIC_TABLES",
    "Cohort",
    "CohortError",
    "CompiledCohort",
    "ValueSet",
    "compile_cohort",
    "compile_values",
    "create_analytic_tables",
    "json_schema",
    "load_consent_scope",
    "parse_cohort",
    "value_set",
    "value_sets",
]
