"""Keyed pseudonyms: HMAC-SHA-256 of an id under the project key.

A resource ``Type/id`` becomes ``Type/<32 hex digits>``; the same key gives the same
pseudonym in every resource and every run (references stay resolvable, a project can
link its releases), another key gives an unrelated one. A pseudonym cannot be reversed;
re-identification (:meth:`Pseudonyms.reidentify`) recomputes the pseudonyms of candidate
ids the node holds, which needs the key.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from healthmesh.privacy.deid.keys import DeidKey

__all__ = ["Pseudonyms"]

_RELATIVE = re.compile(r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?",
                       re.ASCII)
_ABSOLUTE = re.compile(r"https?://\S+?/([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})"
                       r"(?:/_history/[^/]+)?", re.ASCII)
_UUID = re.compile(r"urn:uuid:([0-9a-fA-F\-]{36})", re.ASCII)
_MEMO_SIZE = 1 << 16
_LOCAL = re.compile(r"#([A-Za-z0-9\-.]{1,64})", re.ASCII)


class Pseudonyms:
    """Pseudonyms of ids, references, business identifiers and extension URLs."""

    def __init__(self, key: DeidKey) -> None:
        self._ids = key.subkey("ids")
        self._identifiers = key.subkey("identifiers")
        self._extensions = key.subkey("extensions")
        # Patients and encounters are referenced by many resources: remember their
        # pseudonyms (a dict is safe to share between threads for this use).
        self._memo: dict[str, str] = {}

    def _hex(self, subkey: bytes, text: str, digits: int = 32) -> str:
        return hmac.digest(subkey, text.encode(), "sha256").hex()[:digits]

    def resource_id(self, rtype: str, rid: str) -> str:
        """The pseudonym of resource ``rtype/rid`` (a valid FHIR id)."""
        key = f"{rtype}/{rid}"
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            found = self._memo[key] = self._hex(self._ids, key)
        return found

    def local_id(self, rid: str) -> str:
        """The pseudonym of a contained resource's id (``#id`` references)."""
        return self._hex(self._ids, f"#{rid}")

    def uuid(self, value: str) -> str:
        """A random-looking (version 4 shaped) UUID standing for ``urn:uuid:value``."""
        h = self._hex(self._ids, f"urn:uuid:{value.lower()}")
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"

    def reference(self, ref: str) -> str | None:
        """The rewritten ``Reference.reference``, or None when it cannot be kept
        (conditional references, URNs other than UUIDs, anything unknown)."""
        for pattern in (_RELATIVE, _ABSOLUTE):
            match = pattern.fullmatch(ref)
            if match:
                rtype, rid = match.groups()
                return f"{rtype}/{self.resource_id(rtype, rid)}"
        match = _UUID.fullmatch(ref)
        if match:
            return f"urn:uuid:{self.uuid(match.group(1))}"
        match = _LOCAL.fullmatch(ref)
        if match:
            return f"#{self.local_id(match.group(1))}"
        return None

    def identifier(self, system: str | None, value: str) -> tuple[str, str]:
        """(opaque system, pseudonym) standing for a business identifier."""
        system = system or ""
        return (f"urn:healthmesh:pseudonym:{self._hex(self._identifiers, system, 16)}",
                self._hex(self._identifiers, f"{system}|{value}"))

    def extension_url(self, url: str) -> str:
        """An opaque URL standing for an extension URL that is not a published one."""
        return f"urn:healthmesh:extension:{self._hex(self._extensions, url, 24)}"

    def reidentify(self, pseudonym: str, rtype: str, candidates: Iterable[str]) -> list[str]:
        """The candidate ids of type ``rtype`` whose pseudonym is ``pseudonym``."""
        wanted = pseudonym.rsplit("/", 1)[-1].lower()
        return [rid for rid in candidates
                if hmac.compare_digest(self.resource_id(rtype, rid), wanted)]
