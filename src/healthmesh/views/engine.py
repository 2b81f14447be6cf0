"""SQL on FHIR v2 ViewDefinition validation and in-memory evaluation.

:func:`compile_view` checks a ViewDefinition and compiles it once into closures;
:meth:`CompiledView.rows` then turns resources into flat rows (dicts keyed by column
name, in column order). A select is compiled into ``fn(node, row_index, env) -> list
of value tuples``; the rows of a select are the cross product of its own columns, each
nested ``select`` and the concatenation of its ``unionAll`` branches, once per focus
of its ``forEach`` / ``forEachOrNull`` / ``repeat`` (or once on the parent's node).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from healthmesh.views.errors import ViewDefinitionError, ViewEvaluationError
from healthmesh.views.fhirpath import Compiled, Env, compile_path

__all__ = ["CompiledView", "compile_view", "evaluate"]

Rows = list[tuple]
SelectFn = Callable[[Any, int, Env], Rows]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_CONSTANT_TYPES = frozenset(
    [
        "Base64Binary",
        "Boolean",
        "Canonical",
        "Code",
        "Date",
        "DateTime",
        "Decimal",
        "Id",
        "Instant",
        "Integer",
        "Integer64",
        "Oid",
        "PositiveInt",
        "String",
        "Time",
        "UnsignedInt",
        "Uri",
        "Url",
        "Uuid",
    ]
)
_NO_FOCUS = object()  # the focus of a forEachOrNull null row
_SELECT_KEYS = frozenset({"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll"})


@dataclass(frozen=True)
class CompiledView:
    """A ViewDefinition compiled to closures; reuse it for any number of resources."""

    name: str | None
    resource: str
    columns: tuple[str, ...]
    _select: SelectFn
    _where: tuple[Compiled, ...]

    def rows(self, resources: Iterable[dict]) -> Iterator[dict]:
        """Yield the view's rows for ``resources`` (other resource types are ignored)."""
        names, select, where, rtype = self.columns, self._select, self._where, self.resource
        env = Env()
        for resource in resources:
            if type(resource) is not dict or resource.get("resourceType") != rtype:
                continue
            env.resource = resource
            env.row_index = 0
            if where and not _passes(where, resource, env):
                continue
            for values in select(resource, 0, env):
                yield dict(zip(names, values, strict=True))


def _passes(where: tuple[Compiled, ...], resource: dict, env: Env) -> bool:
    for expr in where:
        result = expr([resource], env)
        if not result:
            return False
        if len(result) != 1 or type(result[0]) is not bool:
            raise ViewEvaluationError(
                f"where path must give a boolean, got {result!r} on {resource.get('id')!r}"
            )
        if not result[0]:
            return False
    return True


def evaluate(view: dict, resources: Iterable[dict]) -> list[dict]:
    """Run ViewDefinition ``view`` over ``resources``; rows in resource order."""
    return list(compile_view(view).rows(resources))


def compile_view(view: dict) -> CompiledView:
    """Validate and compile a ViewDefinition; raise :class:`ViewDefinitionError` if invalid."""
    if not isinstance(view, dict):
        raise ViewDefinitionError("a ViewDefinition must be a JSON object")
    resource = view.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ViewDefinitionError("ViewDefinition.resource (a FHIR resource type) is required")
    if view.get("resourceType", "ViewDefinition") != "ViewDefinition":
        raise ViewDefinitionError("resourceType must be ViewDefinition")
    selects = view.get("select")
    if not isinstance(selects, list) or not selects:
        raise ViewDefinitionError("ViewDefinition.select must be a non-empty array")
    builder = _Builder(_constants(view.get("constant", [])))
    select, columns = builder.select({"select": selects}, "ViewDefinition")
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise ViewDefinitionError(f"duplicate column names: {', '.join(dup)}")
    where = view.get("where", [])
    if not isinstance(where, list):
        raise ViewDefinitionError("ViewDefinition.where must be an array")
    where_fns = []
    for i, clause in enumerate(where):
        if not isinstance(clause, dict) or not isinstance(clause.get("path"), str):
            raise ViewDefinitionError(f"ViewDefinition.where[{i}].path must be a string")
        where_fns.append(builder.path(clause["path"], f"where[{i}]"))
    name = view.get("name")
    return CompiledView(
        name if isinstance(name, str) else None, resource, tuple(columns), select, tuple(where_fns)
    )


def _constants(constants: Any) -> dict[str, list]:
    if not isinstance(constants, list):
        raise ViewDefinitionError("ViewDefinition.constant must be an array")
    out: dict[str, list] = {}
    for i, const in enumerate(constants):
        name = const.get("name") if isinstance(const, dict) else None
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ViewDefinitionError(f"constant[{i}] needs a valid name")
        values = [
            (k, v)
            for k, v in const.items()
            if k.startswith("value") and k[5:] in _CONSTANT_TYPES and v is not None
        ]
        if len(values) != 1:
            raise ViewDefinitionError(f"constant {name!r} needs exactly one value[x]")
        if name in out:
            raise ViewDefinitionError(f"constant {name!r} is defined twice")
        out[name] = [values[0][1]]
    return out


