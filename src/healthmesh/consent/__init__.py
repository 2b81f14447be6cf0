"""Consent: the patient's FHIR R4 Consents, the network default policy, and decisions.

Pure domain code (no HTTP, no store): the egress gate builds on it. ::

    from healthmesh.consent import (AccessRequest, ConsentIndex, decide, default_policy,
                                    parse_consent, request_for_resource)

    consent = parse_consent(fhir_json)              # ConsentError if malformed/unsupported
    policy = default_policy()                       # or load_policy(node_file)
    request = AccessRequest(patient_id="p1", purpose="HRESCH", at=now_us,
                            requester="Organization/uni-research")
    decide(request, [consent], policy)              # Decision(permit, rule, consent_id, reason)

    index = ConsentIndex.from_consents(all_consents, policy)
    index.partition(cohort_ids, "HRESCH", "Organization/uni-research")  # all/partial/none
    index.decide(request_for_resource(request, resource))               # per record

Modules: :mod:`.model` (the immutable model), :mod:`.parse` (FHIR -> model),
:mod:`.policy` (defaults per purpose, ActReason hierarchy), :mod:`.decide` (the
decision) and :mod:`.match` (one provision against one request), :mod:`.index` (cohort
cache), :mod:`.labels` (sensitive categories),
:mod:`.records` (a record's attributes), :mod:`.text` (plain language).
See docs/consent.md for the semantics.
"""

from .decide import AccessRequest, Coverage, Decision, coverage, decide
from .index import CohortCoverage, ConsentIndex
from .labels import labels_for
from .model import Actor, ConsentError, DataItem, ParsedConsent, Period, Provision
from .parse import parse_consent
from .policy import Policy, PurposeRule, default_policy, load_policy
from .records import data_time, request_for_resource
from .text import describe

__all__ = [
    "AccessRequest",
    "Actor",
    "CohortCoverage",
    "ConsentError",
    "ConsentIndex",
    "Coverage",
    "DataItem",
    "Decision",
    "ParsedConsent",
    "Period",
    "Policy",
    "Provision",
    "PurposeRule",
    "coverage",
    "data_time",
    "decide",
    "default_policy",
    "describe",
    "labels_for",
    "load_policy",
    "parse_consent",
    "request_for_resource",
]
