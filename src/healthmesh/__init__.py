"""healthmesh: software for health data networks.

A node holds one organisation's FHIR R4 data and serves it over the FHIR
REST API; a hub lets an analyst ask every node one question. From Python::

    import healthmesh
    hm = healthmesh.connect("http://hub:8700", "credentials.json")
    hm.count({"name": "all", "include": []}, by=["sex"], agreement="study", purpose="HRESCH")

See docs/architecture.md for how the parts fit.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "connect"]


def connect(hub_url: str | None = None, credentials: Any = None, **kwargs: Any) -> Any:
    """Connect to a network's hub (see :func:`healthmesh.network.client.connect`)."""
    from healthmesh.network.client import connect as _connect

    return _connect(hub_url, credentials, **kwargs)
