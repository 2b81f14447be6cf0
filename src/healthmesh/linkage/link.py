"""The linkage unit's computation: encodings of many sites in, clusters of records out.

:func:`link_sites` scores every pair of sites — candidates from the keyed blocking keys
(default), from Hamming LSH on the CLKs, or every pair (``blocking="none"``) — and solves
the matching with :func:`~healthmesh.linkage.matching.greedy_clusters`. It never sees a
name or a date: only CLKs, opaque blocking keys and each site's local record ids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from healthmesh.linkage.blocking import candidate_pairs, lsh_keys
from healthmesh.linkage.matching import Node, SitePairScores, greedy_clusters
from healthmesh.linkage.similarity import Scored, dense_candidates, score_pairs

__all__ = ["BLOCKING_METHODS", "DEFAULT_THRESHOLD", "LinkStats", "SiteEncodings",
           "link_sites", "score_site_pair"]

DEFAULT_THRESHOLD = 0.75
"""Dice threshold chosen from the precision–recall sweep in docs/linkage.md."""

BLOCKING_METHODS = ("keys", "lsh", "none")


@dataclass(slots=True)
class SiteEncodings:
    """One site's records as the linkage unit holds them."""

    site: str
    ids: list[str]
    clks: np.ndarray  # (n, l/8) uint8
    blocks: list[list[int]] = field(default_factory=list)  # keyed blocking keys per record

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.clks):
            raise ValueError(f"{self.site}: {len(self.ids)} ids for {len(self.clks)} CLKs")
        if not self.blocks:
            self.blocks = [[] for _ in self.ids]


@dataclass(slots=True)
class LinkStats:
    """What a linking run did: pairs scored, pairs kept, time spent."""

    compared: int = 0
    candidates: int = 0
    seconds_scoring: float = 0.0
    seconds_total: float = 0.0

    @property
    def comparisons_per_second(self) -> float:
        """Pairs scored per second of scoring time."""
        return self.compared / self.seconds_scoring if self.seconds_scoring else 0.0


def score_site_pair(a: SiteEncodings, b: SiteEncodings, threshold: float,
                    blocking: str = "keys", max_block_pairs: int = 10_000) -> Scored:
    """Scored candidate pairs (at or above ``threshold``) between two sites."""
    if blocking == "none":
        return dense_candidates(a.clks, b.clks, threshold)
    if blocking == "lsh":
        left, right = candidate_pairs(lsh_keys(a.clks), lsh_keys(b.clks), max_block_pairs)
    elif blocking == "keys":
        left, right = candidate_pairs(a.blocks, b.blocks, max_block_pairs)
    else:
        raise ValueError(f"blocking must be one of {BLOCKING_METHODS}")
    return score_pairs(a.clks, b.clks, left, right).above(threshold)


def link_sites(sites: list[SiteEncodings], threshold: float = DEFAULT_THRESHOLD,
               blocking: str = "keys", existing: list[list[Node]] | None = None,
               new: dict[int, np.ndarray] | None = None,
               stats: LinkStats | None = None) -> list[list[Node]]:
    """Clusters of ``(site number, record index)`` over ``sites`` (greedy, one per site).

    With ``new`` (site number → indices of records not linked yet), only pairs with at
    least one new record are scored and ``existing`` clusters stay fixed: the incremental
    case. ``stats``, if given, is filled in.
    """
    stats = stats if stats is not None else LinkStats()
    started = time.perf_counter()
    pairs = []
    for i in range(len(sites)):
        for j in range(i + 1, len(sites)):
            begun = time.perf_counter()
            scored = _pair(sites[i], sites[j], i, j, threshold, blocking, new)
            stats.seconds_scoring += time.perf_counter() - begun
            stats.compared += scored.compared
            stats.candidates += len(scored.left)
            pairs.append(SitePairScores(i, j, scored))
    records: list[Node] = [(i, int(k)) for i, s in enumerate(sites) for k in
                           (range(len(s.ids)) if new is None else new.get(i, []))]
    clusters = greedy_clusters(pairs, threshold, existing or [], records)
    stats.seconds_total += time.perf_counter() - started
    return clusters


def _pair(a: SiteEncodings, b: SiteEncodings, i: int, j: int, threshold: float,
          blocking: str, new: dict[int, np.ndarray] | None) -> Scored:
    if new is None:
        return score_site_pair(a, b, threshold, blocking)
    parts = []
    new_a, new_b = new.get(i, np.empty(0, np.int64)), new.get(j, np.empty(0, np.int64))
    if len(new_a):  # new records of a against every record of b
        parts.append((new_a, np.arange(len(b.ids)), score_site_pair(
            _subset(a, new_a), b, threshold, blocking)))
    old_a = np.setdiff1d(np.arange(len(a.ids)), new_a)
    if len(new_b) and len(old_a):  # old records of a against new records of b
        parts.append((old_a, new_b, score_site_pair(
            _subset(a, old_a), _subset(b, new_b), threshold, blocking)))
    left = [ia[s.left] for ia, _, s in parts]
    right = [ib[s.right] for _, ib, s in parts]
    if not parts:
        return Scored(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), 0)
    return Scored(np.concatenate(left), np.concatenate(right),
                  np.concatenate([s.score for *_, s in parts]), sum(s.compared for *_, s in parts))


def _subset(site: SiteEncodings, index: np.ndarray) -> SiteEncodings:
    return SiteEncodings(site.site, [site.ids[k] for k in index], site.clks[index],
                         [site.blocks[k] for k in index])
