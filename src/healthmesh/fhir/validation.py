"""Fast FHIR R4 resource validation, driven by a model generated from the core definitions.

The model (``data/r4-model.json.gz``, written by ``tools/gen_fhir_model.py`` from the
official StructureDefinitions) is loaded once, lazily, and compiled into one
:class:`_TypeDef` per resource, datatype and backbone element: a dict from JSON property
name to a slotted :class:`_Prop`. Validation never raises; it returns every problem as
an :class:`~healthmesh.errors.Issue`::

    from healthmesh.fhir.validation import validate
    validate({"resourceType": "Patient", "gender": "mail"})
    # [Issue("error", "code-invalid", "'mail' is not in ...", "Patient.gender")]

It runs in two stages. :class:`_FastPath` generates one specialised Python function per
type (on first use of a resource type) that only answers "certainly valid"; valid
resources, the common case, cost just that. Anything else goes to :class:`_Walk`, the
reporting walk, which finds and explains every problem. The fast path is never more
lenient than the walk (``tests/test_validation.py`` checks this on mutated resources).

Checks: ``resourceType``; unknown properties; JSON types; cardinality (arrays vs
single values, min and max); one variant per choice element; primitive formats (the
regex of each primitive type, real calendar dates, integer ranges, string length);
``_element`` siblings of primitives (arrays aligned with nulls); no empty
strings/objects/arrays and no nulls (FHIR JSON rules, ele-1); required bindings whose
value set can be expanded locally; Reference.reference format and target types, and
that local ``#id`` references resolve to a contained resource (ref-1); Extension
structure (``url``, one ``value[x]``, ext-1); contained, Bundle and Parameters resources
recursively (a contained resource may not contain resources, meta.versionId,
meta.lastUpdated or security labels: dom-2, dom-4, dom-5); a nesting depth limit
(:data:`MAX_DEPTH`).

Issue codes: ``structure`` for unknown properties, wrong JSON types, nulls, empty
objects/arrays and arrays where a single value is expected (and the reverse);
``required`` for missing required elements and a missing ``resourceType``; ``value``
for badly formatted primitives (including empty strings); ``code-invalid`` for
required-binding violations; ``too-costly`` when the nesting depth limit is hit;
``invalid`` for everything else (references, choice types, unknown resource types,
invariants). Locations are FHIRPath: choice elements are written
``Observation.value.ofType(Quantity)``, primitive extensions sit under the element they
extend (``Patient.birthDate.extension[0]``), and embedded resources continue the path
of their container (``Bundle.entry[0].resource.status``).
"""

from __future__ import annotations

import gzip
import math
import re
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from healthmesh.errors import Issue

__all__ = ["MAX_DEPTH", "Validator", "resource_types", "validate"]

MAX_DEPTH = 64
"""Deepest object nesting walked; deeper input gets one ``too-costly`` issue."""

MODEL_PATH = Path(__file__).with_name("data") / "r4-model.json.gz"

# Property kinds.
_STRING, _BOOLEAN, _INTEGER, _DECIMAL, _XHTML = 0, 1, 2, 3, 4
_COMPLEX, _RESOURCE, _ELEMENT, _RESOURCE_TYPE = 5, 6, 7, 8
# Checks of a complex value after its structure.
_NO_CHECK, _REFERENCE, _CODING, _CODEABLE = 0, 1, 2, 3

_JSON_KINDS = {"string": _STRING, "boolean": _BOOLEAN, "integer": _INTEGER, "decimal": _DECIMAL}
_INT_RANGES = {
    "integer": (-(2**31), 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
}
_JSON_NAMES = {
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    dict: "object",
    list: "array",
    type(None): "null",
}
_LINEAR_REGEX = {
    # The definition's (\s*([0-9a-zA-Z\+/=]){4}\s*)+ backtracks exponentially on bad
    # input; this is the same language without the ambiguity.
    "base64Binary": r"\s*(?:[0-9a-zA-Z+/=]{4}\s*)+",
}
_PRINTABLE_REGEX = r"[ \r\n\t\S]+"
_NON_CAPTURING = re.compile(r"(?<!\\)\((?!\?)")
_DAY = "(0[1-9]|[1-2][0-9]|3[0-1])"
_SAFE_DAY = "(0[1-9]|1[0-9]|2[0-8])"
_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DATE_PARTS = re.compile(r"(\d{4})-(\d\d)-(\d\d)", re.ASCII)
_SEEN_SIZE = 8192
"""Valid string values remembered per primitive type (the set is emptied when full)."""
_SEEN_LENGTH = 200
"""Longest string value remembered."""

_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}", re.ASCII)
_RELATIVE = re.compile(
    r"([A-Z][A-Za-z]+)/[A-Za-z0-9\-\.]{1,64}(?:/_history/[A-Za-z0-9\-\.]{1,64})?", re.ASCII
)
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+", re.ASCII)
_ABSOLUTE_REST = re.compile(
    r".*/([A-Z][A-Za-z]+)/[A-Za-z0-9\-\.]{1,64}(?:/_history/[A-Za-z0-9\-\.]{1,64})?", re.ASCII
)
_CONDITIONAL = re.compile(r"([A-Z][A-Za-z]+)\?\S.*", re.ASCII | re.DOTALL)
_UUID = re.compile(
    r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII
).fullmatch
_RARE_KEYS = frozenset(("id", "extension", "modifierExtension"))
_NOT_IN_CONTAINED_META = {"versionId": "dom-4", "lastUpdated": "dom-4", "security": "dom-5"}
_XHTML_DIV = re.compile(r"\s*<div[\s>]", re.ASCII).match


