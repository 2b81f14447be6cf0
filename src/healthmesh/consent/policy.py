"""The network default policy: what happens per purpose of use when no consent applies.

The policy is a readable TOML file (``data/default-policy.toml`` in the package; a node
may layer its own file on top, key by key). It is validated when loaded: any unknown
key, wrong type or unknown purpose code is a :class:`~healthmesh.errors.ConfigError`
naming the key (``purpose.HPAYMT.recipients``).

Purposes are HL7 v3 ActReason codes. :data:`PARENTS` holds the part of the ActReason
hierarchy under the purposes healthmesh names (TREAT, ETREAT, HPAYMT, HOPERAT, PUBHLTH,
HRESCH, PATRQT), so that a request for clinical-trial research (CLINTRCH) is governed by
the research (HRESCH) rule and matches a consent that permits or denies HRESCH, and
emergency treatment (ETREAT) is a kind of treatment (TREAT) — never the other way round.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from healthmesh.errors import ConfigError

__all__ = [
    "PARENTS",
    "RECIPIENT_KINDS",
    "Policy",
    "PurposeRule",
    "default_policy",
    "load_policy",
]

RECIPIENT_KINDS = ("any", "payers", "node", "patient")
_KEYS = {"label": str, "default": str, "overridable": bool, "recipients": str,
         "explanation": str, "parent": str}
_REQUIRED = ("label", "default", "overridable", "recipients", "explanation")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")


def _children(parent: str, codes: str) -> dict[str, str]:
    return {code: parent for code in codes.split()}


PARENTS: Mapping[str, str] = MappingProxyType({
    **_children("TREAT", "CLINTRL COC ETREAT POPHLTH"),
    **_children("ETREAT", "BTG ERTREAT"),
    **_children("HPAYMT", "CLMATTCH COVAUTH COVERAGE MILDCRG REMITADV"),
    **_children("COVERAGE", "ELIGDTRM ELIGVER ENROLLM"),
    **_children("HOPERAT", "CAREMGT DONAT FRAUD GOV HACCRED HCOMPL HDECD HDIRECT HDM HLEGAL "
                           "HOUTCOMS HPRGRP HQUALIMP HSYSADMIN LABELING METAMGT MEMADMIN "
                           "MILCDM PATADMIN PATSFTY PERFMSR RECORDMGT SYSDEV TRAIN"),
    **_children("SYSDEV", "HTEST"),
    **_children("HRESCH", "BIORCH CLINTRCH DSRCH POARCH TRANSRCH PRECLINTRCH"),
    **_children("CLINTRCH", "CLINTRCHNPC CLINTRCHPC"),
    **_children("PATRQT", "FAMRQT PWATRNY SUPNWK"),
    **_children("PUBHLTH", "DISASTER THREAT"),
})
"""ActReason purpose-of-use code -> its parent (codes under the named purposes)."""

_ROOTS = frozenset({"TREAT", "HPAYMT", "HOPERAT", "HMARKT", "HRESCH", "PATRQT", "PUBHLTH"})


@dataclass(frozen=True, slots=True)
class PurposeRule:
    """The network's rule for one purpose of use (one ``[purpose.<CODE>]`` table)."""

    code: str
    label: str
    default: str
    overridable: bool
    recipients: str
    explanation: str
    parent: str | None = None

    @property
    def permits_by_default(self) -> bool:
        """True when the answer without an applicable consent is permit."""
        return self.default == "permit"

    def as_dict(self) -> dict[str, Any]:
        """The rule as plain data (for the CapabilityStatement / consent-policy page)."""
        out: dict[str, Any] = {"code": self.code, "label": self.label, "default": self.default,
                               "overridable": self.overridable, "recipients": self.recipients,
                               "explanation": self.explanation}
        if self.parent:
            out["parent"] = self.parent
        return out


@dataclass(frozen=True)
class Policy:
    """A validated network policy: one :class:`PurposeRule` per purpose code."""

    name: str
    version: str
    rules: Mapping[str, PurposeRule]
    sources: tuple[str, ...] = ()
    _lineages: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False,
                                                  compare=False)

    def lineage(self, purpose: str) -> tuple[str, ...]:
        """``purpose`` and its ancestors, most specific first (``ETREAT`` -> ETREAT, TREAT)."""
        found = self._lineages.get(purpose)
        if found is None:
            chain = [purpose]
            while (up := self._parent(chain[-1])) is not None and up not in chain:
                chain.append(up)
            found = self._lineages[purpose] = tuple(chain)
        return found

    def _parent(self, code: str) -> str | None:
        rule = self.rules.get(code)
        if rule is not None and rule.parent:
            return rule.parent
        return PARENTS.get(code)

    def rule_for(self, purpose: str) -> PurposeRule | None:
        """The rule of ``purpose`` or of its nearest ancestor that has one."""
        for code in self.lineage(purpose):
            rule = self.rules.get(code)
            if rule is not None:
                return rule
        return None

    def as_dict(self) -> dict[str, Any]:
        """The whole policy as plain JSON-able data."""
        return {"name": self.name, "version": self.version,
                "purposes": [r.as_dict() for r in self.rules.values()]}

    def describe(self) -> list[str]:
        """One plain-language sentence per purpose (for the consent-policy page)."""
        return [f"{r.label[0].upper()}{r.label[1:]} ({r.code}): {r.explanation}"
                for r in self.rules.values()]