class _Builder:
    """Compiles the select tree of one ViewDefinition."""

    def __init__(self, constants: dict[str, list]) -> None:
        self.constants = constants

    def path(self, expr: Any, where: str) -> Compiled:
        if not isinstance(expr, str):
            raise ViewDefinitionError(f"{where}: path must be a string, got {expr!r}")
        try:
            return compile_path(expr, self.constants)
        except ViewDefinitionError as exc:
            raise ViewDefinitionError(f"{where}: {exc}") from None

    def column(self, spec: Any, where: str) -> tuple[Callable[[Any, Env], Any], str]:
        if not isinstance(spec, dict):
            raise ViewDefinitionError(f"{where} must be an object")
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ViewDefinitionError(f"{where}.name {name!r} is not a valid column name")
        expr = self.path(spec.get("path"), f"{where} ({name})")
        collection = spec.get("collection", False)
        if not isinstance(collection, bool):
            raise ViewDefinitionError(f"{where}.collection must be a boolean")
        if collection:
            return (lambda node, env: expr([] if node is _NO_FOCUS else [node], env)), name

        def scalar(node: Any, env: Env) -> Any:
            values = expr([] if node is _NO_FOCUS else [node], env)
            if not values:
                return None
            if len(values) > 1:
                raise ViewEvaluationError(
                    f"column {name!r} has {len(values)} values; set collection: true"
                )
            return values[0]

        return scalar, name

    def select(self, spec: Any, where: str) -> tuple[SelectFn, list[str]]:
        if not isinstance(spec, dict):
            raise ViewDefinitionError(f"{where} must be an object")
        unknown = set(spec) - _SELECT_KEYS - {"description", "id", "extension"}
        if unknown:
            raise ViewDefinitionError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        columns_spec = _array(spec, "column", where)
        cols = [self.column(c, f"{where}.column[{i}]") for i, c in enumerate(columns_spec)]
        names = [n for _, n in cols]
        subs = []
        for i, sub in enumerate(_array(spec, "select", where)):
            fn, sub_names = self.select(sub, f"{where}.select[{i}]")
            subs.append(fn)
            names.extend(sub_names)
        union_fns: list[SelectFn] = []
        union_names: list[str] | None = None
        for i, branch in enumerate(_array(spec, "unionAll", where)):
            fn, branch_names = self.select(branch, f"{where}.unionAll[{i}]")
            if union_names is not None and branch_names != union_names:
                raise ViewDefinitionError(
                    f"{where}.unionAll[{i}] columns {branch_names} differ from {union_names}"
                )
            union_names = branch_names
            union_fns.append(fn)
        names.extend(union_names or [])
        process = _processor(tuple(f for f, _ in cols), tuple(subs), tuple(union_fns))
        own = tuple(f for f, _ in cols)

        def null_row(env: Env) -> tuple:
            # forEachOrNull with nothing to iterate: own columns see an empty focus (so
            # only %rowIndex, constants and literals give a value), nested ones are null
            env.row_index = 0
            return tuple(f(_NO_FOCUS, env) for f in own) + (None,) * (len(names) - len(own))

        return self.iteration(spec, where, process, null_row), names

    def iteration(
        self, spec: dict, where: str, process: SelectFn, null_row: Callable[[Env], tuple]
    ) -> SelectFn:
        present = [k for k in ("forEach", "forEachOrNull", "repeat") if k in spec]
        if len(present) > 1:
            raise ViewDefinitionError(f"{where} has both {present[0]} and {present[1]}")
        if not present:
            return process
        key = present[0]
        if key == "repeat":
            paths = spec["repeat"]
            if not isinstance(paths, list) or not paths:
                raise ViewDefinitionError(f"{where}.repeat must be a non-empty array of paths")
            return _repeat(
                tuple(self.path(p, f"{where}.repeat[{i}]") for i, p in enumerate(paths)), process
            )
        expr = self.path(spec[key], f"{where}.{key}")
        or_null = key == "forEachOrNull"

        def for_each(node: Any, row_index: int, env: Env) -> Rows:
            env.row_index = row_index
            foci = expr([node], env)
            if not foci:
                return [null_row(env)] if or_null else []
            out: Rows = []
            for i, focus in enumerate(foci):
                out.extend(process(focus, i, env))
            return out

        return for_each


def _array(spec: dict, key: str, where: str) -> list:
    value = spec.get(key, [])
    if not isinstance(value, list):
        raise ViewDefinitionError(f"{where}.{key} must be an array")
    return value


def _repeat(paths: tuple[Compiled, ...], process: SelectFn) -> SelectFn:
    def repeat(node: Any, row_index: int, env: Env) -> Rows:
        foci: list = []

        def walk(item: Any) -> None:
            for path in paths:
                for child in path([item], env):
                    foci.append(child)
                    walk(child)

        walk(node)
        out: Rows = []
        for i, focus in enumerate(foci):
            out.extend(process(focus, i, env))
        return out

    return repeat


def _processor(
    cols: tuple[Callable[[Any, Env], Any], ...],
    subs: tuple[SelectFn, ...],
    unions: tuple[SelectFn, ...],
) -> SelectFn:
    """Rows for one focus: own columns x each nested select x the unionAll branches."""
    if not subs and not unions:
        return lambda node, row_index, env: [_values(cols, node, row_index, env)]

    def process(node: Any, row_index: int, env: Env) -> Rows:
        rows: Rows = [_values(cols, node, row_index, env)]
        for sub in subs:
            part = sub(node, row_index, env)
            if not part:
                return []
            rows = [a + b for a in rows for b in part]
        if unions:
            part = []
            for branch in unions:
                part.extend(branch(node, row_index, env))
            if not part:
                return []
            rows = [a + b for a in rows for b in part]
        return rows

    return process


def _values(
    cols: tuple[Callable[[Any, Env], Any], ...], node: Any, row_index: int, env: Env
) -> tuple:
    env.row_index = row_index
    return tuple(col(node, env) for col in cols)
