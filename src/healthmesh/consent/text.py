"""Plain language: consents and decisions in sentences a patient understands.

:func:`describe` renders a consent for the patient API and the consent receipt
(``["You allow research use of your data, except mental-health records, until 31 Dec
2026.", ...]``); the ``*_reason`` functions write :attr:`Decision.reason
<healthmesh.consent.Decision.reason>`. A nested provision is described with what it
inherits from its parents (a "deny mental health" inside a research permit reads
"research use of your mental-health records").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .model import ParsedConsent, Period, Provision

if TYPE_CHECKING:
    from .policy import PurposeRule

__all__ = ["LABEL_NAMES", "PURPOSE_NAMES", "describe", "format_date"]

PURPOSE_NAMES = {
    "TREAT": "your treatment", "ETREAT": "emergency treatment", "HPAYMT": "payment for your care",
    "HOPERAT": "running the health service", "PUBHLTH": "public health",
    "HRESCH": "research", "PATRQT": "your own requests", "HMARKT": "marketing",
    "CLINTRCH": "clinical trials", "BTG": "emergency access ('break the glass')",
    "COVERAGE": "checking your insurance cover", "FAMRQT": "requests by your family",
}
LABEL_NAMES = {
    "PSY": "mental-health", "PSYTHPN": "psychotherapy-note", "MH": "mental-health",
    "ETH": "substance-use", "SUD": "substance-use", "HIV": "HIV", "GDIS": "genetic",
    "STD": "sexually transmitted infection", "SEX": "sexual and reproductive health",
    "SDV": "sexual assault, abuse or domestic violence", "SPI": "sensitive personal",
    "U": "unrestricted", "L": "low-sensitivity", "M": "moderately sensitive",
    "N": "ordinary", "R": "restricted", "V": "very restricted",
}
_ACTIONS = {"access": "access to", "use": "use of", "disclose": "sharing of",
            "collect": "collection of", "correct": "correction of"}
_ORDER = ("TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PUBHLTH", "HRESCH", "PATRQT")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_STATUS = {
    "draft": "This consent is a draft and does not apply yet.",
    "proposed": "This consent is only proposed and does not apply yet.",
    "rejected": "This consent was declined and does not apply.",
    "inactive": "This consent has been withdrawn or has ended, so it no longer applies.",
    "entered-in-error": "This consent was recorded by mistake and does not apply.",
}
_SCOPE = {
    "treatment": "This is a consent to treatment; it does not change who may use your data.",
    "adr": "This is an advance directive; it does not change who may use your data.",
}


def describe(consent: ParsedConsent | Mapping[str, Any]) -> list[str]:
    """Plain-language sentences for a consent (a :class:`ParsedConsent` or FHIR JSON)."""
    if not isinstance(consent, ParsedConsent):
        from .parse import parse_consent

        consent = parse_consent(consent)
    out = [_STATUS[consent.status]] if consent.status in _STATUS else []
    if consent.scope in _SCOPE:
        return [*out, _SCOPE[consent.scope]]
    out.extend(_tree(consent, consent.provision, [], first=True))
    out.extend(_unenforceable(consent))
    if consent.date_text:
        out.append(f"You gave this consent on {format_date(consent.date_text)}.")
    return out


def consent_reason(consent: ParsedConsent, provision: Provision, *,
                   partial: bool = False) -> str:
    """Why a decision followed ``provision`` of ``consent``."""
    chain = _chain(consent.provision, provision)
    rule = _effective(chain)
    when = f" of {format_date(consent.date_text)}" if consent.date_text else ""
    text = f"Your consent{when} says: you {_clause(rule, consent.scope, [])}."
    return _partial(text) if partial else text


def default_reason(rule: PurposeRule, *, overridable: bool, partial: bool = False) -> str:
    """Why a decision followed the network default for ``rule``."""
    if not overridable:
        text = rule.explanation
    elif rule.permits_by_default:
        text = f"{rule.explanation} You have no consent that says otherwise."
    else:
        text = f"{rule.explanation} You have no consent that allows it."
    return _partial(text) if partial else text


def recipient_reason(rule: PurposeRule, requester: str | None) -> str:
    """Why a requester may never receive data for ``rule``'s purpose."""
    who = requester or "the requester"
    if rule.recipients == "payers":
        return (f"Only your own health insurer or payer may receive your records for "
                f"{rule.label}, and {who} is not one of them.")
    if rule.recipients == "node":
        return (f"Only the organisation that holds your records may use them for "
                f"{rule.label}; {who} is another organisation.")
    return f"Only you may ask for your records for {rule.label}."


def format_date(text: str | None) -> str:
    """A FHIR date/dateTime as people write it: ``2026-12-31`` -> ``31 Dec 2026``."""
    if not text:
        return ""
    year = text[:4]
    if len(text) < 7:
        return year
    month = _MONTHS[int(text[5:7]) - 1]
    if len(text) < 10:
        return f"{month} {year}"
    day = f"{int(text[8:10])} {month} {year}"
    return day if len(text) < 16 else f"{day}, {text[11:16]}"