def known_purpose(code: str) -> bool:
    """True for an ActReason purpose code that healthmesh knows the place of."""
    return code in PARENTS or code in _ROOTS


@cache
def default_policy() -> Policy:
    """The package default policy (loaded and validated once)."""
    return load_policy(None)


def load_policy(path: str | Path | None = None) -> Policy:
    """Load the package default policy and, if ``path`` is given, the node's override.

    The override only needs the keys it changes (``[purpose.HRESCH] default = "permit"``)
    and may add purposes (a code healthmesh does not know needs ``parent``). Raises
    :class:`~healthmesh.errors.ConfigError` naming the file and key on any problem.
    """
    package = resources.files(__package__).joinpath("data", "default-policy.toml")
    sources = ["healthmesh:consent/data/default-policy.toml"]
    doc = _parse(package.read_text("utf-8"), sources[0])
    if path is not None:
        sources.append(str(path))
        doc = _merge(doc, _parse(_read(Path(path)), str(path)))
    return _build(doc, tuple(sources))


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"consent policy file {path}: {exc.strerror or exc}") from None


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"consent policy {source}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in ("name", "version", "purpose"):
            raise ConfigError(f"consent policy {source}: unknown key {key!r} "
                              f"(expected name, version, purpose)")
    if not isinstance(doc.get("purpose", {}), dict):
        raise ConfigError(f"consent policy {source}: 'purpose' must be a table")
    for code, table in doc.get("purpose", {}).items():
        _check_table(code, table, source)
    return doc


def _check_table(code: str, table: Any, source: str) -> None:
    where = f"consent policy {source}: purpose.{code}"
    if not _CODE.match(code):
        raise ConfigError(f"{where}: {code!r} is not an ActReason code")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key, value in table.items():
        expected = _KEYS.get(key)
        if expected is None:
            raise ConfigError(f"{where}.{key}: unknown key (expected {', '.join(_KEYS)})")
        if not isinstance(value, expected) or (isinstance(value, str) and not value.strip()):
            raise ConfigError(f"{where}.{key}: must be a non-empty "
                              f"{'boolean' if expected is bool else 'string'}")
    _check_values(where, table)


def _check_values(where: str, table: dict[str, Any]) -> None:
    if table.get("default", "permit") not in ("permit", "deny"):
        raise ConfigError(f"{where}.default: must be \"permit\" or \"deny\"")
    if table.get("recipients", "any") not in RECIPIENT_KINDS:
        raise ConfigError(f"{where}.recipients: must be one of {', '.join(RECIPIENT_KINDS)}")
    parent = table.get("parent")
    if parent is not None and not _CODE.match(parent):
        raise ConfigError(f"{where}.parent: {parent!r} is not an ActReason code")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **{k: v for k, v in override.items() if k != "purpose"}}
    purposes = {code: dict(table) for code, table in base.get("purpose", {}).items()}
    for code, table in override.get("purpose", {}).items():
        purposes[code] = {**purposes.get(code, {}), **table}
    out["purpose"] = purposes
    return out


def _build(doc: dict[str, Any], sources: tuple[str, ...]) -> Policy:
    where = f"consent policy {sources[-1]}"
    rules: dict[str, PurposeRule] = {}
    for code, table in doc.get("purpose", {}).items():
        missing = [k for k in _REQUIRED if k not in table]
        if missing:
            raise ConfigError(f"{where}: purpose.{code}.{missing[0]}: required key is missing")
        if not known_purpose(code) and "parent" not in table:
            raise ConfigError(f"{where}: purpose.{code}: unknown ActReason purpose; add "
                              f"parent = \"<code>\" to place it in the hierarchy")
        rules[code] = PurposeRule(code=code, **{k: table[k] for k in _KEYS if k in table})
    for rule in rules.values():
        if rule.parent and not (known_purpose(rule.parent) or rule.parent in rules):
            raise ConfigError(f"{where}: purpose.{rule.code}.parent: unknown purpose "
                              f"{rule.parent!r}")
    return Policy(str(doc.get("name", "")), str(doc.get("version", "")),
                  MappingProxyType(rules), sources)