# ================================================================== the model


class _Primitive:
    """A primitive type: its JSON kind and its checks.

    String values are checked by :meth:`accepts`: a set of values already found valid,
    then a cheap regex accepting a subset of valid values (non-capturing groups, days up
    to 28), then the precise :meth:`valid` (the definition's regex, length, calendar).
    """

    __slots__ = (
        "name", "kind", "regex", "fast", "max_length", "low", "high", "calendar", "seen",
    )  # fmt: skip

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.kind = _XHTML if name == "xhtml" else _JSON_KINDS[spec["json"]]
        source = _LINEAR_REGEX.get(name, spec.get("regex"))
        self.regex = re.compile(source, re.ASCII).fullmatch if source else None
        self.fast = self.regex
        if name == "xhtml":
            self.regex = self.fast = _XHTML_DIV
        elif source:
            self.fast = _fast_matcher(name, source)
        self.max_length = spec.get("maxLength") or sys.maxsize
        self.low, self.high = _INT_RANGES.get(name, (0, 0))
        self.calendar = source is not None and _DAY in source
        self.seen: set[str] = set()

    def valid(self, value: str) -> bool:
        """Whether a string value is a valid instance of this primitive (precisely)."""
        if not value or len(value) > self.max_length:
            return False
        if self.regex is not None and self.regex(value) is None:
            return False
        return not self.calendar or _real_date(value)

    def accepts(self, value: str) -> bool:
        """:meth:`valid`, fast for values seen before and for common shapes."""
        if value in self.seen:
            return True
        if not value:
            return False
        fast = self.fast
        if fast is not None and fast(value) and len(value) <= self.max_length:
            ok = True
        else:
            ok = self.valid(value)
        if ok and len(value) <= _SEEN_LENGTH:
            if len(self.seen) >= _SEEN_SIZE:
                self.seen.clear()
            self.seen.add(value)
        return ok


def _fast_matcher(name: str, source: str) -> Any:
    """A cheap test passing a subset of valid values; others take the precise path."""
    if source == _PRINTABLE_REGEX:  # string, markdown: isprintable() has no \x0b, \x0c
        return str.isprintable
    if name == "base64Binary":
        return re.compile(r"(?:[0-9a-zA-Z+/=]{4})+", re.ASCII).fullmatch
    source = _NON_CAPTURING.sub("(?:", source.replace(_DAY, _SAFE_DAY))
    return re.compile(source, re.ASCII).fullmatch


def _real_date(value: str) -> bool:
    """Whether the day of a date/dateTime/instant exists in its month."""
    parts = _DATE_PARTS.match(value)
    if parts is None:
        return True
    year, month, day = (int(p) for p in parts.groups())
    if day <= 28:
        return True
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _MONTH_DAYS[month]


class _Prop:
    """One JSON property of a type, with everything needed to check its values."""

    __slots__ = (
        "key", "seg", "kind", "array", "high", "type_name", "prim", "fast", "td", "codes",
        "systems", "value_set", "targets", "choice", "variant", "post", "ext_key", "main",
        "shares_scope",
    )  # fmt: skip

    def __init__(self, key: str, seg: str) -> None:
        self.key = key
        self.seg = seg  # FHIRPath segment: "name", "value.ofType(Quantity)"
        self.kind = _STRING
        self.array = False
        self.high = 1  # max cardinality, -1 for *
        self.type_name = ""
        self.prim: _Primitive | None = None
        self.fast: Any = None  # str -> bool, for string primitives
        self.td: _TypeDef | None = None
        self.codes: frozenset[str] | None = None  # required binding of a code
        self.systems: dict[str, frozenset[str]] | None = None  # ... of a Coding/CodeableConcept
        self.value_set: str | None = None
        self.targets: frozenset[str] | None = None  # reference targets; None is any
        self.choice: str | None = None  # choice group, "value" for value[x]
        self.variant = key  # key of the choice variant (without "_")
        self.post = _NO_CHECK
        self.ext_key: str | None = None  # "_x" sibling of a primitive "x"
        self.main: _Prop | None = None  # "x" of a "_x"
        self.shares_scope = False  # contained: local references resolve in the container


class _TypeDef:
    """A resource, datatype or backbone element: its properties and required ones."""

    __slots__ = ("name", "kind", "abstract", "props", "required", "is_extension")

    def __init__(self, name: str, kind: str, abstract: bool) -> None:
        self.name = name
        self.kind = kind
        self.abstract = abstract
        self.props: dict[str, _Prop] = {}
        # (keys any of which satisfies the element, FHIRPath segment)
        self.required: tuple[tuple[tuple[str, ...], str], ...] = ()
        self.is_extension = name == "Extension"


