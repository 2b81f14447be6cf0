"""Errors of the record-linkage package, part of the healthmesh exception tree::

    HealthmeshError
     └── LinkageError                 record linkage cannot go on as asked
          ├── LinkageSchemaError      a linkage schema (clkhash v3 JSON) is invalid
          ├── SecretError             the shared secret file is missing, short or exposed
          ├── EncodingFileError       an encodings file cannot be read or does not fit
          │                           (also an :class:`~healthmesh.errors.InputError`)
          └── LinkageStateError       the linkage unit's state (SQLite) cannot be used,
                                      or a steward's split/merge is not possible

sqlite3, orjson and cryptography errors are translated into these where the linkage
package calls them.
"""

from __future__ import annotations

from healthmesh.errors import HealthmeshError, InputError

__all__ = [
    "EncodingFileError",
    "LinkageError",
    "LinkageSchemaError",
    "LinkageStateError",
    "SecretError",
]


class LinkageError(HealthmeshError):
    """Base of every record-linkage error."""


class LinkageSchemaError(LinkageError, ValueError):
    """A linkage schema that cannot be used; the message names the feature and problem."""


class SecretError(LinkageError):
    """The linkage secret cannot be used (missing, shorter than 32 bytes, world-readable)."""


class EncodingFileError(LinkageError, InputError):
    """An encodings file that cannot be read, or whose schema/settings do not match."""


class LinkageStateError(LinkageError):
    """The linkage state cannot be opened or changed as asked; the message says why."""
