"""Solving the matching: scored pairs → clusters holding at most one record per site.

:func:`greedy_clusters` takes every scored pair of every site pair, best first, and joins
the two records' clusters unless that would put two records of one site together (the
conflict rule), which for two sites is greedy one-to-one matching and for many sites is
the greedy multi-party solver anonlink also uses. Clusters that already exist (people
linked earlier) can be passed in: new records join them, but two existing people are
never merged automatically — that is a data steward's decision
(:meth:`~healthmesh.linkage.state.LinkageState.merge`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from healthmesh.linkage.similarity import Scored

__all__ = ["SitePairScores", "greedy_clusters"]

Node = tuple[int, int]  # (site number, record index)


@dataclass(frozen=True, slots=True)
class SitePairScores:
    """Scored candidate pairs between site number ``a`` and site number ``b``."""

    a: int
    b: int
    scored: Scored


class _Clusters:
    """Union-find over records, each root knowing its sites and whether it is fixed."""

    def __init__(self, support: float) -> None:
        self.parent: dict[Node, Node] = {}
        self.sites: dict[Node, int] = {}  # bit mask of site numbers
        self.fixed: dict[Node, bool] = {}
        self.members: dict[Node, list[Node]] = {}
        self.edges: set[tuple[Node, Node]] = set()
        self.support = support

    def add(self, node: Node, fixed: bool = False) -> None:
        if node not in self.parent:
            self.parent[node] = node
            self.sites[node] = 1 << node[0]
            self.fixed[node] = fixed
            self.members[node] = [node]

    def join(self, root: Node, node: Node) -> None:
        """Put the (new, single) ``node`` into the existing cluster ``root``."""
        self.parent[node] = root
        self.sites[root] |= 1 << node[0]
        self.members[root].extend(self.members.pop(node))

    def supported(self, rx: Node, ry: Node) -> bool:
        """Whether enough pairs across the two clusters scored above the threshold."""
        xs, ys = self.members[rx], self.members[ry]
        if self.support <= 0.0 or (len(xs) == 1 and len(ys) == 1):
            return True
        linked = sum((min(x, y), max(x, y)) in self.edges for x in xs for y in ys)
        return linked >= self.support * len(xs) * len(ys)

    def find(self, node: Node) -> Node:
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, x: Node, y: Node) -> bool:
        rx, ry = self.find(x), self.find(y)
        if rx == ry or self.sites[rx] & self.sites[ry] or (self.fixed[rx] and self.fixed[ry]):
            return False
        if not self.supported(rx, ry):
            return False
        if self.fixed[ry]:
            rx, ry = ry, rx
        self.parent[ry] = rx
        self.sites[rx] |= self.sites[ry]
        self.members[rx].extend(self.members.pop(ry))
        return True


def greedy_clusters(pairs: Iterable[SitePairScores], threshold: float,
                    existing: Sequence[Sequence[Node]] = (),
                    records: Iterable[Node] = (), support: float = 0.0) -> list[list[Node]]:
    """Clusters of records from scored pairs at or above ``threshold``.

    With ``support`` above 0, two clusters merge only if at least that share of the
    record pairs across them scored at or above the threshold (1.0 is anonlink's
    complete-linkage rule). The default, 0, is plain greedy single linkage, which found
    more true links on the synthetic population (noisy records rarely link to every
    other copy of the person). ``existing`` are
    clusters fixed earlier (never merged with each other); ``records`` are further
    records to report as singletons when nothing links them. Each returned cluster lists
    ``(site number, record index)`` nodes, at most one per site.
    """
    clusters = _Clusters(support)
    for group in existing:
        clusters.add(group[0], fixed=True)
        for node in group[1:]:
            clusters.add(node, fixed=True)
            clusters.join(clusters.find(group[0]), node)
    for node in records:
        clusters.add(node)
    site_a, site_b, left, right, score = _edges(pairs, threshold)
    nodes = [((int(a), int(i)), (int(b), int(j)))
             for a, i, b, j in zip(site_a, left, site_b, right, strict=True)]
    clusters.edges = {(min(x, y), max(x, y)) for x, y in nodes}
    for k in np.argsort(-score, kind="stable"):
        x, y = nodes[k]
        clusters.add(x)
        clusters.add(y)
        clusters.union(x, y)
    groups: dict[Node, list[Node]] = {}
    for node in clusters.parent:
        groups.setdefault(clusters.find(node), []).append(node)
    return [sorted(g) for g in groups.values()]


def _edges(pairs: Iterable[SitePairScores], threshold: float) -> tuple[np.ndarray, ...]:
    parts = []
    for p in pairs:
        if p.a == p.b:
            raise ValueError("pairs must join two different sites")
        s = p.scored.above(threshold)
        parts.append((np.full(len(s.left), p.a), np.full(len(s.left), p.b), s.left, s.right,
                      s.score))
    if not parts:
        empty = np.empty(0, np.int64)
        return empty, empty, empty, empty, np.empty(0, np.float32)
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(5))