# --------------------------------------------------------------------------- sentences


def _tree(consent: ParsedConsent, node: Provision, chain: list[Provision], *,
          first: bool) -> list[str]:
    chain = [*chain, node]
    folded = [c for c in node.provisions
              if c.type != node.type and c.about_data_only() and not c.unenforceable]
    lead = "You" if first else "As an exception, you"
    out = [f"{lead} {_clause(_effective(chain), consent.scope, folded)}."]
    for child in node.provisions:
        if child not in folded and not child.unenforceable:
            out.extend(_tree(consent, child, chain, first=False))
    return out


def _clause(rule: Provision, scope: str, folded: list[Provision]) -> str:
    verb = "allow" if rule.type == "permit" else "do not allow"
    who = _people(a.display or a.reference for a in rule.recipients)
    except_ = f", except {_join(_data(c, own=False) for c in folded)}" if folded else ""
    by = f" by {who}" if who else ""
    period = _period(rule.period)
    comma = "," if except_ and period else ""
    return f"{verb} {_what(rule, scope)}{by}{except_}{comma}{period}"


def _what(rule: Provision, scope: str) -> str:
    nouns = _join(_ACTIONS[a] for a in sorted(rule.actions)) if rule.actions else "use of"
    purposes = sorted(rule.purposes, key=lambda p: (p not in _ORDER, _ORDER.index(p)
                                                   if p in _ORDER else 0, p))
    if not purposes and scope == "research":
        purposes = ["HRESCH"]
    data = _data(rule, own=True)
    if purposes == ["HRESCH"]:
        return f"research {nouns} {data}"
    if not purposes:
        return f"{nouns} {data} for any purpose"
    return f"{nouns} {data} for {_join(PURPOSE_NAMES.get(p, p) for p in purposes)}"


def _data(rule: Provision, *, own: bool) -> str:
    kinds = _join(LABEL_NAMES.get(code, code) for code in sorted(rule.security_labels))
    types = _join(_plural(t) for t in sorted(rule.classes))
    if kinds:
        text = f"{kinds} {types or 'records'}"
    else:
        text = types or ("data" if own else "records")
    if rule.codes:
        text += " coded " + _join(c.split("|", 1)[1] for c in sorted(rule.codes))
    if rule.data_period is not None:
        text += " dated" + _period(rule.data_period)
    if rule.source_refs:
        text += " from " + _people(a.display or a.reference for a in rule.sources)
    if rule.data:
        text = _join(("the record " if d.meaning == "instance" else "records linked to ")
                     + d.reference for d in rule.data)
        return text
    return f"your {text}" if own else text


def _period(period: Period | None) -> str:
    if period is None:
        return ""
    start, end = format_date(period.start_text), format_date(period.end_text)
    if start and end:
        return f" from {start} until {end}"
    return f" from {start}" if start else (f" until {end}" if end else "")


def _unenforceable(consent: ParsedConsent) -> list[str]:
    return [f"One permission in this consent ({p.path}) cannot be checked by this node, "
            f"so it is not used: {p.unenforceable}."
            for p in consent.provision.walk() if p.unenforceable]


# --------------------------------------------------------------------------- helpers


def _chain(root: Provision, target: Provision) -> list[Provision]:
    """The provisions from ``root`` down to ``target``."""
    if root is target:
        return [root]
    for child in root.provisions:
        found = _chain(child, target)
        if found:
            return [root, *found]
    return []


def _effective(chain: list[Provision]) -> Provision:
    """The last provision of ``chain`` with the criteria it inherits from its parents."""
    leaf = chain[-1]
    inherited: dict[str, Any] = {}
    for name in ("purposes", "actions", "classes", "codes", "data"):
        value = next((getattr(p, name) for p in reversed(chain) if getattr(p, name)), None)
        if value:
            inherited[name] = value
    recipients = next((p.recipients for p in reversed(chain) if p.recipients), ())
    inherited["actors"] = tuple(recipients) + leaf.sources
    inherited["security_labels"] = frozenset().union(*(p.security_labels for p in chain))
    inherited["data_period"] = next((p.data_period for p in reversed(chain)
                                     if p.data_period), None)
    return replace(leaf, **inherited)


def _partial(text: str) -> str:
    return f"Some of this data depends on the record: {text[0].lower()}{text[1:]}"


def _plural(resource_type: str) -> str:
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", resource_type).lower()
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + ("es" if words.endswith("s") else "s")


def _people(names: Iterable[str]) -> str:
    return _join(names)


def _join(items: Iterable[str]) -> str:
    parts = [p for p in items if p]
    if len(parts) < 2:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"
