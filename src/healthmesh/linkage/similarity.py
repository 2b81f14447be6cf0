"""Dice similarity of CLKs: ``2 |A ∧ B| / (|A| + |B|)`` on packed bits.

CLKs are ``(n, l/8)`` uint8 arrays (clkhash bit order). Two ways to score:

* :func:`score_pairs` — given candidate pairs (from blocking), gathers both rows as
  64-bit words, ANDs them and counts bits with ``np.bitwise_count``, in chunks that stay
  in cache;
* :func:`dense_candidates` — every pair of two CLK sets, in tiles: the intersection
  counts of a tile are one float32 matrix product of the unpacked bits (exact: counts are
  at most ``l`` ≤ 2**24), which BLAS runs several times faster than word-wise popcounts
  (measured: ~50 M vs ~13 M pairs/s on two cores).

Both return how many pairs they scored, so comparison rates are counted honestly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Scored", "dense_candidates", "dice", "popcounts", "score_pairs"]

_CHUNK = 16_384
_TILE = 2048


@dataclass(frozen=True, slots=True)
class Scored:
    """Candidate pairs with their Dice scores, and how many pairs were scored in all."""

    left: np.ndarray  # int64 indices into the first CLK set
    right: np.ndarray  # int64 indices into the second
    score: np.ndarray  # float32 Dice coefficients
    compared: int

    def above(self, threshold: float) -> Scored:
        """Only the pairs scoring at least ``threshold``."""
        keep = self.score >= threshold
        return Scored(self.left[keep], self.right[keep], self.score[keep], self.compared)


def _words(clks: np.ndarray) -> np.ndarray:
    clks = np.ascontiguousarray(clks, dtype=np.uint8)
    if clks.ndim != 2 or clks.shape[1] % 8:
        raise ValueError("CLKs must be a 2-D uint8 array with a multiple of 64 bits per row")
    return clks.view(np.uint64)


def popcounts(clks: np.ndarray) -> np.ndarray:
    """Bits set in each CLK (int32)."""
    return np.bitwise_count(_words(clks)).sum(axis=1, dtype=np.int32)


def dice(a: bytes, b: bytes) -> float:
    """The Dice coefficient of two CLKs given as bytes (0.0 when both are empty)."""
    x = np.frombuffer(a, dtype=np.uint8)
    y = np.frombuffer(b, dtype=np.uint8)
    if x.shape != y.shape:
        raise ValueError("CLKs of different lengths cannot be compared")
    total = int(np.bitwise_count(x).sum()) + int(np.bitwise_count(y).sum())
    return 2.0 * int(np.bitwise_count(x & y).sum()) / total if total else 0.0


def score_pairs(clks_a: np.ndarray, clks_b: np.ndarray, left: np.ndarray,
                right: np.ndarray) -> Scored:
    """Dice of each candidate pair ``(clks_a[left[i]], clks_b[right[i]])``."""
    words_a, words_b = _words(clks_a), _words(clks_b)
    count_a, count_b = popcounts(clks_a), popcounts(clks_b)
    scores = np.empty(len(left), dtype=np.float32)
    width = words_a.shape[1]
    buf_a = np.empty((_CHUNK, width), dtype=np.uint64)
    buf_b = np.empty((_CHUNK, width), dtype=np.uint64)
    for start in range(0, len(left), _CHUNK):
        ia, ib = left[start:start + _CHUNK], right[start:start + _CHUNK]
        k = len(ia)
        np.take(words_a, ia, axis=0, out=buf_a[:k])
        np.take(words_b, ib, axis=0, out=buf_b[:k])
        np.bitwise_and(buf_a[:k], buf_b[:k], out=buf_a[:k])
        common = np.bitwise_count(buf_a[:k]).sum(axis=1, dtype=np.int32)
        total = count_a[ia] + count_b[ib]
        scores[start:start + k] = np.where(total > 0, 2.0 * common / np.maximum(total, 1), 0.0)
    return Scored(np.asarray(left, np.int64), np.asarray(right, np.int64), scores, len(left))


def dense_candidates(clks_a: np.ndarray, clks_b: np.ndarray, threshold: float) -> Scored:
    """Every pair of the two sets scored; the pairs at or above ``threshold`` returned."""
    _words(clks_a), _words(clks_b)  # shape checks
    count_a = popcounts(clks_a).astype(np.float32)
    count_b = popcounts(clks_b).astype(np.float32)
    bits_b = [np.unpackbits(clks_b[j:j + _TILE], axis=1).astype(np.float32).T.copy()
              for j in range(0, len(clks_b), _TILE)]
    lefts, rights, scores = [], [], []
    for i in range(0, len(clks_a), _TILE):
        tile_a = np.unpackbits(clks_a[i:i + _TILE], axis=1).astype(np.float32)
        for t, tile_b in enumerate(bits_b):
            j = t * _TILE
            common = tile_a @ tile_b
            total = count_a[i:i + len(tile_a), None] + count_b[None, j:j + tile_b.shape[1]]
            score = 2.0 * common / np.maximum(total, 1.0)
            hit_a, hit_b = np.nonzero(score >= threshold)
            lefts.append(hit_a + i)
            rights.append(hit_b + j)
            scores.append(score[hit_a, hit_b])
    if not lefts:
        return Scored(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), 0)
    return Scored(np.concatenate(lefts).astype(np.int64), np.concatenate(rights).astype(np.int64),
                  np.concatenate(scores).astype(np.float32), len(clks_a) * len(clks_b))
