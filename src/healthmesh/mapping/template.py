"""Resource templates: FHIR JSON with ``{column}`` placeholders and ``$`` directives.

A template is compiled once per mapping and rendered per row (or per group of rows):

- ``"{col}"`` alone is the column's typed value (a number stays a number); inside other
  text it is written as text (``"Patient/{patient_id}"``). ``{@name}`` is the id of the
  mapping's resource ``name`` for this row, ``{#}`` the row's 1-based position in its
  group. ``{{`` and ``}}`` are literal braces.
- an element whose value is missing (empty cell) is left out, and so is an object or list
  left empty; an object with ``$if: col`` is left out unless ``col`` has a value.
- ``{$coding: {system, code, display?, valueset?}}`` is a Coding (display from the code
  lists when not given; with ``valueset`` a code outside the value set rejects the row);
  ``$concept`` takes the same keys (plus ``text``) and gives a CodeableConcept;
- ``{$quantity: {value, unit?, default_unit?, to?, analyte?}}`` is a UCUM Quantity,
  converted to ``to`` (``analyte`` names the molar mass for mg/dL <-> mmol/L);
- ``{$sum: col}`` (grouped resources only) is the sum of ``col`` over the group's rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from healthmesh.terminology.codesystems import code_system, resolve_system
from healthmesh.terminology.errors import UnitError
from healthmesh.terminology.units import analyte, quantity, ucum_code
from healthmesh.terminology.valuesets import ValueSet, value_set

__all__ = ["RenderContext", "RowError", "Template", "TemplateError", "compile_template"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([@#]?[A-Za-z0-9_-]*)\}")
_DIRECTIVES = ("$coding", "$concept", "$quantity", "$sum")


class TemplateError(Exception):
    """A template problem at ``path`` (relative to the template), raised at load time."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


class RowError(Exception):
    """A row that cannot be rendered (value outside a value set, unit not convertible)."""


@dataclass(slots=True)
class RenderContext:
    """What a template is rendered with: the row's typed values, ids and group."""

    values: dict[str, Any]
    ids: dict[str, str]
    index: int = 1
    group: list[dict[str, Any]] = field(default_factory=list)


Node = Callable[[RenderContext], Any]


@dataclass(slots=True)
class Template:
    """A compiled template; ``render`` gives the element tree (None when empty)."""

    root: Node
    resource_refs: frozenset[str]
    conditional: bool = False  # has a conditional reference (Patient?identifier=...)

    def render(self, ctx: RenderContext) -> Any:
        return self.root(ctx)


class _Compiler:
    def __init__(self, columns: dict[str, Any], grouped: bool) -> None:
        self.columns, self.grouped = columns, grouped
        self.refs: set[str] = set()
        self.conditional = False

    def node(self, value: Any, path: tuple[Any, ...]) -> Node:
        if isinstance(value, dict):
            return self.obj(value, path)
        if isinstance(value, list):
            items = [self.node(v, (*path, i)) for i, v in enumerate(value)]
            return lambda ctx: _prune_list([item(ctx) for item in items])
        if isinstance(value, str):
            return self.text(value, path)
        if value is None:
            raise TemplateError(path, "an element with no value (remove it)")
        return lambda ctx: value

    def text(self, value: str, path: tuple[Any, ...]) -> Node:
        parts: list[Any] = []  # literal text or ("col"|"ref"|"index", name)
        pos = 0
        for match in _PLACEHOLDER.finditer(value):
            parts.append(value[pos:match.start()])
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            else:
                parts.append(self.placeholder(match.group(1), path))
            pos = match.end()
        parts.append(value[pos:])
        parts = [p for p in parts if p != ""]
        if not any(isinstance(p, tuple) for p in parts):
            text = "".join(parts)
            return lambda ctx: text
        if len(parts) == 1:
            only = parts[0]
            return lambda ctx: _lookup(only, ctx)
        return lambda ctx: _join(parts, ctx)

    def placeholder(self, name: str, path: tuple[Any, ...]) -> tuple[str, str]:
        if name == "#":
            return ("index", "")
        if name.startswith("@"):
            self.refs.add(name[1:])
            return ("ref", name[1:])
        if name not in self.columns:
            raise TemplateError(path, f"{{{name}}} is not a declared column")
        return ("col", name)

    def obj(self, value: dict[str, Any], path: tuple[Any, ...]) -> Node:
        directives = [k for k in value if isinstance(k, str) and k.startswith("$")
                      and k != "$if"]
        if directives:
            if len(value) != 1:
                raise TemplateError(path, f"{directives[0]} stands alone in its mapping")
            return self.directive(directives[0], value[directives[0]], (*path, directives[0]))
        guard = value.get("$if")
        if guard is not None and guard not in self.columns:
            raise TemplateError((*path, "$if"), f"{guard!r} is not a declared column")
        fields = [(k, self.node(v, (*path, k))) for k, v in value.items() if k != "$if"]
        reference = value.get("reference")
        if isinstance(reference, str) and "?" in reference:
            self.conditional = True

        def render(ctx: RenderContext) -> Any:
            if guard is not None and ctx.values.get(guard) is None:
                return None
            out = {k: v for k, v in ((k, f(ctx)) for k, f in fields) if v is not None}
            return out or None

        return render

    def directive(self, name: str, args: Any, path: tuple[Any, ...]) -> Node:
        if name not in _DIRECTIVES:
            raise TemplateError(path, f"unknown directive {name} (known: "
                                      f"{', '.join(_DIRECTIVES)})")
        if name == "$sum":
            if not self.grouped:
                raise TemplateError(path, "$sum is for resources with append (grouped rows)")
            if args not in self.columns or self.columns[args].type not in ("integer",
                                                                           "decimal"):
                raise TemplateError(path, "$sum names a declared integer or decimal column")
            return lambda ctx: _sum(args, ctx)
        if not isinstance(args, dict):
            raise TemplateError(path, f"{name} takes a mapping of arguments")
        if name == "$quantity":
            return self.quantity(args, path)
        return self.coding(args, path, concept=name == "$concept")

    def _args(self, args: dict[str, Any], path: tuple[Any, ...], allowed: set[str],
              required: set[str]) -> dict[str, Node]:
        for key in args:
            if key not in allowed:
                raise TemplateError((*path, key), f"unknown argument {key!r} (allowed: "
                                                  f"{', '.join(sorted(allowed))})")
        for key in required - set(args):
            raise TemplateError(path, f"missing argument {key!r}")
        return {k: self.node(v, (*path, k)) for k, v in args.items()
                if k not in ("valueset", "to", "analyte", "system")}

    def coding(self, args: dict[str, Any], path: tuple[Any, ...], concept: bool) -> Node:
        allowed = {"system", "code", "display", "valueset"} | ({"text"} if concept else set())
        nodes = self._args(args, path, allowed, {"system", "code"})
        if not isinstance(args["system"], str) or "{" in args["system"]:
            raise TemplateError((*path, "system"), "system is a fixed URL or short name")
        system = resolve_system(args["system"])
        vs: ValueSet | None = None
        if "valueset" in args:
            vs = value_set(str(args["valueset"]))
            if vs is None:
                raise TemplateError((*path, "valueset"), f"unknown value set "
                                                         f"{args['valueset']!r}")
        return lambda ctx: _coding(system, nodes, vs, ctx, concept)

    def quantity(self, args: dict[str, Any], path: tuple[Any, ...]) -> Node:
        nodes = self._args(args, path, {"value", "unit", "default_unit", "to", "analyte"},
                           {"value"})
        to = args.get("to")
        if to is not None and (not isinstance(to, str) or "{" in to):
            raise TemplateError((*path, "to"), "to is a fixed UCUM unit")
        name = args.get("analyte")
        if name is not None and analyte(str(name)) is None:
            raise TemplateError((*path, "analyte"), f"unknown analyte {name!r}")
        return lambda ctx: _quantity(nodes, to, name, ctx)


