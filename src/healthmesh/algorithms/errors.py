"""Errors of the federated algorithms.

::

    HealthmeshError
     └── AlgorithmError   unknown algorithm, bad parameters (the message names the
                          parameter path, e.g. ``params.strata[1]: ...``), results that
                          cannot be pooled, or a local query that failed
"""

from __future__ import annotations

from healthmesh.errors import HealthmeshError

__all__ = ["AlgorithmError"]


class AlgorithmError(HealthmeshError):
    """An algorithm cannot run with these parameters or pool these results."""
