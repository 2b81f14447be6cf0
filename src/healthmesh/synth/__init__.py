"""Synthetic population and multi-site FHIR R4 records (no real patient data, ever).

``generate()`` simulates people household by household (demographics, chronic and acute
disease with epidemiological prevalences, encounters, labs, medications, immunizations,
claims, consents, surveys, wearables, genomics) and writes the records that each kind of
site in a health data network would hold about them, each with its own identifiers and
demographic noise, so that record linkage is a real problem with a known answer
(``truth/linkage.csv``). See docs/synthetic-data.md.
"""

from .generator import FORMATS, GENERATOR_VERSION, generate
from .sites import SITE_KINDS

__all__ = ["FORMATS", "GENERATOR_VERSION", "SITE_KINDS", "generate"]