class _Model:
    """The compiled validation model."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.primitives = {n: _Primitive(n, s) for n, s in raw["primitives"].items()}
        code_ok = self.primitives["code"].valid
        self.value_sets = {
            url: {system: frozenset(filter(code_ok, codes)) for system, codes in systems.items()}
            for url, systems in raw["valueSets"].items()
        }
        self.unexpanded: dict[str, str] = raw["unexpandedValueSets"]
        self.types = {n: _TypeDef(n, t["kind"], t["abstract"]) for n, t in raw["types"].items()}
        self.element = self.types["Element"]
        for name, t in raw["types"].items():
            self._compile(self.types[name], t["elements"])
        self.resources = {
            n: td for n, td in self.types.items() if td.kind == "resource" and not td.abstract
        }
        self.resource_names = frozenset(self.resources)

    def _compile(self, td: _TypeDef, elements: list[dict[str, Any]]) -> None:
        required: dict[str, list[str]] = {}
        for el in elements:
            prop = self._prop(el)
            td.props[prop.key] = prop
            if prop.prim is not None and prop.kind != _XHTML:
                td.props["_" + prop.key] = self._element_prop(prop)
            if el.get("min", 0) > 0:
                keys = required.setdefault(el.get("choice") or el["name"], [])
                keys.append(prop.key)
                if prop.prim is not None and prop.kind != _XHTML:
                    keys.append("_" + prop.key)
        if td.kind == "resource":
            rt = _Prop("resourceType", "resourceType")
            rt.kind = _RESOURCE_TYPE
            rt.fast = bool  # checked before the walk
            td.props["resourceType"] = rt
        td.required = tuple((tuple(keys), seg) for seg, keys in required.items())

    def _prop(self, el: dict[str, Any]) -> _Prop:
        name, type_name, choice = el["name"], el["type"], el.get("choice")
        prop = _Prop(name, self._segment(name, choice))
        prop.choice = choice
        prop.type_name = type_name
        prop.high = -1 if el.get("max", "1") == "*" else int(el.get("max", "1"))
        prop.array = prop.high != 1
        if type_name in self.primitives:
            prim = self.primitives[type_name]
            prop.prim, prop.kind = prim, prim.kind
            prop.fast = prim.accepts if prim.kind == _STRING else None
        elif type_name == "Resource":
            prop.kind = _RESOURCE
            prop.shares_scope = name == "contained"
        else:
            prop.kind, prop.td = _COMPLEX, self.types[type_name]
        self._bind(prop, el)
        return prop

    def _segment(self, name: str, choice: str | None) -> str:
        if not choice:
            return name
        variant = name[len(choice) :]
        lower = variant[0].lower() + variant[1:]
        return f"{choice}.ofType({lower if lower in self.primitives else variant})"

    def _bind(self, prop: _Prop, el: dict[str, Any]) -> None:
        if "targets" in el:
            prop.targets = frozenset(el["targets"])
        if prop.type_name == "Reference":
            prop.post = _REFERENCE
        url = el.get("valueSet")
        if url is None or url not in self.value_sets:
            return
        prop.value_set = url
        systems = self.value_sets[url]
        if prop.kind == _STRING:
            prop.codes = frozenset().union(*systems.values())
            prop.fast = prop.codes.__contains__
        else:
            prop.systems = systems
            prop.post = _CODING if prop.type_name == "Coding" else _CODEABLE

    def _element_prop(self, main: _Prop) -> _Prop:
        prop = _Prop("_" + main.key, main.seg)
        prop.kind, prop.td, prop.main = _ELEMENT, self.element, main
        prop.array, prop.high = main.array, main.high
        prop.choice, prop.variant = main.choice, main.key
        main.ext_key = prop.key
        return prop


_model: _Model | None = None
_fast: _FastPath | None = None
_default: Validator | None = None


def _load() -> _Model:
    """The compiled model, loaded on first use."""
    global _model
    if _model is None:
        _model = _Model(orjson.loads(gzip.decompress(MODEL_PATH.read_bytes())))
    return _model


def _fast_path() -> _FastPath:
    """The generated fast path, created on first use."""
    global _fast
    if _fast is None:
        _fast = _FastPath(_load())
    return _fast


# ================================================================== the fast path


class _FastPath:
    """Checking functions generated per type from the model, compiled on first use.

    Each generated ``f_<Type>(o, d, c)`` returns True only when the object is valid;
    anything unusual (an error, a ``_x`` primitive extension, an absolute reference, ...)
    may return False, and the caller then runs the reporting walk, which decides and
    explains. ``d`` is the nesting depth and ``c`` the local-reference scope:
    ``[allow_conditional, (local_id, targets), ...]``.
    """

    def __init__(self, model: _Model) -> None:
        self._m = model
        self._lock = threading.Lock()
        self._functions: dict[str, Any] = {}
        self._consts: dict[int, str] = {}
        self._known: dict[frozenset[str] | None, dict[str, Any]] = {}
        builtins = {f.__name__: f for f in (type, str, dict, list, int, float, len)}
        self._ns: dict[str, Any] = {
            "__builtins__": builtins,
            "MAX_DEPTH": MAX_DEPTH,
            "_reference": self._reference,
            "_coding": _fast_coding,
            "_codeable": _fast_codeable,
            "_contained": self._contained,
            "_resource": self._resource,
        }

    def check(self, res: dict[str, Any], rt: str, depth: int, conditional: bool) -> bool:
        """Whether resource ``res`` of type ``rt`` is certainly valid (own reference scope)."""
        fn = self._functions.get(rt) or self._compile(rt)
        scope = [conditional]
        return fn(res, depth, scope) and (len(scope) == 1 or _fast_resolve(res, rt, scope))

    def _resource(self, res: dict[str, Any], depth: int, conditional: bool) -> bool:
        rt = res.get("resourceType")
        if type(rt) is not str or rt not in self._m.resources:
            return False
        return self.check(res, rt, depth, conditional)

    def _contained(self, res: dict[str, Any], depth: int, scope: list[Any]) -> bool:
        rt = res.get("resourceType")
        if type(rt) is not str or rt not in self._m.resources or "contained" in res:
            return False
        meta = res.get("meta")
        if type(meta) is dict and any(key in meta for key in _NOT_IN_CONTAINED_META):
            return False
        fn = self._functions.get(rt) or self._compile(rt)
        return fn(res, depth, scope)  # type: ignore[no-any-return]

    def _reference(
        self, ref: dict[str, Any], targets: Any, known: dict[str, Any], scope: list[Any]
    ) -> bool:
        """Relative, ``urn:uuid:``, local and (if allowed) conditional references.

        ``known`` remembers, for the targets of one element, references already found
        valid: reference -> (target type or "" when unknown, whether it is conditional).
        """
        r = ref.get("reference")
        if r is None:
            return True
        hit = known.get(r)
        if hit is None:
            if r[0] == "#":
                if r != "#" and _ID.fullmatch(r, 1) is None:
                    return False
                scope.append((r[1:], targets))
                return True
            hit = self._target(r, targets)
            if hit is None:
                return False
            if len(known) >= _SEEN_SIZE:
                known.clear()
            known[r] = hit
        found, conditional = hit
        if conditional and not scope[0]:
            return False
        kind = ref.get("type")
        return kind is None or (found != "" and kind == found)

    def _target(self, r: str, targets: Any) -> tuple[str, bool] | None:
        if r.startswith("urn:uuid:"):
            return ("", False) if _UUID(r) is not None else None
        m = _RELATIVE.fullmatch(r)
        conditional = m is None
        m = m or _CONDITIONAL.fullmatch(r)
        if m is None:
            return None
        found = m.group(1)
        if found not in self._m.resources or (targets is not None and found not in targets):
            return None
        return found, conditional

    # ----------------------------------------------------------------- code generation

    def _compile(self, root: str) -> Any:
        """Generate and compile ``root`` and every type it uses that is not compiled yet."""
        with self._lock:
            if root not in self._functions:
                names: list[str] = []
                sources: list[str] = []
                todo = [root]
                while todo:
                    name = todo.pop()
                    if name not in self._functions and name not in names:
                        names.append(name)
                        sources.append(self._source(self._m.types[name], todo))
                code = compile("\n".join(sources), "<healthmesh-fhir-fast-path>", "exec")
                exec(code, self._ns)  # source generated from the model only
                for name in names:
                    self._functions[name] = self._ns[_fn_name(name)]
        return self._functions[root]

    def _const(self, value: Any) -> str:
        """The global name under which generated code sees ``value``."""
        name = self._consts.get(id(value))
        if name is None:
            name = self._consts[id(value)] = f"C{len(self._consts)}"
            self._ns[name] = value
        return name

    def _source(self, td: _TypeDef, todo: list[str]) -> str:
        keys = [k for k in td.props if not k.startswith("_")]
        groups = sorted({p.choice for p in td.props.values() if p.choice})
        lines = [f"def {_fn_name(td.name)}(o, d, c):", "    if d >= MAX_DEPTH:"]
        lines += ["        return False", *(f"    g_{g} = 0" for g in groups)]
        lines.append("    for k, x in o.items():")
        if len(keys) <= 8:  # a chain of string comparisons, rarely used keys last
            keys.sort(key=lambda k: k in _RARE_KEYS)
            for n, key in enumerate(keys):
                lines.append(f"        {'elif' if n else 'if'} k == {key!r}:")
                lines += self._check(td.props[key], 12, todo)
            lines += ["        else:", "            return False"]
        else:  # key -> index, then a binary decision tree
            index = self._const({key: n for n, key in enumerate(keys)})
            lines += [f"        i = {index}.get(k)", "        if i is None:"]
            lines += ["            return False", *self._tree(td, keys, 0, len(keys), 8, todo)]
        for alternatives, _ in td.required:
            test = " and ".join(f"{k!r} not in o" for k in alternatives)
            lines += [f"    if {test}:", "        return False"]
        if td.is_extension:  # ext-1
            lines += ["    if (g_value != 0) == ('extension' in o):", "        return False"]
        lines.append("    return True\n")
        return "\n".join(lines)

    def _tree(
        self, td: _TypeDef, keys: list[str], lo: int, hi: int, ind: int, todo: list[str]
    ) -> list[str]:
        """A binary decision tree over key indexes ``lo <= i < hi``."""
        pad = " " * ind
        if hi - lo <= 3:
            lines = []
            for n in range(lo, hi):
                test = "else:" if n == hi - 1 else f"{'elif' if n > lo else 'if'} i == {n}:"
                lines.append(pad + test)
                lines += self._check(td.props[keys[n]], ind + 4, todo)
            return lines
        mid = (lo + hi) // 2
        return [
            f"{pad}if i < {mid}:",
            *self._tree(td, keys, lo, mid, ind + 4, todo),
            f"{pad}else:",
            *self._tree(td, keys, mid, hi, ind + 4, todo),
        ]

    def _check(self, p: _Prop, ind: int, todo: list[str]) -> list[str]:
        """Statements checking value ``x`` of property ``p``; ``return False`` on doubt."""
        pad = " " * ind
        lines = []
        if p.choice:
            lines += [f"{pad}if g_{p.choice}:", f"{pad}    return False"]
            lines.append(f"{pad}g_{p.choice} = 1")
        if p.kind == _RESOURCE_TYPE:
            return [*lines, pad + "pass"]
        if not p.array:
            return [*lines, f"{pad}if {self._invalid(p, 'x', todo)}:", f"{pad}    return False"]
        lines += [f"{pad}if type(x) is not list or not x:", f"{pad}    return False"]
        if p.high > 1:
            lines += [f"{pad}if len(x) > {p.high}:", f"{pad}    return False"]
        lines += [f"{pad}for y in x:", f"{pad}    if {self._invalid(p, 'y', todo)}:"]
        return [*lines, f"{pad}        return False"]

    def _invalid(self, p: _Prop, v: str, todo: list[str]) -> str:
        """An expression that is true when value ``v`` of ``p`` is not certainly valid."""
        kind, prim = p.kind, p.prim
        if kind == _STRING and p.codes is not None:
            return f"type({v}) is not str or {v} not in {self._const(p.codes)}"
        if kind == _STRING and prim is not None:
            seen, accepts = self._const(prim.seen), self._const(prim.accepts)
            return f"type({v}) is not str or ({v} not in {seen} and not {accepts}({v}))"
        if kind == _XHTML:
            return f"type({v}) is not str or not {self._const(_XHTML_DIV)}({v})"
        if kind == _BOOLEAN:
            return f"{v} is not True and {v} is not False"
        if kind == _INTEGER and prim is not None:
            return f"type({v}) is not int or not {prim.low} <= {v} <= {prim.high}"
        if kind == _DECIMAL:  # finite: inf - inf and nan - nan are nan
            return f"type({v}) is not int and (type({v}) is not float or {v} - {v} != 0)"
        if kind == _RESOURCE:
            if p.shares_scope:
                return f"type({v}) is not dict or not _contained({v}, d + 1, c)"
            return f"type({v}) is not dict or not _resource({v}, d + 1, c[0])"
        return self._invalid_complex(p, v, todo)

    def _invalid_complex(self, p: _Prop, v: str, todo: list[str]) -> str:
        assert p.td is not None
        todo.append(p.td.name)
        test = f"type({v}) is not dict or not {v} or not {_fn_name(p.td.name)}({v}, d + 1, c)"
        if p.post == _REFERENCE:
            known = self._const(self._known.setdefault(p.targets, {}))
            test += f" or not _reference({v}, {self._const(p.targets)}, {known}, c)"
        elif p.post == _CODING:
            test += f" or not _coding({v}, {self._const(p.systems)})"
        elif p.post == _CODEABLE:
            test += f" or not _codeable({v}, {self._const(p.systems)})"
        return test


def _fn_name(type_name: str) -> str:
    return "f_" + type_name.replace(".", "_")


def _fast_coding(coding: dict[str, Any], systems: dict[str, frozenset[str]]) -> bool:
    codes = systems.get(coding.get("system"))  # type: ignore[arg-type]
    return codes is None or "code" not in coding or coding["code"] in codes


def _fast_codeable(concept: dict[str, Any], systems: dict[str, frozenset[str]]) -> bool:
    return all(_fast_coding(coding, systems) for coding in concept.get("coding", ()))


def _fast_resolve(res: dict[str, Any], rt: str, scope: list[Any]) -> bool:
    """Whether every local reference collected in ``scope`` resolves to an allowed type."""
    contained = {"": rt}
    for item in res.get("contained", ()):
        contained[item.get("id")] = item["resourceType"]
    for ref_id, targets in scope[1:]:
        found = contained.get(ref_id)
        if found is None or (targets is not None and found not in targets):
            return False
    return True


# ================================================================== the reporting walk


class _Walk:
    """One validation that walks the whole resource and records every issue."""

    def __init__(self, model: _Model, conditional: bool) -> None:
        self.m = model
        self.conditional = conditional
        self.issues: list[Issue] = []
        self.local_refs: list[tuple[str, frozenset[str] | None, str]] = []

    def error(self, code: str, message: str, path: str) -> None:
        self.issues.append(Issue("error", code, message, path))

    # ----------------------------------------------------------------- resources

    def resource(self, res: dict[str, Any], path: str | None, depth: int, shared: bool) -> None:
        """Check a resource; ``shared`` when contained (same local-reference scope)."""
        rt = res.get("resourceType")
        td = self.m.resources.get(rt) if type(rt) is str else None
        if td is None:
            self._bad_resource_type(rt, path)
            return
        here = td.name if path is None else path
        if shared:
            self._contained_rules(res, here)
            self._object(res, td, here, depth)
            return
        outer, self.local_refs = self.local_refs, []
        self._object(res, td, here, depth)
        if self.local_refs:
            self._resolve_local(res, td.name)
        self.local_refs = outer

    def _contained_rules(self, res: dict[str, Any], here: str) -> None:
        """dom-2, dom-4 and dom-5: what a contained resource cannot have."""
        if "contained" in res:
            msg = "A contained resource cannot contain resources (dom-2)"
            self.error("invalid", msg, here + ".contained")
        meta = res.get("meta")
        for key, rule in _NOT_IN_CONTAINED_META.items():
            if isinstance(meta, dict) and key in meta:
                msg = f"A contained resource cannot have meta.{key} ({rule})"
                self.error("invalid", msg, f"{here}.meta.{key}")

    def _bad_resource_type(self, rt: Any, path: str | None) -> None:
        where = path or "resourceType"
        if rt is None:
            self.error("required", "Missing resourceType", where)
        elif type(rt) is str and rt in self.m.types:
            self.error("invalid", f"{rt} is abstract or not a resource type", where)
        else:
            self.error("invalid", f"Unknown resourceType {_short(rt)}", where)

    def _resolve_local(self, res: dict[str, Any], rt: str) -> None:
        """Local ``#id`` references must point at a contained resource of an allowed type."""
        contained = {"": rt}
        items = res.get("contained")
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and type(item.get("id")) is str:
                kind = item.get("resourceType")
                contained[item["id"]] = kind if type(kind) is str else "?"
        for ref_id, targets, loc in self.local_refs:
            found = contained.get(ref_id)
            if found is None:
                msg = f"Local reference #{ref_id} does not match a contained resource (ref-1)"
                self.error("invalid", msg, loc)
            elif targets is not None and found not in targets:
                self._wrong_target(found, targets, loc)

    # ----------------------------------------------------------------- objects

    def _object(self, obj: dict[str, Any], td: _TypeDef, path: str, depth: int) -> None:
        if depth >= MAX_DEPTH:
            self.error("too-costly", f"Nesting deeper than {MAX_DEPTH} levels", path)
            return
        chosen: dict[str, str] = {}
        for key, value in obj.items():
            p = td.props.get(key)
            if p is None:
                where = td.name if td.kind != "backbone" else path
                self.error(
                    "structure", f"Unknown element {_short(key)} in {where}", f"{path}.{key}"
                )
                continue
            if p.choice is not None and chosen.setdefault(p.choice, p.variant) != p.variant:
                msg = f"Only one of {chosen[p.choice]!r} and {p.variant!r} is allowed"
                self.error("invalid", f"{msg} ({p.choice}[x] has one value)", f"{path}.{p.choice}")
            if not p.array:
                self._value(p, value, obj, path, -1, depth)
            elif type(value) is list and value:
                for index, item in enumerate(value):
                    self._value(p, item, obj, path, index, depth)
                if p.kind == _ELEMENT:
                    self._aligned(p, obj, path)
                if 1 < p.high < len(value):
                    self.error("invalid", f"At most {p.high} values allowed", f"{path}.{p.seg}")
            else:
                self._not_array(p, value, obj, path, depth)
        self._required(obj, td, path)
        if td.is_extension:
            self._extension(obj, path)

    def _value(
        self, p: _Prop, value: Any, obj: dict[str, Any], path: str, index: int, depth: int
    ) -> None:
        """Check one value (an array item when ``index >= 0``) of property ``p``."""
        fast = p.fast
        if fast is not None and type(value) is str and fast(value):
            return
        loc = f"{path}.{p.seg}[{index}]" if index >= 0 else f"{path}.{p.seg}"
        if value is None:
            self._null(p, obj, index, loc)
        elif index < 0 and isinstance(value, list):
            msg = f"{p.key!r} must be a single value, not an array (max cardinality 1)"
            self.error("structure", msg, loc)
        elif p.kind in (_COMPLEX, _ELEMENT, _RESOURCE):
            self._complex(p, value, loc, depth)
        elif p.prim is not None:
            self._primitive(p, p.prim, value, loc)

    def _complex(self, p: _Prop, value: Any, loc: str, depth: int) -> None:
        if not isinstance(value, dict):
            self.error("structure", f"Expected an object, found {_json_name(value)}", loc)
        elif not value:
            self.error("structure", "Empty object (ele-1)", loc)
        elif p.kind == _RESOURCE:
            self.resource(value, loc, depth + 1, p.shares_scope)
        else:
            assert p.td is not None
            self._object(value, p.td, loc, depth + 1)
            if p.post:
                self._post(p, value, loc)

    # ----------------------------------------------------------------- structure errors

    def _not_array(self, p: _Prop, value: Any, obj: dict[str, Any], path: str, depth: int) -> None:
        if isinstance(value, list) and value:  # a list subclass
            for index, item in enumerate(value):
                self._value(p, item, obj, path, index, depth)
        elif isinstance(value, list):
            self.error("structure", "Empty array", f"{path}.{p.seg}")
        else:
            msg = f"{p.key!r} must be an array (max cardinality {'*' if p.high < 0 else p.high})"
            self.error("structure", msg, f"{path}.{p.seg}")

    def _null(self, p: _Prop, obj: dict[str, Any], index: int, loc: str) -> None:
        """A null is only allowed in a primitive array aligned with its ``_x`` array.

        Both ``x[i]`` and ``_x[i]`` null is reported once, on ``x``.
        """
        if index >= 0 and p.ext_key is not None:
            ext = obj.get(p.ext_key)
            if isinstance(ext, list) and index < len(ext) and ext[index] is not None:
                return
        if index >= 0 and p.main is not None:
            values = obj.get(p.main.key)
            if isinstance(values, list) and index < len(values):
                return
        self.error("structure", "Null is not allowed here", loc)

    def _aligned(self, p: _Prop, obj: dict[str, Any], path: str) -> None:
        """A ``_x`` array must have the length of its ``x`` array."""
        assert p.main is not None
        values, exts = obj.get(p.main.key), obj.get(p.key)
        if isinstance(values, list) and isinstance(exts, list) and len(values) != len(exts):
            msg = f"{p.key!r} has {len(exts)} items but {p.main.key!r} has {len(values)}"
            self.error("structure", msg + "; they must align", f"{path}.{p.seg}")

    def _required(self, obj: dict[str, Any], td: _TypeDef, path: str) -> None:
        for keys, seg in td.required:
            if not any(key in obj for key in keys):
                self.error("required", f"Missing required element {seg!r}", f"{path}.{seg}")

    def _extension(self, obj: dict[str, Any], path: str) -> None:
        has_value = any(type(k) is str and k.startswith(("value", "_value")) for k in obj)
        if has_value and "extension" in obj:
            msg = "An extension cannot have both extensions and a value[x] (ext-1)"
            self.error("invalid", msg, path)
        elif not has_value and "extension" not in obj:
            self.error("invalid", "An extension must have extensions or a value[x] (ext-1)", path)

    # ----------------------------------------------------------------- primitives

    def _primitive(self, p: _Prop, prim: _Primitive, value: Any, loc: str) -> None:
        kind = prim.kind
        if kind in (_STRING, _XHTML):
            self._string(p, prim, value, loc)
        elif kind == _BOOLEAN:
            if not isinstance(value, bool):
                self._wrong_json(prim, "boolean", value, loc)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong_json(prim, "number", value, loc)
        elif kind == _INTEGER:
            self._integer(prim, value, loc)
        elif not math.isfinite(value):
            self.error("value", f"{value!r} is not a valid decimal", loc)

    def _wrong_json(self, prim: _Primitive, want: str, value: Any, loc: str) -> None:
        found = _json_name(value)
        if isinstance(value, str | bool | int | float):
            found += " " + _short(value)
        self.error("structure", f"{prim.name} must be a JSON {want}, found {found}", loc)

    def _integer(self, prim: _Primitive, value: float, loc: str) -> None:
        if isinstance(value, float):
            self.error("structure", f"{prim.name} must be a JSON integer, found {value!r}", loc)
        elif not prim.low <= value <= prim.high:
            msg = f"{value} is out of range for {prim.name} [{prim.low}, {prim.high}]"
            self.error("value", msg, loc)

    def _string(self, p: _Prop, prim: _Primitive, value: Any, loc: str) -> None:
        if not isinstance(value, str):
            self._wrong_json(prim, "string", value, loc)
        elif not value:
            self.error("value", f"Empty string is not a valid {prim.name}", loc)
        elif prim.kind == _XHTML and not prim.valid(value):
            self.error("value", "Narrative div must be an XHTML <div> element", loc)
        elif not prim.valid(value):
            self.error("value", f"{_short(value)} is not a valid {prim.name}", loc)
        elif p.codes is not None and value not in p.codes:
            msg = f"{_short(value)} is not in the required value set {p.value_set}"
            self.error("code-invalid", msg, loc)

    # ----------------------------------------------------------------- bindings, references

    def _post(self, p: _Prop, value: dict[str, Any], loc: str) -> None:
        if p.post == _REFERENCE:
            ref = value.get("reference")
            if type(ref) is str and ref:
                self._reference(ref, value.get("type"), p.targets, loc + ".reference")
        elif p.post == _CODING:
            self._coding(p, value, loc)
        else:
            codings = value.get("coding")
            for index, coding in enumerate(codings if type(codings) is list else ()):
                if isinstance(coding, dict):
                    self._coding(p, coding, f"{loc}.coding[{index}]")

    def _coding(self, p: _Prop, coding: dict[str, Any], loc: str) -> None:
        system, code = coding.get("system"), coding.get("code")
        if type(system) is not str or type(code) is not str or p.systems is None:
            return
        codes = p.systems.get(system)
        if codes is not None and code not in codes:
            msg = f"{_short(code)} is not in the required value set {p.value_set}"
            self.error("code-invalid", msg, loc + ".code")

    def _reference(self, ref: str, kind: Any, targets: frozenset[str] | None, loc: str) -> None:
        """Check a Reference.reference string and, where its type is known, the target."""
        rel = _RELATIVE.fullmatch(ref)
        found = rel.group(1) if rel is not None else self._other_reference(ref, targets, loc)
        if found is None:
            return
        if found not in self.m.resource_names:
            self.error("invalid", f"Unknown resource type {found!r} in reference {ref!r}", loc)
        elif targets is not None and found not in targets:
            self._wrong_target(found, targets, loc)
        elif type(kind) is str and kind in self.m.resource_names and kind != found:
            self.error("invalid", f"Reference.type {kind} does not match {_short(ref)}", loc)

    def _other_reference(self, ref: str, targets: frozenset[str] | None, loc: str) -> str | None:
        """Non-relative references; the target type when it can be known, else None."""
        if ref.startswith("#"):
            if ref != "#" and _ID.fullmatch(ref, 1) is None:
                self.error("invalid", f"Invalid local reference {_short(ref)}", loc)
            else:
                self.local_refs.append((ref[1:], targets, loc))
            return None
        if ref.startswith(("urn:uuid:", "urn:oid:")):
            kind = "uuid" if ref.startswith("urn:uuid:") else "oid"
            if not self.m.primitives[kind].valid(ref):
                self.error("invalid", f"Invalid {kind} reference {_short(ref)}", loc)
            return None
        cond = _CONDITIONAL.fullmatch(ref)
        if cond is not None:
            if not self.conditional:
                self.error("invalid", f"Conditional reference {_short(ref)} not allowed here", loc)
            return cond.group(1)
        if _ABSOLUTE.fullmatch(ref) is None:
            expected = "Type/id, an absolute URL, #id, urn:uuid: or urn:oid:"
            self.error("invalid", f"Invalid reference {_short(ref)}: expected {expected}", loc)
            return None
        rest = _ABSOLUTE_REST.fullmatch(ref)
        if rest is not None and rest.group(1) in self.m.resource_names:
            return rest.group(1)
        return None

    def _wrong_target(self, found: str, targets: frozenset[str], loc: str) -> None:
        allowed = ", ".join(sorted(targets))
        self.error("invalid", f"A reference to {found} is not allowed here ({allowed})", loc)


