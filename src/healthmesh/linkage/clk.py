"""Cryptographic long-term keys (CLKs): records hashed into Bloom filters, as clkhash does.

For each feature the schema names, the shared secret yields a key pair through HKDF
(RFC 5869, one derivation of ``2 * features * keySize`` bytes cut into pairs in feature
order). The feature value becomes tokens (:class:`~healthmesh.linkage.schema.Comparison`);
each token sets ``k`` bit indices in a filter of ``l * 2**xorFolds`` bits:

* ``blakeHash`` — BLAKE2b keyed with the feature's first key and salted with ``"0"``,
  ``"1"``... ; the 64-byte digests read as little-endian 16-bit integers, each modulo the
  length (which must be a power of two);
* ``doubleHash`` — Schnell's double hashing ``(h1 + i*h2) mod L`` with ``h1`` =
  HMAC-SHA1 and ``h2`` = HMAC-MD5 of the token under the feature's two keys (with
  ``prevent_singularity``, ``h2 = 0`` is re-drawn from the token plus a counter byte).

The per-feature filters are ORed, XOR-folded ``xorFolds`` times and kept as ``l / 8`` bytes
in clkhash's bit order (bit 0 is the high bit of byte 0), so a CLK serialised as base64
here is byte-identical to clkhash's for the same schema, secret and record.

clkhash itself cannot be a dependency (it pins cryptography<41 and bitarray<3); the scheme
is short, so it is implemented here and checked against clkhash by tools/clkhash_compat.py.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthmesh.linkage.errors import LinkageSchemaError
from healthmesh.linkage.schema import Feature, LinkageSchema

__all__ = ["ClkEncoder", "derive_keys", "xor_fold"]

_HKDF = {"SHA256": hashes.SHA256, "SHA512": hashes.SHA512}
_BLAKE_KEY_MAX = 64
_TOKEN_CACHE_MAX = 500_000


def derive_keys(schema: LinkageSchema, secret: bytes) -> list[tuple[bytes, bytes]]:
    """One (first, second) key pair per feature, derived from ``secret`` by HKDF."""
    count = len(schema.features)
    size = schema.kdf_key_size
    algorithm = _HKDF[schema.kdf_hash]()
    if 2 * count * size > 255 * algorithm.digest_size:
        raise LinkageSchemaError(f"HKDF-{schema.kdf_hash} cannot derive {count} key pairs of "
                                 f"{size} bytes; lower kdf.keySize")
    material = HKDF(algorithm=algorithm, length=2 * count * size, salt=schema.kdf_salt,
                    info=schema.kdf_info).derive(secret)
    return [(material[2 * i * size:(2 * i + 1) * size],
             material[(2 * i + 1) * size:(2 * i + 2) * size]) for i in range(count)]


def xor_fold(bits: np.ndarray, folds: int) -> np.ndarray:
    """Fold a boolean filter onto itself ``folds`` times (first half XOR second half)."""
    for _ in range(folds):
        half = bits.shape[-1] // 2
        bits = bits[..., :half] ^ bits[..., half:]
    return bits


class ClkEncoder:
    """Encodes records (one string per schema feature) into CLKs under one secret."""

    def __init__(self, schema: LinkageSchema, secret: bytes) -> None:
        self.schema = schema
        self.length = schema.l << schema.xor_folds
        if any(f.hash_type == "blakeHash" for f in schema.features) and \
                schema.kdf_key_size > _BLAKE_KEY_MAX:
            raise LinkageSchemaError(f"blakeHash keys are at most {_BLAKE_KEY_MAX} bytes")
        self._keys = derive_keys(schema, secret)
        self._cache: dict[tuple[int, str, int], tuple[int, ...]] = {}
        self._values: dict[tuple[int, str], tuple[int, ...]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes per CLK (``l / 8``)."""
        return self.schema.l // 8

    def indices(self, record: Sequence[str]) -> set[int]:
        """The bit indices (before folding) that ``record`` sets.

        Raises ``ValueError`` naming the feature when a value breaks its format, or when
        the record has the wrong number of values.
        """
        return set(self.row(record))

    def row(self, record: Sequence[str]) -> list[int]:
        """Like :meth:`indices`, as a list that may repeat an index (cheaper to build)."""
        if len(record) != len(self.schema.features):
            raise ValueError(f"expected {len(self.schema.features)} values, got {len(record)}")
        out: list[int] = []
        for position, value in enumerate(record):
            hit = self._values.get((position, value))
            if hit is None:
                hit = self._value_indices(position, value)
            out.extend(hit)
        return out

    def _value_indices(self, position: int, value: str) -> tuple[int, ...]:
        # Names, years and postcodes repeat across records: caching a value's indices
        # (not only each token's) makes encoding several times faster.
        feature = self.schema.features[position]
        if feature.ignored or feature.comparison is None:
            return ()
        tokens = feature.comparison.tokenize(feature.prepare(value))
        found: set[int] = set()
        if tokens:
            for token, k in zip(tokens, feature.bits_per_token(len(tokens)), strict=True):
                found.update(self._token(position, feature, token, k))
        if len(self._values) >= _TOKEN_CACHE_MAX:
            self._values.clear()
        hit = self._values[(position, value)] = tuple(found)
        return hit

    def encode(self, record: Sequence[str]) -> bytes:
        """The CLK of one record as ``l / 8`` bytes (clkhash bit order)."""
        return self.pack([self.row(record)])[0].tobytes()

    def encode_many(self, records: Iterable[Sequence[str]]) -> np.ndarray:
        """CLKs of ``records`` as a ``(n, l/8)`` uint8 array; raises like :meth:`indices`."""
        return self.pack([self.row(r) for r in records])

    def pack(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """CLKs from rows of bit indices (:meth:`row`): set, XOR-fold, pack to bytes."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        bits = np.zeros((len(rows), self.length), dtype=bool)
        bits[np.repeat(np.arange(len(rows)), lengths), flat] = True
        return np.packbits(xor_fold(bits, self.schema.xor_folds), axis=1)

    def _token(self, position: int, feature: Feature, token: str, k: int) -> tuple[int, ...]:
        key = (position, token, k)
        hit = self._cache.get(key)
        if hit is None:
            data = token.encode(feature.encoding)
            first, second = self._keys[position]
            if feature.hash_type == "blakeHash":
                hit = _blake(data, k, first, self.length)
            else:
                hit = _double(data, k, first, second, self.length, feature.prevent_singularity)
            if len(self._cache) >= _TOKEN_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = hit
        return hit


def _blake(data: bytes, k: int, key: bytes, length: int) -> tuple[int, ...]:
    shorts: list[int] = []
    for i in range((k + 31) // 32):
        digest = hashlib.blake2b(data, key=key, salt=str(i).encode()).digest()
        # clkhash unpacks in native order; every platform it ships wheels for is little-endian
        shorts.extend(struct.unpack("<32H", digest))
    return tuple(s % length for s in shorts[:k])


def _double(data: bytes, k: int, key_sha1: bytes, key_md5: bytes, length: int,
            non_singular: bool) -> tuple[int, ...]:
    h1 = int.from_bytes(hmac.new(key_sha1, data, hashlib.sha1).digest(), "big") % length
    h2 = int.from_bytes(hmac.new(key_md5, data, hashlib.md5).digest(), "big") % length
    counter = 0
    while non_singular and h2 == 0:
        extra = chr(counter).encode()
        h2 = int.from_bytes(hmac.new(key_md5, data + extra, hashlib.md5).digest(), "big") % length
        counter += 1
    return tuple((h1 + i * h2) % length for i in range(k))
