"""healthmesh: software for health data networks.

A node holds one organisation's FHIR R4 data and serves it over the FHIR
REST API; see docs/architecture.md for how the parts fit.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