def _json_name(value: Any) -> str:
    for cls, name in _JSON_NAMES.items():
        if isinstance(value, cls):
            return name
    return type(value).__name__


def _short(value: Any) -> str:
    """A short printable form of a value for messages (never walks containers)."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)
    return _json_name(value)


# ================================================================== public API


class Validator:
    """Validates FHIR R4 resources (JSON as Python dicts) against the core definitions.

    Instances share the compiled model and are safe to use from several threads.
    """

    def __init__(self) -> None:
        self._m = _load()
        self._fast = _fast_path()

    def validate(
        self, resource: dict[str, Any], *, allow_conditional_references: bool = False
    ) -> list[Issue]:
        """Every problem with ``resource``; an empty list when it is valid.

        ``allow_conditional_references`` accepts ``Type?search`` references (as in
        transaction Bundles), which are otherwise errors.
        """
        rt = resource.get("resourceType") if type(resource) is dict else None
        if (
            type(rt) is str
            and rt in self._m.resources
            and self._fast.check(resource, rt, 0, allow_conditional_references)
        ):
            return []
        walk = _Walk(self._m, allow_conditional_references)
        if isinstance(resource, dict):
            walk.resource(resource, None, 0, False)
        else:
            walk.error("structure", f"A resource must be an object, not {_json_name(resource)}", "")
        return walk.issues


def validate(
    resource: dict[str, Any], *, allow_conditional_references: bool = False
) -> list[Issue]:
    """Validate ``resource`` with the module's default :class:`Validator`."""
    global _default
    if _default is None:
        _default = Validator()
    return _default.validate(resource, allow_conditional_references=allow_conditional_references)


def _clear_caches() -> None:
    """Forget the valid values remembered so far (for benchmarks and tests)."""
    for primitive in _load().primitives.values():
        primitive.seen.clear()
    for known in _fast_path()._known.values():
        known.clear()


def resource_types() -> frozenset[str]:
    """Every concrete FHIR R4 resource type name."""
    return _load().resource_names
