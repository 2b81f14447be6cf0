"""Blocking: which record pairs are worth scoring, without plain identifiers leaving a node.

Each node computes a few *keyed* blocking keys per record — BLAKE2b-64 under a key
derived from the shared secret (so the linkage unit cannot recompute them from guessed
values) over combinations of quasi-identifiers that tolerate different noise: full birth
date; birth year with the family name's Soundex; birth year with the nickname root; both
names' Soundex codes (order-free, so swapped names meet); postal code, and the family
name's Soundex, each with the day and month of birth (a typo in the year); the national
id. Two records are candidates when they share any key.

The linkage unit sees only which records share a key, which is the documented leak of
keyed blocking: block sizes mirror the frequency of the combined values (see
docs/linkage.md). Keys whose block would hold more than ``max_block_pairs`` pairs are
skipped, which caps both the work and what very common values reveal.

:func:`lsh_keys` is the alternative computed from the CLKs alone (Hamming LSH: bands of
bits sampled with a seed), for parties that send nothing but encodings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["BLOCKING_RULES", "blocking_key", "candidate_pairs", "lsh_keys", "record_block_keys"]

BLOCKING_RULES: tuple[tuple[str, ...], ...] = (
    ("birth_year", "birth_month", "birth_day"),
    ("birth_year", "family_soundex"),
    ("birth_year", "given_root"),
    ("name_soundex",),
    ("postal_code", "birth_day_month"),
    ("family_soundex", "birth_day_month"),
    ("national_id",),
)
"""Feature combinations hashed into blocking keys (a rule with an empty value is skipped)."""

_INFO = b"healthmesh linkage blocking keys v1"


def blocking_key(secret: bytes) -> bytes:
    """The 32-byte key for blocking hashes, derived from the shared secret by HKDF."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)


def record_block_keys(features: Mapping[str, str], key: bytes,
                      rules: tuple[tuple[str, ...], ...] = BLOCKING_RULES) -> list[int]:
    """The keyed blocking keys (unsigned 63-bit integers) of one record's features."""
    out = []
    for number, rule in enumerate(rules):
        values = [features.get(name, "") for name in rule]
        if not all(values):
            continue
        text = f"{number}\x1f" + "\x1f".join(values)
        digest = hashlib.blake2b(text.encode(), key=key, digest_size=8).digest()
        out.append(int.from_bytes(digest, "big") >> 1)
    return out


def lsh_keys(clks: np.ndarray, bands: int = 40, bits: int = 14, seed: int = 0) -> list[list[int]]:
    """Hamming-LSH blocking keys of CLKs (``(n, l/8)`` uint8): one per band.

    Each band samples ``bits`` bit positions (the same for every party, from ``seed``);
    two CLKs share a band's key when they agree on all its positions.
    """
    unpacked = np.unpackbits(clks, axis=1)
    rng = np.random.default_rng(seed)
    weights = (1 << np.arange(bits, dtype=np.int64))
    keys = np.empty((clks.shape[0], bands), dtype=np.int64)
    for band in range(bands):
        positions = rng.choice(unpacked.shape[1], size=bits, replace=False)
        keys[:, band] = (unpacked[:, positions].astype(np.int64) @ weights) + (band << bits)
    return keys.tolist()


def candidate_pairs(keys_a: list[list[int]], keys_b: list[list[int]],
                    max_block_pairs: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) index pairs whose records share a blocking key.

    ``keys_a[i]`` are the keys of record ``i`` of one side. Keys whose block has more
    than ``max_block_pairs`` pairs are skipped. Returns two int64 arrays sorted by pair.
    """
    rec_a, key_a = _flatten(keys_a)
    rec_b, key_b = _flatten(keys_b)
    if not len(key_a) or not len(key_b):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.argsort(key_b, kind="stable")
    rec_b, key_b = rec_b[order], key_b[order]
    start = np.searchsorted(key_b, key_a, side="left")
    stop = np.searchsorted(key_b, key_a, side="right")
    uniq_a, inverse, count_a = np.unique(key_a, return_inverse=True, return_counts=True)
    size = (stop - start) * count_a[inverse]
    keep = (stop > start) & (size <= max_block_pairs)
    rec_a, start, stop = rec_a[keep], start[keep], stop[keep]
    widths = stop - start
    left = np.repeat(rec_a, widths)
    offsets = np.arange(widths.sum()) - np.repeat(np.cumsum(widths) - widths, widths)
    right = rec_b[np.repeat(start, widths) + offsets]
    codes = np.unique(left * (int(right.max(initial=0)) + 1) + right)
    span = int(right.max(initial=0)) + 1
    return codes // span, codes % span


def _flatten(keys: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    records = np.repeat(np.arange(len(keys), dtype=np.int64), lengths)
    flat = np.fromiter((x for k in keys for x in k), dtype=np.int64, count=int(lengths.sum()))
    return records, flat
