"""Runtime pieces of compiled FHIRPath: the environment, operators and functions.

Values are FHIR JSON values and collections are Python lists. Operators follow
FHIRPath's empty-propagation and three-valued logic; :func:`make_function` builds the
closure of each function in :data:`FUNCTIONS` (name -> (arity range, takes a lambda)).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from healthmesh.views.boundary import high_boundary, low_boundary
from healthmesh.views.errors import ViewEvaluationError

__all__ = [
    "FUNCTIONS",
    "Compiled",
    "Env",
    "arith",
    "compare",
    "equal",
    "equiv",
    "flatten_key",
    "is_type",
    "item_eq",
    "logic",
    "make_function",
    "singleton",
    "truth",
    "union",
]


class Env:
    """Evaluation environment: the resource being viewed and the current ``%rowIndex``."""

    __slots__ = ("resource", "row_index")

    def __init__(self, resource: Any = None, row_index: int = 0) -> None:
        self.resource = resource
        self.row_index = row_index


Compiled = Callable[[list, Env], list]

_STRING_TYPES = frozenset(
    [
        "string",
        "code",
        "id",
        "uri",
        "url",
        "canonical",
        "oid",
        "uuid",
        "markdown",
        "base64Binary",
        "xhtml",
        "date",
        "dateTime",
        "instant",
        "time",
    ]
)
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})


def is_type(value: Any, type_name: str) -> bool:
    """Whether a JSON value can be an instance of FHIR type ``type_name``."""
    if type_name == "boolean":
        return type(value) is bool
    if type_name in _INTEGER_TYPES:
        return type(value) is int
    if type_name == "decimal":
        return type(value) in (int, float, Decimal)
    if type_name in _STRING_TYPES:
        return type(value) is str
    if type(value) is not dict:
        return False
    rtype = value.get("resourceType")
    return rtype is None or rtype == type_name or type_name in ("Resource", "DomainResource")


def flatten_key(items: list, key: str, out: list) -> None:
    for it in items:
        if type(it) is dict:
            v = it.get(key)
            if v is not None:
                if type(v) is list:
                    out.extend(v)
                else:
                    out.append(v)


def singleton(coll: list, what: str) -> Any:
    if len(coll) > 1:
        raise ViewEvaluationError(f"{what} expects one value, got {len(coll)}")
    return coll[0] if coll else None


def truth(coll: list) -> bool | None:
    if not coll:
        return None
    v = singleton(coll, "boolean operator")
    return v if type(v) is bool else True


def item_eq(a: Any, b: Any) -> bool:
    if (type(a) is bool) != (type(b) is bool):
        return False
    return bool(a == b)


def equal(left: list, right: list) -> list:
    if not left or not right:
        return []
    if len(left) != len(right):
        return [False]
    return [all(item_eq(a, b) for a, b in zip(left, right, strict=True))]


def equiv(left: list, right: list) -> list:
    def norm(v: Any) -> Any:
        return v.lower().strip() if isinstance(v, str) else v

    if len(left) != len(right):
        return [False]
    return [sorted(map(repr, map(norm, left))) == sorted(map(repr, map(norm, right)))]


def _num(v: Any) -> Any:
    return Decimal(repr(v)) if type(v) is float else v


def arith(op: str, a: Any, b: Any) -> list:
    if op == "&":
        return [("" if a is None else str(a)) + ("" if b is None else str(b))]
    if a is None or b is None:
        return []
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return [a + b]
    if type(a) is bool or type(b) is bool or isinstance(a, str) or isinstance(b, str):
        raise ViewEvaluationError(f"operator {op} needs numbers, got {a!r} and {b!r}")
    x, y = _num(a), _num(b)
    if op == "+":
        r = x + y
    elif op == "-":
        r = x - y
    elif op == "*":
        r = x * y
    elif op == "/":
        if y == 0:
            return []
        r = Decimal(x) / Decimal(y)
    elif op == "div":
        if y == 0:
            return []
        r = int(Decimal(x) / Decimal(y))
    else:  # mod
        if y == 0:
            return []
        r = x % y
    return [float(r) if type(r) is Decimal else r]


def compare(op: str, a: Any, b: Any) -> list:
    if a is None or b is None:
        return []
    if isinstance(a, str) != isinstance(b, str):
        raise ViewEvaluationError(f"cannot compare {a!r} with {b!r}")
    if op == "<":
        return [a < b]
    if op == ">":
        return [a > b]
    if op == "<=":
        return [a <= b]
    return [a >= b]


def logic(op: str, a: bool | None, b: bool | None) -> list:
    if op == "and":
        r = False if a is False or b is False else (None if a is None or b is None else True)
    elif op == "or":
        r = True if a is True or b is True else (None if a is None or b is None else False)
    elif op == "xor":
        r = None if a is None or b is None else a != b
    else:  # implies
        r = True if a is False or b is True else (None if a is None or b is None else False)
    return [] if r is None else [r]


def union(left: list, right: list) -> list:
    out: list = []
    for v in left + right:
        if not any(item_eq(v, o) for o in out):
            out.append(v)
    return out


def reference_key(ref: Any, type_name: str | None) -> str | None:
    if type(ref) is not dict or not isinstance(ref.get("reference"), str):
        return None
    parts = ref["reference"].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or (type_name is not None and parts[-2] != type_name):
        return None
    return parts[-1]


FUNCTIONS: dict[str, tuple[tuple[int, int], bool]] = {
    "where": ((1, 1), True),
    "select": ((1, 1), True),
    "exists": ((0, 1), True),
    "all": ((1, 1), True),
    "empty": ((0, 0), False),
    "not": ((0, 0), False),
    "first": ((0, 0), False),
    "last": ((0, 0), False),
    "tail": ((0, 0), False),
    "skip": ((1, 1), False),
    "take": ((1, 1), False),
    "count": ((0, 0), False),
    "distinct": ((0, 0), False),
    "hasValue": ((0, 0), False),
    "join": ((0, 1), False),
    "extension": ((1, 1), False),
    "getResourceKey": ((0, 0), False),
    "getReferenceKey": ((0, 1), False),
    "lowBoundary": ((0, 1), False),
    "highBoundary": ((0, 1), False),
    "toString": ((0, 0), False),
}


def make_function(
    name: str, args: list[Compiled], lambda_args: bool, ref_type: str | None, st: str | None
) -> Compiled:
    """Build the closure for function ``name`` applied to its input collection."""
    arg = args[0] if args else None
    if lambda_args and arg is not None:
        if name == "where":
            return lambda c, env: [v for v in c if arg([v], env) == [True]]
        if name == "select":
            return lambda c, env: [r for v in c for r in arg([v], env)]
        if name == "exists":
            return lambda c, env: [any(arg([v], env) == [True] for v in c)]
        return lambda c, env: [all(arg([v], env) == [True] for v in c)]  # all
    if name == "exists":
        return lambda c, env: [bool(c)]
    if name == "empty":
        return lambda c, env: [not c]
    if name == "not":
        return lambda c, env: [] if (t := truth(c)) is None else [not t]
    if name == "first":
        return lambda c, env: c[:1]
    if name == "last":
        return lambda c, env: c[-1:]
    if name == "tail":
        return lambda c, env: c[1:]
    if name in ("skip", "take"):
        assert arg is not None
        take = name == "take"

        def slicer(c: list, env: Env) -> list:
            n = singleton(arg(c, env), name) or 0
            return c[:n] if take else c[n:]

        return slicer
    if name == "count":
        return lambda c, env: [len(c)]
    if name == "distinct":
        return lambda c, env: union(c, [])
    if name == "hasValue":
        return lambda c, env: [len(c) == 1 and type(c[0]) not in (dict, list)]
    if name == "toString":
        return lambda c, env: [str(v).lower() if type(v) is bool else str(v) for v in c]
    if name == "join":

        def join(c: list, env: Env) -> list:
            sep = singleton(arg(c, env), "join") if arg is not None else ""
            return [(sep or "").join(str(v) for v in c)]

        return join
    if name == "extension":
        assert arg is not None

        def extension(c: list, env: Env) -> list:
            url = singleton(arg(c, env), "extension")
            out: list = []
            flatten_key(c, "extension", out)
            return [e for e in out if type(e) is dict and e.get("url") == url]

        return extension
    if name == "getResourceKey":
        return lambda c, env: [
            v["id"] for v in c if type(v) is dict and "resourceType" in v and "id" in v
        ]
    if name == "getReferenceKey":
        return lambda c, env: [k for v in c if (k := reference_key(v, ref_type)) is not None]
    bound = low_boundary if name == "lowBoundary" else high_boundary
    return lambda c, env: [b for v in c if (b := bound(v, st)) is not None]
