"""Errors of the cohort definition language.

::

    HealthmeshError
     └── CohortError    an invalid cohort definition (the message starts with the JSON
                        path of the problem, e.g. ``include[0].observation.value: ...``)
"""

from __future__ import annotations

from healthmesh.errors import HealthmeshError

__all__ = ["CohortError"]


class CohortError(HealthmeshError):
    """An invalid cohort definition, or a valid one used where it cannot apply."""
