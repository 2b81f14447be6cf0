"""The storage interface every backend implements.

A store keeps the current version and the full version history of every
resource, the search indexes of the current versions, and the patient each
Patient-compartment resource belongs to. It does not validate: the FHIR
service layer (:mod:`healthmesh.fhir.service`) validates before it writes.

Backends: :class:`healthmesh.store.sqlite.SQLiteStore` (the embedded default).
A PostgreSQL backend implements the same protocol; the contract tests in
``tests/test_store_contract.py`` run against every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

__all__ = [
    "HistoryEntry",
    "SearchPage",
    "Store",
    "StoredResource",
    "WriteResult",
]


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of one resource as stored (``content`` is JSON bytes)."""

    type: str
    id: str
    version: int
    updated: int  # epoch microseconds, UTC
    content: bytes | None  # None for a deletion
    patient: str | None = None

    @property
    def deleted(self) -> bool:
        return self.content is None

    def resource(self) -> dict[str, Any]:
        """The resource as a dict (raises if this version is a deletion)."""
        if self.content is None:
            raise ValueError(f"{self.type}/{self.id} version {self.version} is a deletion")
        result: dict[str, Any] = orjson.loads(self.content)
        return result


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: ``created``, ``updated``, ``unchanged`` or ``deleted``."""

    outcome: str
    stored: StoredResource


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One version in a history listing, with the interaction that made it."""

    stored: StoredResource
    method: str  # POST, PUT or DELETE


@dataclass(slots=True)
class SearchPage:
    """One page of search results.

    ``matches`` are the resources that matched the search, in order;
    ``included`` are resources added by ``_include``/``_revinclude``;
    ``total`` is the number of matches of the whole search when it was
    counted (``None`` otherwise); ``next_cursor``/``prev_cursor`` are opaque
    tokens for the neighbouring pages.
    """

    matches: list[StoredResource] = field(default_factory=list)
    included: list[StoredResource] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    prev_cursor: str | None = None


class Store(Protocol):
    """The persistence contract of a node."""

    def close(self) -> None: ...

    def read(self, rtype: str, rid: str) -> StoredResource | None:
        """The current version (a deletion marker if deleted), or None if never stored."""

    def vread(self, rtype: str, rid: str, version: int) -> StoredResource | None: ...

    def read_many(self, keys: Iterable[tuple[str, str]]) -> list[StoredResource]:
        """Current, not deleted versions of the (type, id) pairs that exist."""

    def put(
        self, resource: dict[str, Any], *, method: str = "PUT", if_match: int | None = None
    ) -> WriteResult:
        """Create or update ``resource`` (which must carry ``id``) atomically."""

    def delete(self, rtype: str, rid: str) -> WriteResult | None:
        """Delete; None if there was nothing to delete."""

    def put_many(self, resources: Sequence[dict[str, Any]], *, method: str = "PUT") -> list[str]:
        """Write many resources in one atomic transaction; the outcome of each."""

    def transaction(self) -> Any:
        """A context manager that makes every write inside it one atomic unit."""

    def history(
        self,
        rtype: str | None = None,
        rid: str | None = None,
        *,
        since: int | None = None,
        before: int | None = None,
        count: int = 100,
        offset: int = 0,
    ) -> list[HistoryEntry]: ...

    def search(self, query: Any, *, cursor: str | None = None) -> SearchPage: ...

    def count(self, query: Any) -> int: ...

    def stream(self, query: Any) -> Iterator[StoredResource]: ...

    def last_change(self, types: Iterable[str]) -> int:
        """When a resource of one of ``types`` last changed (epoch µs; 0: never)."""
        ...

    def compartment(self, patient_id: str, types: Iterable[str] | None = None) -> Iterator[
        StoredResource
    ]:
        """Every current resource in the patient's compartment (the Patient excluded)."""

    def counts(self) -> dict[str, int]:
        """Number of current (not deleted) resources per type."""
