"""De-identification of FHIR R4 resources: Safe Harbor, date shifting, keyed pseudonyms.

:class:`Deidentifier` is the transform (one resource in, a de-identified copy out) that
``healthmesh deid`` runs over files and the egress gate can apply to what it releases.
Modules: ``deidentifier`` (profiles, the transform, security labels), ``walker`` (the
allow-list walk over the FHIR model), ``model`` (the element model), ``safelists`` (code
systems, extension URLs, states, the ZIP-3 rule and its packaged census data),
``dates`` (truncation, per-patient shifts, ages), ``pseudonyms`` (HMAC-SHA-256), ``keys``
(project key files), ``scrubber`` (pattern-based PHI scrubber for free text), ``files``
(NDJSON/Bundle input to per-type NDJSON output, rejects), ``reidentify`` (audited
pseudonym lookup), ``errors``.
"""

from __future__ import annotations

from healthmesh.privacy.deid.deidentifier import PROFILES, SECURITY_SYSTEM, Deidentifier, Profile
from healthmesh.privacy.deid.errors import DeidConfigError, DeidError, DeidKeyError
from healthmesh.privacy.deid.keys import DeidKey, generate_key_file, load_key_file
from healthmesh.privacy.deid.safelists import Zip3Rule, zip3_rule
from healthmesh.privacy.deid.scrubber import find_phi, scrub_text

__all__ = [
    "PROFILES",
    "SECURITY_SYSTEM",
    "DeidConfigError",
    "DeidError",
    "DeidKey",
    "DeidKeyError",
    "Deidentifier",
    "Profile",
    "Zip3Rule",
    "find_phi",
    "generate_key_file",
    "load_key_file",
    "scrub_text",
    "zip3_rule",
]
