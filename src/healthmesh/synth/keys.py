"""Deterministic seeds and keyed identifiers.

Everything random in the generator is drawn from :class:`random.Random` instances
seeded by :func:`derive` from ``(seed, stream name, index)``, so that the output depends on
the seed only (never on ``PYTHONHASHSEED``, the platform or the set of sites chosen).

Identifiers that appear in the FHIR data (Patient ids, MRNs, national ids, family health
card numbers) are *keyed permutations* of the person or household index
(:class:`Permutation`, a four-round Feistel network with cycle walking): they are unique by
construction, look random, differ between sites, and the index (the ground truth that
``truth/linkage.csv`` holds) cannot be read from them.
"""

from __future__ import annotations

import hashlib

__all__ = ["Permutation", "derive", "mix64", "text_key"]

_M64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """The splitmix64 finaliser: a fast, well-mixing bijection of 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def text_key(text: str) -> int:
    """A stable 64-bit integer for a string (BLAKE2b, independent of hash randomisation)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def derive(seed: int, *parts: int | str) -> int:
    """A 64-bit key derived from ``seed`` and any number of integer or string parts."""
    h = mix64(seed & _M64)
    for part in parts:
        value = text_key(part) if isinstance(part, str) else part
        h = mix64(h ^ (value & _M64))
    return h


class Permutation:
    """A keyed bijection of ``range(size)``: a Feistel network with cycle walking."""

    __slots__ = ("size", "_half", "_mask", "_keys")

    def __init__(self, key: int, size: int) -> None:
        if size < 2:
            raise ValueError("a permutation needs a domain of at least 2 values")
        bits = max(4, (size - 1).bit_length())
        bits += bits & 1
        self.size = size
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        self._keys = tuple(derive(key, r) for r in range(4))

    def __call__(self, n: int) -> int:
        """The image of ``n`` (``0 <= n < size``)."""
        if not 0 <= n < self.size:
            raise ValueError(f"{n} is outside the permutation domain of size {self.size}")
        x = self._encrypt(n)
        while x >= self.size:
            x = self._encrypt(x)
        return x

    def _encrypt(self, x: int) -> int:
        half, mask = self._half, self._mask
        left, right = x >> half, x & mask
        for k in self._keys:
            left, right = right, left ^ (mix64(right ^ k) & mask)
        return (left << half) | right
