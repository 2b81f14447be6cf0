"""Errors of FHIR de-identification, part of the healthmesh exception tree::

    HealthmeshError
     └── PrivacyError                    (healthmesh.privacy.errors)
          └── DeidError                  a resource cannot be de-identified as asked
               ├── DeidKeyError          missing, malformed or unsafe key file
               └── DeidConfigError       unknown profile, bad option or configuration file
"""

from __future__ import annotations

from healthmesh.privacy.errors import PrivacyError

__all__ = ["DeidConfigError", "DeidError", "DeidKeyError"]


class DeidError(PrivacyError):
    """A resource or input that cannot be de-identified; the message says why."""


class DeidKeyError(DeidError):
    """A pseudonym key file that is missing, malformed, or readable by other users."""


class DeidConfigError(DeidError, ValueError):
    """An unknown profile, a bad option, or a broken configuration file."""
