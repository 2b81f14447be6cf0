"""FHIR R4 helpers: validation, bundles, search parameters and search queries."""
