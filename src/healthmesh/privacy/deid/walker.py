"""The element walk: one resource, element by element, against the FHIR R4 model.

The walk works by allow-list. Every property is looked up in the model, so its type is
known; a property the model does not know is dropped. By type:

* numbers, booleans and ``time`` are kept; ``base64Binary`` and ``xhtml`` are dropped;
* ``date``/``dateTime`` become the year (or are shifted per patient); ``instant`` is
  dropped (it cannot hold just a year) or shifted; birth dates of people who may be 90
  or older are masked, and ages (``Age``, UCUM ``a``) over 89 become ``>= 90``;
* ``code`` is kept when its required value set lists it (or, for the few unbound codes,
  when it has the shape of a language, MIME type, currency or UCUM unit);
* ``string``/``markdown`` are dropped, except a US state, a country, the ZIP-3 of a
  postal code, and free text that a data steward allowed (then scrubbed);
* URIs are dropped except terminology systems, HL7 profiles, published extension URLs
  and canonicals under the prefixes the caller trusts (default ``http://hl7.org/fhir/``);
  Questionnaire ``linkId`` tokens are kept (they name questions, not people);
* ``HumanName``, ``ContactPoint``, ``Signature``, ``Narrative``, photos, geographic
  coordinates (``Location.position``, the ``geolocation`` extension) are dropped;
  ``Identifier`` is dropped or pseudonymised; ``Reference`` keeps only a rewritten
  reference; ``Coding`` keeps a terminology code; ``Attachment`` keeps its content type;
* extensions keep published URLs (others become opaque URNs) and their values follow
  the same rules by type.

An element left without content is dropped; a required element that was dropped gets a
``data-absent-reason`` extension (``masked``), so the output stays valid FHIR.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from healthmesh.privacy.deid import safelists as sl
from healthmesh.privacy.deid.dates import is_old, shift_date, year_of
from healthmesh.privacy.deid.errors import DeidError
from healthmesh.privacy.deid.model import Element, type_model
from healthmesh.privacy.deid.scrubber import find_phi, scrub_text

if TYPE_CHECKING:
    from healthmesh.privacy.deid.deidentifier import Deidentifier

__all__ = ["DAR", "MAX_DEPTH", "ResourceWalk"]

MAX_DEPTH = 64
"""Deepest nesting walked (as the validator's); deeper input is refused with DeidError."""
DAR = {"extension": [{"url": sl.DATA_ABSENT_URL, "valueCode": "masked"}]}
_KEPT = frozenset(("boolean", "integer", "decimal", "positiveInt", "unsignedInt", "time"))
_NUMBER = frozenset(("integer", "decimal", "positiveInt", "unsignedInt"))
_DATES = frozenset(("date", "dateTime", "instant"))
_QUANTITIES = frozenset(("Quantity", "Age", "Duration", "Distance", "Count",
                         "SimpleQuantity", "MoneyQuantity"))
_DROPPED_TYPES = frozenset(("HumanName", "ContactPoint", "Signature", "Narrative",
                           "Location.position"))  # latitude/longitude: below state level
_DROPPED_EXTENSIONS = frozenset(("http://hl7.org/fhir/StructureDefinition/geolocation",))
FREE_TEXT = frozenset(("comment", "description", "valueString", "valueMarkdown",
                       "conclusion", "summary", "patientInstruction", "instruction"))
"""String elements a data steward may allow as scrubbed text (with Annotation.text and
CodeableConcept.text); every other string is dropped."""
_LINK_ID = re.compile(r"[A-Za-z0-9._\-/]{1,64}", re.ASCII).fullmatch
"""Questionnaire item linkIds name a question of a form, not a person: kept as tokens."""
_YEAR_WORDS = frozenset(("a", "yr", "yrs", "year", "years", "y"))


def _currency(code: str) -> bool:
    return len(code) == 3 and code.isascii() and code.isupper()


_UNBOUND_CODES: dict[str, Callable[[str], bool]] = {
    "language": sl.valid_bcp47, "contentType": sl.valid_mime, "currency": _currency,
}
_UNEXPANDED: dict[str, Callable[[str], bool]] = {
    "http://hl7.org/fhir/ValueSet/mimetypes": sl.valid_mime,
    "http://hl7.org/fhir/ValueSet/currencies": _currency,
    "http://hl7.org/fhir/ValueSet/ucum-units": sl.valid_ucum,
}


class ResourceWalk:
    """De-identifies one resource; ``labels`` collects what was done."""

    def __init__(self, deid: Deidentifier, offset: int) -> None:
        self.d = deid
        self.m = type_model()
        self.offset = offset
        self.labels: set[str] = set()
        self.depth = 0

    # -- resources ----------------------------------------------------------------------

    def resource(self, res: dict[str, Any], contained: bool = False) -> dict[str, Any] | None:
        rtype = res.get("resourceType")
        if not isinstance(rtype, str) or rtype not in self.m.resources:
            self.labels.add("REDACTED")
            return None
        out: dict[str, Any] = {"resourceType": rtype}
        rid = res.get("id")
        if isinstance(rid, str):
            out["id"] = self.d.pseudonyms.local_id(rid) if contained else \
                self.d.pseudonyms.resource_id(rtype, rid)
            self.labels.add("PSEUDED")
        props = self.m.types[rtype]
        for key, value in res.items():
            if key in ("resourceType", "id"):
                continue
            if key == "contained":
                items = value if isinstance(value, list) else [value]
                kept = [c for c in (self.resource(i, True) for i in items if isinstance(i, dict))
                        if c is not None]
                if kept:
                    out["contained"] = kept
                continue
            if key == "meta":
                meta = self.meta(value, contained)
                if meta:
                    out["meta"] = meta
                continue
            self.property(out, key, value, props, rtype)
        self.fill_required(out, rtype)
        return out

    def meta(self, meta: Any, contained: bool) -> dict[str, Any] | None:
        if not isinstance(meta, dict):
            return None
        out: dict[str, Any] = {}
        profiles = [p for p in meta.get("profile", []) if isinstance(p, str)
                    and p.startswith("http://hl7.org/fhir/") and " " not in p]
        if profiles:
            out["profile"] = profiles
        for key in ("tag",) if contained else ("tag", "security"):
            codings = [c for c in (self.coding(c) for c in _listed(meta.get(key))) if c]
            if codings:
                out[key] = codings
        if not contained and isinstance(meta.get("lastUpdated"), str):
            updated = self.date(meta["lastUpdated"], "instant")
            if updated:
                out["lastUpdated"] = updated
        if set(meta) - set(out):
            self.labels.add("REDACTED")
        return out

    # -- properties ---------------------------------------------------------------------

    def property(self, out: dict[str, Any], key: str, value: Any,
                 props: dict[str, Element], parent: str) -> None:
        """Walk ``key: value`` of an object of type ``parent`` into ``out``."""
        if key.startswith("_"):
            el = props.get(key[1:])
            if el is not None and not el.array and isinstance(value, dict):
                kept = self.extensions(value.get("extension"))
                if kept:
                    out[key] = {"extension": kept}
                    return
            self.labels.add("REDACTED")
            return
        el = props.get(key)
        if el is None:
            self.labels.add("REDACTED")
            return
        if el.array:
            items = value if isinstance(value, list) else [value]
            kept = [v for v in (self.one(i, el, parent) for i in items) if v is not None]
            if len(kept) < len(items):
                self.labels.add("REDACTED")
            if kept:
                out[key] = kept
            return
        walked = None if isinstance(value, list) else self.one(value, el, parent)
        if walked is None:
            self.labels.add("REDACTED")
        else:
            out[key] = walked
        if key == "birthDate" and walked is None and isinstance(value, str):
            out["_birthDate"] = DAR

    def one(self, value: Any, el: Element, parent: str) -> Any:
        if value is None:
            return None
        if el.type in self.m.primitives:
            return self.primitive(value, el, parent)
        if el.type == "Resource":
            return self.d.nested(value) if isinstance(value, dict) else None
        if el.type == "Extension":
            return self.extension(value, False)
        return self.complex(value, el.type, el.key)

    def fill_required(self, out: dict[str, Any], type_name: str) -> bool:
        """Mask required elements that were dropped; True if any was."""
        filled = False
        props = self.m.types[type_name]
        for keys in self.m.required[type_name]:
            if any(k in out or "_" + k in out for k in keys):
                continue
            el = props[keys[0]]
            if el.type == "Resource":
                continue
            if el.type in self.m.primitives:
                out["_" + el.key] = [DAR] if el.array else DAR
                if el.array:
                    out[el.key] = [None]
            else:
                masked = self.masked(el.type)
                out[el.key] = [masked] if el.array else masked
            filled = True
            self.labels.add("MASKED")
        return filled

    def masked(self, type_name: str, depth: int = 0) -> dict[str, Any]:
        """A data-absent-reason value of a complex type, its own required parts masked."""
        out: dict[str, Any] = {"extension": list(DAR["extension"])}
        if depth < 4 and type_name in self.m.types:
            props = self.m.types[type_name]
            for keys in self.m.required[type_name]:
                el = props[keys[0]]
                if el.type == "Resource":
                    continue
                if el.type in self.m.primitives:
                    out["_" + el.key] = [DAR] if el.array else DAR
                    if el.array:
                        out[el.key] = [None]
                else:
                    inner = self.masked(el.type, depth + 1)
                    out[el.key] = [inner] if el.array else inner
        return out

    # -- complex types ------------------------------------------------------------------

    def complex(self, value: Any, type_name: str, key: str) -> Any:
        if not isinstance(value, dict) or type_name not in self.m.types:
            return None
        self.depth += 1
        try:
            return self._complex(value, type_name, key)
        finally:
            self.depth -= 1

    def _complex(self, value: dict[str, Any], type_name: str, key: str) -> Any:
        if self.depth > MAX_DEPTH:
            raise DeidError(f"resource nested deeper than {MAX_DEPTH} levels")
        if type_name in _DROPPED_TYPES or (type_name == "Attachment" and key == "photo"):
            return None
        special = _SPECIAL.get(type_name)
        if special is not None:
            return special(self, value)
        out: dict[str, Any] = {}
        props = self.m.types[type_name]
        for k, v in value.items():
            if k == "id":
                self.labels.add("REDACTED")
                continue
            self.property(out, k, v, props, type_name)
        if type_name == "Annotation" and "text" not in out:
            return None
        substance = bool(out)
        self.fill_required(out, type_name)
        return out if substance else None

    def extensions(self, items: Any, parent_known: bool = False) -> list[dict[str, Any]]:
        return [e for e in (self.extension(i, parent_known) for i in _listed(items)) if e]

    def extension(self, ext: Any, parent_known: bool) -> dict[str, Any] | None:
        if not isinstance(ext, dict) or not isinstance(ext.get("url"), str):
            return None
        if self.depth > MAX_DEPTH:
            raise DeidError(f"resource nested deeper than {MAX_DEPTH} levels")
        url = ext["url"]
        if url in _DROPPED_EXTENSIONS:
            self.labels.add("REDACTED")
            return None
        known = sl.is_known_extension(url, parent_known)
        if not known:
            url = self.d.pseudonyms.extension_url(url)
            self.labels.add("PSEUDED")
        out: dict[str, Any] = {"url": url}
        self.depth += 1
        try:
            nested = self.extensions(ext.get("extension"), known)
        finally:
            self.depth -= 1
        if nested:
            out["extension"] = nested
        props = self.m.types["Extension"]
        for key, value in ext.items():
            el = props.get(key)
            if el is not None and el.choice == "value":
                walked = self.one(value, el, "Extension")
                if walked is not None:
                    out[key] = walked
                    break
                self.labels.add("REDACTED")
        return out if len(out) > 1 else None

    def reference(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        if isinstance(ref.get("reference"), str):
            rewritten = self.d.pseudonyms.reference(ref["reference"])
            if rewritten:
                out["reference"] = rewritten
                self.labels.add("PSEUDED")
        if isinstance(ref.get("type"), str) and ref["type"] in self.m.resources:
            out["type"] = ref["type"]
        ident = self.identifier(ref["identifier"]) if "identifier" in ref else None
        if ident:
            out["identifier"] = ident
        if set(ref) - set(out):
            self.labels.add("REDACTED")
        return out if "reference" in out or "identifier" in out else None

    def identifier(self, ident: Any) -> dict[str, Any] | None:
        self.labels.add("REDACTED")
        if not self.d.profile.pseudonymize_identifiers or not isinstance(ident, dict):
            return None
        value = ident.get("value")
        if not isinstance(value, str):
            return None
        system = ident.get("system") if isinstance(ident.get("system"), str) else None
        out: dict[str, Any] = {}
        if ident.get("use") in ("usual", "official", "temp", "secondary", "old"):
            out["use"] = ident["use"]
        kind = self.complex(ident.get("type"), "CodeableConcept", "type")
        if kind:
            out["type"] = kind
        out["system"], out["value"] = self.d.pseudonyms.identifier(system, value)
        self.labels.add("PSEUDED")
        return out

    def coding(self, coding: Any) -> dict[str, Any] | None:
        if not isinstance(coding, dict):
            return None
        system, code = coding.get("system"), coding.get("code")
        if not (isinstance(system, str) and isinstance(code, str) and sl.keep_code(system, code)):
            self.labels.add("REDACTED")
            return None
        out: dict[str, Any] = {"system": system, "code": code}
        if isinstance(coding.get("userSelected"), bool):
            out["userSelected"] = coding["userSelected"]
        if set(coding) - set(out):
            self.labels.add("REDACTED")
        return out

    def codeable(self, concept: dict[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        codings = [c for c in (self.coding(c) for c in _listed(concept.get("coding"))) if c]
        if codings:
            out["coding"] = codings
        if isinstance(concept.get("text"), str):
            text = self.free_text(concept["text"])
            if text:
                out["text"] = text
        return out or None

    def quantity(self, q: dict[str, Any], age: bool = False) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        value = q.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            out["value"] = value
        if q.get("comparator") in ("<", "<=", ">=", ">"):
            out["comparator"] = q["comparator"]
        code = q.get("code")
        if q.get("system") == sl.UCUM and isinstance(code, str) and sl.valid_ucum(code):
            out.update(unit=code, system=sl.UCUM, code=code)
        if isinstance(q.get("currency"), str) and _currency(q["currency"]):
            out["currency"] = q["currency"]
        unit = str(q.get("code") or q.get("unit") or ("a" if age else "")).strip().lower()
        if (age or out.get("code") == "a") and isinstance(value, int | float) and \
                value > 89 and unit in _YEAR_WORDS:
            out["value"], out["comparator"] = 90, ">="
            self.labels.add("ABSTRED")
        if set(q) - set(out):
            self.labels.add("REDACTED")
        return out or None

    def attachment(self, att: dict[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        if isinstance(att.get("contentType"), str) and sl.valid_mime(att["contentType"]):
            out["contentType"] = att["contentType"]
        if isinstance(att.get("language"), str) and sl.valid_bcp47(att["language"]):
            out["language"] = att["language"]
        if isinstance(att.get("creation"), str):
            created = self.date(att["creation"], "dateTime")
            if created:
                out["creation"] = created
        if set(att) - set(out):
            self.labels.add("REDACTED")
        return out or None

    def address(self, addr: dict[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for key in ("use", "type"):
            value = addr.get(key)
            el = self.m.types["Address"][key]
            if isinstance(value, str) and value in self.m.value_sets.get(el.value_set or "", ()):
                out[key] = value
        country = addr.get("country")
        if isinstance(country, str) and sl.keep_country(country):
            out["country"] = country
        if isinstance(addr.get("state"), str) and sl.keep_state(addr["state"]):
            out["state"] = addr["state"]
        us = country is None or (isinstance(country, str) and country.strip().upper() in
                                 ("US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA"))
        if us and isinstance(addr.get("postalCode"), str):
            zip3 = self.d.zip3.apply(addr["postalCode"])
            if zip3:
                out["postalCode"] = zip3
                self.labels.add("ABSTRED")
        period = self.complex(addr.get("period"), "Period", "period")
        if period:
            out["period"] = period
        self.labels.add("REDACTED")
        return out if set(out) - {"use", "type"} else None

    # -- primitives ---------------------------------------------------------------------

    def primitive(self, value: Any, el: Element, parent: str) -> Any:
        t = el.type
        if t in _KEPT:
            if t == "boolean":
                return value if isinstance(value, bool) else None
            if t in _NUMBER:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                return value if ok else None
            return value if isinstance(value, str) else None
        if not isinstance(value, str):
            return None
        if t in _DATES:
            if el.key == "birthDate" and (self.d.age_at_event or is_old(value, self.d.today)):
                return None
            return self.date(value, t)
        if t == "code":
            return value if self.code_ok(value, el) else None
        if t in ("string", "markdown") and (el.key in FREE_TEXT or
                                            (parent == "Annotation" and el.key == "text")):
            return self.free_text(value)
        if t == "canonical" and value.startswith(self.d.canonical_prefixes) and \
                len(value) <= 256 and not any(c.isspace() for c in value):
            return value
        if el.key == "linkId" and _LINK_ID(value) and not find_phi(value):
            return value
        if t == "uri" and el.key == "fullUrl":
            rewritten = self.d.pseudonyms.reference(value)
            return rewritten if rewritten and rewritten.startswith("urn:uuid:") else None
        return None

    def code_ok(self, value: str, el: Element) -> bool:
        if el.value_set is not None:
            codes = self.m.value_sets.get(el.value_set)
            if codes is not None:
                return value in codes
            check = _UNEXPANDED.get(el.value_set)
            return check is not None and check(value)
        check = _UNBOUND_CODES.get(el.key)
        return check is not None and check(value)

    def date(self, value: str, type_name: str) -> str | None:
        if self.d.profile.shift_dates:
            shifted = shift_date(value, self.offset)
            if shifted:
                self.labels.add("MASKED")
            return shifted
        if type_name == "instant":
            return None
        year = year_of(value)
        if year and year != value:
            self.labels.add("ABSTRED")
        return year

    def free_text(self, text: str) -> str | None:
        self.labels.add("REDACTED")
        if not self.d.allow_scrubbed_text:
            return None
        scrubbed, _count = scrub_text(text)
        return scrubbed if scrubbed.strip() else None


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


_SPECIAL: dict[str, Any] = {
    "Reference": ResourceWalk.reference,
    "Identifier": ResourceWalk.identifier,
    "Coding": ResourceWalk.coding,
    "CodeableConcept": ResourceWalk.codeable,
    "Attachment": ResourceWalk.attachment,
    "Address": ResourceWalk.address,
    "Age": lambda walk, q: walk.quantity(q, age=True),
    **{name: ResourceWalk.quantity for name in _QUANTITIES - {"Age"}},
}
