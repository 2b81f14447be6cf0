"""SMART App Launch v2 scopes: parsing, granting and checking.

A resource scope is ``CONTEXT/TYPE.PERMS[?PARAM=VALUE&...]``: the context is
``patient`` (one patient's data), ``user`` (what the signed-in user may see) or
``system`` (a backend service); TYPE is a resource type or ``*``; PERMS is an ordered
subset of ``cruds`` (create, read, update, delete, search). SMART v1 suffixes
(``.read``, ``.write``, ``.*``) are accepted and mean ``rs``, ``cud`` and ``cruds``.
Parameters narrow the scope to resources matching a search (``?category=laboratory``);
several scopes for one type widen each other (a union).

Other SMART scopes (``openid``, ``fhirUser``, ``launch/patient``, ``offline_access``,
``online_access``) are kept as they are and grant no data access by themselves.

Written here rather than taken from a library: no maintained Python package parses
SMART v2 scopes; the grammar is small and tested in tests/test_auth.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from healthmesh.errors import FhirError

__all__ = ["PERMS", "InsufficientScope", "InvalidScope", "Scope", "ScopeSet", "parse_scopes"]

PERMS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_RESOURCE = re.compile(
    r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]{1,5})(?:\?(.{1,512}))?$"
)
_OTHER = re.compile(r"^(openid|fhirUser|profile|offline_access|online_access|launch"
                    r"|launch/patient|launch/encounter)$")
MAX_SCOPES = 64


class InvalidScope(FhirError):
    """400: a scope string that is not SMART scope syntax."""

    def __init__(self, message: str) -> None:
        super().__init__(message, [], 400, "invalid")


class InsufficientScope(FhirError):
    """403: the access token's scopes do not allow this interaction."""

    def __init__(self, message: str) -> None:
        super().__init__(message, [], 403, "forbidden")


@dataclass(frozen=True, slots=True)
class Scope:
    """One resource scope."""

    context: str  # patient | user | system
    rtype: str  # a resource type or "*"
    perms: frozenset[str]
    params: tuple[tuple[str, str], ...] = ()

    def covers(self, rtype: str, perm: str) -> bool:
        return perm in self.perms and self.rtype in ("*", rtype)

    def contains(self, other: Scope) -> bool:
        """True if everything ``other`` allows, this scope allows too."""
        return (self.context == other.context and self.rtype in ("*", other.rtype)
                and other.perms <= self.perms
                and (not self.params or set(self.params) <= set(other.params)))

    def __str__(self) -> str:
        perms = "".join(p for p in PERMS if p in self.perms)
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return f"{self.context}/{self.rtype}.{perms}" + (f"?{query}" if query else "")


def _parse_one(text: str) -> Scope | str:
    if _OTHER.match(text):
        return text
    match = _RESOURCE.match(text)
    if match is None:
        raise InvalidScope(f"'{text[:80]}' is not a SMART scope (e.g. patient/Observation.rs)")
    context, rtype, perms, query = match.groups()
    perms = _V1.get(perms, perms)
    if not perms or any(p not in PERMS for p in perms) or len(set(perms)) != len(perms):
        raise InvalidScope(f"'{text[:80]}': permissions must be letters of 'cruds' in order")
    if "".join(p for p in PERMS if p in perms) != perms:
        raise InvalidScope(f"'{text[:80]}': permissions must be in the order c, r, u, d, s")
    params: tuple[tuple[str, str], ...] = ()
    if query:
        try:
            params = tuple(sorted(parse_qsl(query, keep_blank_values=False, strict_parsing=True)))
        except ValueError:
            raise InvalidScope(f"'{text[:80]}': the ?constraint is not name=value") from None
    return Scope(context, rtype, frozenset(perms), params)


def parse_scopes(text: str) -> ScopeSet:
    """The scopes of a space-separated scope string (raises :class:`InvalidScope`)."""
    words = text.split()
    if len(words) > MAX_SCOPES:
        raise InvalidScope(f"At most {MAX_SCOPES} scopes may be asked for")
    resource: list[Scope] = []
    other: list[str] = []
    for word in words:
        parsed = _parse_one(word)
        (other if isinstance(parsed, str) else resource).append(parsed)  # type: ignore[arg-type]
    return ScopeSet(tuple(resource), tuple(other))


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """The scopes of one access token."""

    resource: tuple[Scope, ...]
    other: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " ".join([*(str(s) for s in self.resource), *self.other])

    @property
    def contexts(self) -> frozenset[str]:
        return frozenset(s.context for s in self.resource)

    def constraints(self, rtype: str, perm: str) -> list[tuple[tuple[str, str], ...]] | None:
        """How ``perm`` on ``rtype`` is narrowed: None if not allowed at all, ``[]`` if
        allowed without constraint, else the alternative parameter sets (any may match)."""
        matching = [s for s in self.resource if s.covers(rtype, perm)]
        if not matching:
            return None
        if any(not s.params for s in matching):
            return []
        return [s.params for s in matching]

    def require(self, rtype: str, perm: str) -> list[tuple[tuple[str, str], ...]]:
        """:meth:`constraints`, raising :class:`InsufficientScope` when not allowed."""
        found = self.constraints(rtype, perm)
        if found is None:
            word = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}[perm]
            raise InsufficientScope(f"The access token's scopes do not allow {word} of {rtype}")
        return found

    def allows(self, rtype: str, perm: str) -> bool:
        return self.constraints(rtype, perm) is not None

    def within(self, granted: ScopeSet) -> ScopeSet:
        """The scopes of this set that ``granted`` contains (what a client may be given)."""
        resource = tuple(s for s in self.resource if any(g.contains(s) for g in granted.resource))
        other = tuple(o for o in self.other if o in granted.other or o in _ALWAYS)
        return ScopeSet(resource, other)


_ALWAYS = ("openid", "fhirUser", "profile", "offline_access", "online_access",
           "launch", "launch/patient", "launch/encounter")
