"""A pattern-based PHI scrubber for free text: the second line of defence only.

Safe Harbor output drops free-text elements; a data steward may allow scrubbed text
instead, and then every kept free-text string goes through :func:`scrub_text`, which
replaces what the patterns find with ``[KIND]``: e-mail addresses, URLs, IP addresses,
social security numbers, phone and fax numbers, dates more precise than the year (ISO,
numeric and month-name forms), record/account/licence numbers after their label, long
digit runs (MRNs, card and device numbers), US ZIP codes, ages over 89 (to ``90+``) and
names after a title (``Mr.``, ``Dr.``). Pattern matching cannot find names in running
text in general: that is why Safe Harbor drops free text unless a steward decides.

Why hand-written regexes rather than presidio-analyzer: presidio's pattern recognisers
do work without a spaCy model, but the package depends on spaCy, thinc and blis (392 MB
installed, measured 2026-11-23) and its e-mail and URL recognisers fetch the public
suffix list over the network at first use (tldextract), which fails on an offline node.
The recognisers needed here are a dozen regexes; they are below and tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PATTERNS", "Finding", "find_phi", "scrub_text"]

_MONTHS = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|"
           r"Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("EMAIL", r"[\w.+\-]{1,64}@[\w\-]{1,63}(?:\.[\w\-]{1,63})+"),
        ("URL", r"\b(?:https?|ftp)://[^\s<>\"']+|\bwww\.[^\s<>\"']+"),
        ("IP", r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
        ("IP", r"(?<![\w:])(?:[0-9a-f]{1,4}:){2,7}(?::|[0-9a-f]{1,4})(?![\w:])"),
        ("SSN", r"\b\d{3}[- .]\d{2}[- .]\d{4}\b"),
        ("DATE", r"\b\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
                 r"(?:Z|[+-]\d{2}:?\d{2})?)?\b"),
        ("DATE", r"\b\d{1,2}[/.\-]\d{1,2}[/.\-](?:\d{4}|\d{2})\b"),
        ("DATE", rf"\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{2,4}})?\b"),
        ("DATE", rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}(?:,?\s+\d{{2,4}})?\b"),
        ("PHONE", r"(?:\+\d{1,3}[\s.\-]?)?\(?\b\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}\b"),
        ("PHONE", r"\+\d{1,3}(?:[\s.\-]?\d{2,4}){2,5}\b"),
        ("ID", r"\b(?:MRN|medical record(?: number)?|record(?: no\.?| number)?|acct|account"
               r"(?: no\.?| number)?|member(?: id)?|policy(?: no\.?| number)?|licen[cs]e"
               r"(?: no\.?| number)?|serial(?: no\.?| number)?|SSN|ID|no\.?)\s*[:#]?\s*"
               r"[A-Z0-9][A-Z0-9\-]{3,}\b"),
        ("ID", r"\b\d{7,}\b"),
        ("ZIP", r"\b\d{5}(?:-\d{4})?(?![\-\d])"),
        ("NAME", r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+[A-Z][\w'\-]+(?:\s+[A-Z][\w'\-]+)?"),
    )
)
_OLD_AGE = re.compile(r"\b(9\d|1[0-4]\d)(\s*|-)(years?|yrs?|y/?o)\b", re.IGNORECASE)
_NAME_CASE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+[A-Z]")


@dataclass(frozen=True, slots=True)
class Finding:
    """One span of suspected PHI."""

    kind: str
    start: int
    end: int


def find_phi(text: str) -> list[Finding]:
    """Every non-overlapping span the patterns find, leftmost-longest first."""
    found: list[Finding] = []
    for kind, pattern in PATTERNS:
        for match in pattern.finditer(text):
            if kind == "NAME" and not _NAME_CASE.match(match.group()):
                continue  # the title must be followed by a capitalised word
            found.append(Finding(kind, match.start(), match.end()))
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for finding in found:
        if not kept or finding.start >= kept[-1].end:
            kept.append(finding)
    return kept


def scrub_text(text: str) -> tuple[str, int]:
    """``text`` with each finding replaced by ``[KIND]`` and ages over 89 by ``90+``,
    and the number of replacements."""
    count = 0
    parts: list[str] = []
    last = 0
    for finding in find_phi(text):
        parts.append(text[last:finding.start])
        parts.append(f"[{finding.kind}]")
        last = finding.end
        count += 1
    parts.append(text[last:])
    scrubbed, ages = _OLD_AGE.subn(r"90+\2\3", "".join(parts))
    return scrubbed, count + ages
