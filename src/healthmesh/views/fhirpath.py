"""A compiler for the FHIRPath subset that SQL on FHIR v2 ViewDefinitions use.

An expression is parsed once into a small tuple AST and then turned into nested Python
closures, so evaluating it on a resource never parses anything. Every compiled
expression has the signature ``fn(focus: list, env: Env) -> list``: FHIRPath
collections are Python lists, ``env`` carries the resource and ``%rowIndex``.

Supported: member paths (choice elements through ``ofType``), indexers ``[n]``,
literals (string, number, boolean, ``{}``, ``@date``), ``$this``, ``%constants``,
``%rowIndex``, ``%resource``, operators ``= != ~ !~ < <= > >= + - * / div mod & |
and or xor implies in contains`` and the functions of
:data:`healthmesh.views.ops.FUNCTIONS`.
Anything else raises :class:`ViewDefinitionError` at compile time.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from healthmesh.views.errors import ViewDefinitionError
from healthmesh.views.ops import (
    FUNCTIONS,
    Compiled,
    Env,
    arith,
    compare,
    equal,
    equiv,
    flatten_key,
    is_type,
    item_eq,
    logic,
    make_function,
    singleton,
    truth,
    union,
)
from healthmesh.views.parser import Node, parse

__all__ = ["Compiled", "Env", "compile_path", "is_type"]


class _Compiler:
    def __init__(self, expr: str, constants: Mapping[str, list]) -> None:
        self.expr = expr
        self.constants = constants

    def fail(self, what: str) -> ViewDefinitionError:
        return ViewDefinitionError(f"FHIRPath {self.expr!r}: {what}")

    def compile(self, node: Node) -> Compiled:
        kind = node[0]
        if kind == "lit":
            value = [float(v) if type(v) is Decimal else v for v in node[1]]
            return lambda c, env: list(value)
        if kind == "this":
            return lambda c, env: c
        if kind == "ext":
            return self.constant(node[1])
        if kind == "member":
            return self.member(node[1], node[2])
        if kind == "index":
            return self.index(node[1], node[2])
        if kind == "neg":
            inner = self.compile(node[1])
            return lambda c, env: [-v for v in inner(c, env)]
        if kind == "bin":
            return self.binary(node[1], self.compile(node[2]), self.compile(node[3]))
        return self.function(node[1], node[2], node[3])

    def constant(self, name: str) -> Compiled:
        if name == "rowIndex":
            return lambda c, env: [env.row_index]
        if name in ("resource", "rootResource"):
            return lambda c, env: [env.resource]
        if name not in self.constants:
            raise self.fail(f"undefined constant %{name}")
        value = list(self.constants[name])
        return lambda c, env: value

    def base(self, node: Node | None) -> Compiled | None:
        return None if node is None else self.compile(node)

    def member(self, base_node: Node | None, name: str) -> Compiled:
        base = self.base(base_node)
        if base is None and name[:1].isupper():

            def of_resource_type(c: list, env: Env) -> list:
                return [v for v in c if type(v) is dict and v.get("resourceType") == name]

            return of_resource_type

        if base is None:

            def child(c: list, env: Env) -> list:
                if len(c) == 1 and type(c[0]) is dict:  # fast path: one node
                    v = c[0].get(name)
                    if v is None:
                        return []
                    return list(v) if type(v) is list else [v]
                out: list = []
                flatten_key(c, name, out)
                return out

            return child

        def member(c: list, env: Env) -> list:
            out: list = []
            flatten_key(base(c, env), name, out)
            return out

        return member

    def index(self, base_node: Node, index_node: Node) -> Compiled:
        base, index = self.compile(base_node), self.compile(index_node)

        def indexer(c: list, env: Env) -> list:
            i = singleton(index(c, env), "indexer")
            items = base(c, env)
            return [items[i]] if type(i) is int and 0 <= i < len(items) else []

        return indexer

    def binary(self, op: str, left: Compiled, right: Compiled) -> Compiled:
        if op in ("and", "or", "xor", "implies"):
            return lambda c, env: logic(op, truth(left(c, env)), truth(right(c, env)))
        if op == "=":
            return lambda c, env: equal(left(c, env), right(c, env))
        if op == "!=":
            return lambda c, env: [not v for v in equal(left(c, env), right(c, env))]
        if op == "~":
            return lambda c, env: equiv(left(c, env), right(c, env))
        if op == "!~":
            return lambda c, env: [not v for v in equiv(left(c, env), right(c, env))]
        if op == "|":
            return lambda c, env: union(left(c, env), right(c, env))
        if op in ("in", "contains"):
            item, coll = (left, right) if op == "in" else (right, left)

            def member_of(c: list, env: Env) -> list:
                v = item(c, env)
                if not v:
                    return []
                x = singleton(v, op)
                return [any(item_eq(x, o) for o in coll(c, env))]

            return member_of
        if op in ("<", ">", "<=", ">="):
            return lambda c, env: compare(
                op, singleton(left(c, env), op), singleton(right(c, env), op)
            )
        return lambda c, env: arith(op, singleton(left(c, env), op), singleton(right(c, env), op))

    def type_arg(self, args: list[Node], fn: str) -> str:
        if len(args) != 1 or args[0][0] != "member":
            raise self.fail(f"{fn}() needs one type name")
        return str(args[0][2])

    def function(self, base_node: Node | None, name: str, args: list[Node]) -> Compiled:
        if name in ("ofType", "is"):
            return self.of_type(base_node, self.type_arg(args, name), name == "is")
        if name == "getReferenceKey" and args:
            ref_type: str | None = self.type_arg(args, name)
        else:
            ref_type = None
        if name not in FUNCTIONS:
            raise self.fail(f"unsupported function {name}()")
        arity, lambda_args = FUNCTIONS[name]
        if not arity[0] <= len(args) <= arity[1]:
            raise self.fail(f"{name}() takes {arity[0]}..{arity[1]} arguments, got {len(args)}")
        base = self.base(base_node)
        compiled = [] if name == "getReferenceKey" else [self.compile(a) for a in args]
        impl = make_function(name, compiled, lambda_args, ref_type, self.static_type(base_node))
        if base is None:
            return impl
        return lambda c, env: impl(base(c, env), env)

    def static_type(self, node: Node | None) -> str | None:
        if node is not None and node[0] == "fn" and node[2] == "ofType":
            return str(node[3][0][2])
        return None

    def of_type(self, base_node: Node | None, type_name: str, test: bool) -> Compiled:
        if base_node is not None and base_node[0] == "member" and not test:
            inner = self.base(base_node[1])
            name = base_node[2]
            choice = name + type_name[:1].upper() + type_name[1:]

            def choice_of_type(c: list, env: Env) -> list:
                src = inner(c, env) if inner is not None else c
                out: list = []
                flatten_key(src, choice, out)
                plain: list = []
                flatten_key(src, name, plain)
                out.extend(v for v in plain if is_type(v, type_name))
                return out

            return choice_of_type
        base = self.base(base_node)

        def of_type(c: list, env: Env) -> list:
            items = base(c, env) if base is not None else c
            if test:
                return [is_type(singleton(items, "is"), type_name)] if items else []
            return [v for v in items if is_type(v, type_name)]

        return of_type


def compile_path(expr: str, constants: Mapping[str, list] | None = None) -> Compiled:
    """Compile FHIRPath ``expr`` into ``fn(focus, env) -> list``.

    ``constants`` maps a constant name (without ``%``) to its value as a collection.
    Raises :class:`ViewDefinitionError` if the expression is not in the supported subset.
    """
    if not isinstance(expr, str):
        raise ViewDefinitionError(f"a FHIRPath must be a string, got {expr!r}")
    return _Compiler(expr, constants or {}).compile(parse(expr))
