"""Re-identification: from a pseudonym back to the node's id, with the key, audited.

Pseudonyms cannot be reversed. With the project key, the node recomputes the pseudonym
of each id of the asked type it holds and reports the ids that match; each lookup
against a node writes an audit record (action ``reidentify``: who, why, which key by
fingerprint, which pseudonyms, which ids were found).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from healthmesh.audit import AuditRecord
from healthmesh.fhir.search_query import SearchQuery
from healthmesh.privacy.deid.keys import DeidKey
from healthmesh.privacy.deid.pseudonyms import Pseudonyms

__all__ = ["reidentify", "reidentify_at_node"]


def reidentify(key: DeidKey, rtype: str, pseudonyms: list[str],
               candidates: Iterable[str]) -> dict[str, list[str]]:
    """pseudonym -> the candidate ids of ``rtype`` it stands for (usually one or none)."""
    names = Pseudonyms(key)
    wanted = {p.rsplit("/", 1)[-1].lower(): p for p in pseudonyms}
    found: dict[str, list[str]] = {p: [] for p in pseudonyms}
    for rid in candidates:
        hit = wanted.get(names.resource_id(rtype, rid))
        if hit is not None:
            found[hit].append(rid)
    return found


def reidentify_at_node(folder: Path, key: DeidKey, rtype: str, pseudonyms: list[str], *,
                       actor: str, reason: str) -> dict[str, list[str]]:
    """:func:`reidentify` over the ids the node at ``folder`` stores, audited."""
    from healthmesh.node import open_node

    with open_node(folder) as node:
        ids = (stored.id for stored in node.store.stream(SearchQuery(rtype)))
        found = reidentify(key, rtype, pseudonyms, ids)
        hits = sorted({rid for rids in found.values() for rid in rids})
        node.audit.append(AuditRecord(
            actor=actor, action="reidentify", decision="permit", reason=reason,
            resource_types=(rtype,), resources=tuple(f"{rtype}/{rid}" for rid in hits[:50]),
            patients=tuple(hits[:50]) if rtype == "Patient" else (),
            detail={"key": key.fingerprint, "pseudonyms": pseudonyms[:50],
                    "found": len(hits)}))
    return found
