"""Errors of the SQL on FHIR view engine.

::

    HealthmeshError
     └── ViewError                  any view engine error
          ├── ViewDefinitionError   the ViewDefinition (or a FHIRPath in it) is invalid
          └── ViewEvaluationError   a valid view met data it cannot turn into a row
                                    (e.g. several values for a non-collection column)
"""

from __future__ import annotations

from healthmesh.errors import HealthmeshError

__all__ = ["ViewDefinitionError", "ViewError", "ViewEvaluationError"]


class ViewError(HealthmeshError):
    """Base of every view engine error."""


class ViewDefinitionError(ViewError):
    """The ViewDefinition is invalid; the message names the problem and where it is."""


class ViewEvaluationError(ViewError):
    """Evaluating a valid ViewDefinition failed on a resource; the message says why."""
