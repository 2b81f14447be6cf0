"""Does one provision apply to a request? Three answers: YES, NO, or MAYBE.

MAYBE means "it depends on a data attribute the request leaves unknown" (``None``): the
decision then considers both possibilities (see :mod:`healthmesh.consent.decide`).
Criteria given in a provision must all hold; within a criterion any value may match,
except security labels, which the data must all carry (FHIR R4). For a *deny*, a label
also covers its finer labels (PSYTHPN for PSY) and a confidentiality code the more
restricted ones (R covers V); for a *permit* neither widens. Unlabelled data counts as
confidentiality N.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .labels import expand_labels
from .model import CONFIDENTIALITY, Provision

if TYPE_CHECKING:
    from .decide import AccessRequest

__all__ = ["MAYBE", "NO", "YES", "match"]

NO, YES, MAYBE = 0, 1, 2
_RANK = {code: i for i, code in enumerate(CONFIDENTIALITY)}
_NORMAL = _RANK["N"]


def match(p: Provision, req: AccessRequest, lineage: tuple[str, ...]) -> int:
    """YES, NO or MAYBE (depends on data attributes the request leaves unknown)."""
    if p.unenforceable is not None:
        return NO
    if p.period is not None and not p.period.contains(req.at):
        return NO
    if p.actions and req.action not in p.actions:
        return NO
    if p.purposes and p.purposes.isdisjoint(lineage):
        return NO
    result = YES
    for name in p.data_criteria:  # only the criteria this provision gives
        found = _CHECKS[name](p, req)
        if found == NO:
            return NO
        if found == MAYBE:
            result = MAYBE
    return result


def _recipient(p: Provision, req: AccessRequest) -> int:
    if not p.recipient_refs:
        return YES
    if req.requester is None and not req.requester_affiliations:
        return MAYBE
    return NO if p.recipient_refs.isdisjoint(req.identities()) else YES


def _source(p: Provision, req: AccessRequest) -> int:
    if not p.source_refs:
        return YES
    if req.sources is None:
        return MAYBE
    return NO if p.source_refs.isdisjoint(req.sources) else YES


def _class(p: Provision, req: AccessRequest) -> int:
    if not p.classes:
        return YES
    if req.resource_type is None:
        return MAYBE
    return YES if req.resource_type in p.classes else NO


def _codes(p: Provision, req: AccessRequest) -> int:
    if not p.codes:
        return YES
    if req.codes is None:
        return MAYBE
    return NO if p.codes.isdisjoint(req.codes) else YES


def _data_period(p: Provision, req: AccessRequest) -> int:
    if p.data_period is None:
        return YES
    if req.data_time is None:
        return MAYBE
    return YES if p.data_period.contains(req.data_time) else NO


def _labels(p: Provision, req: AccessRequest) -> int:
    if not p.security_labels:
        return YES
    if req.security_labels is None:
        return MAYBE
    deny = p.type == "deny"
    data = expand_labels(req.security_labels) if deny else req.security_labels
    level = max((_RANK[c] for c in data if c in _RANK), default=_NORMAL)
    for label in p.security_labels:
        rank = _RANK.get(label)
        if rank is None:
            ok = label in data
        else:
            ok = level >= rank if deny else level <= rank
        if not ok:
            return NO
    return YES


def _data(p: Provision, req: AccessRequest) -> int:
    if not p.data:
        return YES
    best = NO
    for item in p.data:
        if item.meaning == "authoredby":
            known, hit = req.sources is not None, item.reference in (req.sources or ())
        elif item.meaning == "instance":
            known, hit = req.resource_ref is not None, req.resource_ref == item.reference
        else:  # related, dependents: the record itself or a record that refers to it
            known = req.resource_ref is not None and req.references is not None
            hit = req.resource_ref == item.reference or item.reference in (req.references or ())
        if hit:
            return YES
        if not known:
            best = MAYBE
    return best


_CHECKS = {"recipient": _recipient, "source": _source, "class": _class, "labels": _labels,
           "codes": _codes, "data_period": _data_period, "data": _data}
