"""Errors of the terminology package::

    HealthmeshError
     └── TerminologyError          a terminology question that cannot be answered
          └── UnitError            a unit that is unknown or cannot be converted
"""

from __future__ import annotations

from healthmesh.errors import HealthmeshError

__all__ = ["TerminologyError", "UnitError"]


class TerminologyError(HealthmeshError):
    """A code, system or value set question that cannot be answered."""


class UnitError(TerminologyError):
    """A unit that healthmesh does not know, or two units that cannot be converted."""