def compile_template(template: dict[str, Any], columns: dict[str, Any],
                     grouped: bool = False) -> Template:
    """Compile a template; raises :class:`TemplateError` naming the element."""
    compiler = _Compiler(columns, grouped)
    root = compiler.obj(template, ())
    return Template(root, frozenset(compiler.refs), compiler.conditional)


# -- rendering -----------------------------------------------------------------------

def _lookup(part: tuple[str, str], ctx: RenderContext) -> Any:
    kind, name = part
    if kind == "col":
        return ctx.values.get(name)
    if kind == "ref":
        return ctx.ids.get(name)
    return ctx.index


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _join(parts: list[Any], ctx: RenderContext) -> str | None:
    out = []
    for part in parts:
        if isinstance(part, tuple):
            value = _lookup(part, ctx)
            if value is None:
                return None  # "Patient/{id}" with no id is no reference at all
            out.append(_fmt(value))
        else:
            out.append(part)
    return "".join(out)


def _prune_list(items: list[Any]) -> list[Any] | None:
    kept = [i for i in items if i is not None]
    return kept or None


def _sum(column: str, ctx: RenderContext) -> float | None:
    values = [row[column] for row in ctx.group if row.get(column) is not None]
    return round(sum(values), 10) if values else None


def _coding(system: str, nodes: dict[str, Node], vs: ValueSet | None, ctx: RenderContext,
            concept: bool) -> dict[str, Any] | None:
    code = nodes["code"](ctx)
    if code is None or _fmt(code).strip() == "":
        return None
    code = _fmt(code).strip()
    if vs is not None and not vs.contains(system, code):
        raise RowError(f"code {code!r} is not in the value set {vs.name} ({vs.title})")
    coding: dict[str, Any] = {"system": system, "code": code}
    display = nodes["display"](ctx) if "display" in nodes else None
    if display is None:
        cs = code_system(system)
        display = cs.display(code) if cs is not None else None
    if display is not None:
        coding["display"] = _fmt(display)
    if not concept:
        return coding
    out: dict[str, Any] = {"coding": [coding]}
    text = nodes["text"](ctx) if "text" in nodes else None
    if text is not None:
        out["text"] = _fmt(text)
    return out


def _quantity(nodes: dict[str, Node], to: str | None, name: str | None,
              ctx: RenderContext) -> dict[str, Any] | None:
    value = nodes["value"](ctx)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RowError(f"quantity value {value!r} is not a number (declare the column "
                       "as decimal or integer)")
    unit = nodes["unit"](ctx) if "unit" in nodes else None
    if unit is None and "default_unit" in nodes:
        unit = nodes["default_unit"](ctx)
    if unit is None:
        if to is not None:
            raise RowError("quantity has no unit to convert from (no unit value and no "
                           "default_unit)")
        return {"value": value}
    try:
        return quantity(value, ucum_code(_fmt(unit)), to=to, analyte_name=name)
    except UnitError as exc:
        raise RowError(str(exc)) from None
