"""Privacy-preserving record linkage: which records at different organisations are one person.

Each node turns its Patients' quasi-identifiers into Bloom-filter encodings (CLKs) under
a secret the linking nodes share, in the clkhash linkage-schema v3 format
(:mod:`~healthmesh.linkage.schema`, :mod:`~healthmesh.linkage.clk`,
:mod:`~healthmesh.linkage.features`, :mod:`~healthmesh.linkage.encodings`). A linkage
unit that never holds the secret scores CLK pairs by Dice similarity within keyed blocks
(:mod:`~healthmesh.linkage.blocking`, :mod:`~healthmesh.linkage.similarity`), solves a
one-record-per-site clustering (:mod:`~healthmesh.linkage.matching`,
:mod:`~healthmesh.linkage.link`), keeps people, incremental updates and stewards' splits
and merges in :class:`LinkageState`, and hands each node only its own link table.
:mod:`~healthmesh.linkage.quality` measures the result against a known truth.
See docs/linkage.md.
"""

from __future__ import annotations

from healthmesh.linkage.blocking import BLOCKING_RULES, candidate_pairs, lsh_keys
from healthmesh.linkage.clk import ClkEncoder, derive_keys
from healthmesh.linkage.encodings import (
    Reject,
    encode_patients,
    read_encodings,
    read_patient_ndjson,
    write_encodings,
)
from healthmesh.linkage.errors import (
    EncodingFileError,
    LinkageError,
    LinkageSchemaError,
    LinkageStateError,
    SecretError,
)
from healthmesh.linkage.features import FEATURES, patient_features
from healthmesh.linkage.link import (
    DEFAULT_THRESHOLD,
    LinkStats,
    SiteEncodings,
    link_sites,
    score_site_pair,
)
from healthmesh.linkage.matching import greedy_clusters
from healthmesh.linkage.quality import Quality, pairwise_quality, read_truth
from healthmesh.linkage.schema import LinkageSchema, default_schema, load_schema, parse_schema
from healthmesh.linkage.secret import create_secret, read_secret
from healthmesh.linkage.similarity import dice, popcounts
from healthmesh.linkage.state import LinkageState

__all__ = [
    "BLOCKING_RULES",
    "DEFAULT_THRESHOLD",
    "FEATURES",
    "ClkEncoder",
    "EncodingFileError",
    "LinkStats",
    "LinkageError",
    "LinkageSchema",
    "LinkageSchemaError",
    "LinkageState",
    "LinkageStateError",
    "Quality",
    "Reject",
    "SecretError",
    "SiteEncodings",
    "candidate_pairs",
    "create_secret",
    "default_schema",
    "derive_keys",
    "dice",
    "encode_patients",
    "greedy_clusters",
    "link_sites",
    "load_schema",
    "lsh_keys",
    "pairwise_quality",
    "parse_schema",
    "patient_features",
    "popcounts",
    "read_encodings",
    "read_patient_ndjson",
    "read_secret",
    "read_truth",
    "score_site_pair",
    "write_encodings",
]
