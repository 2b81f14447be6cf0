"""Tokenizer and recursive-descent parser for the FHIRPath subset of SQL on FHIR v2.

:func:`parse` turns an expression into a tuple AST that :mod:`healthmesh.views.fhirpath`
compiles. Nodes: ``("lit", values)``, ``("this",)``, ``("ext", name)`` for ``%name``,
``("member", base, name)``, ``("fn", base, name, args)``, ``("index", base, index)``,
``("bin", op, left, right)`` and ``("neg", operand)``; ``base`` is ``None`` for the
focus. ``x is T`` / ``x as T`` become the functions ``is`` / ``ofType``.
"""

from __future__ import annotations

import re
from decimal import Decimal

from healthmesh.views.errors import ViewDefinitionError

__all__ = ["Node", "parse"]

Node = tuple

_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+|//[^\n]*|/\*.*?\*/)
    |(?P<str>'(?:[^'\\]|\\.)*')
    |(?P<date>@(?:T\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?
        |\d{4}(?:-\d{2}(?:-\d{2})?)?
         (?:T(?:\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?))
    |(?P<num>\d+(?:\.\d+)?)
    |(?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
    |(?P<ext>%(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]*`|'[^']*'))
    |(?P<var>\$[A-Za-z]+)
    |(?P<op><=|>=|!=|!~|[-+*/&|=~<>.,()\[\]{}])""",
    re.X | re.S,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "'": "'", '"': '"', "`": "`", "\\": "\\"}
_BINARY_LEVELS: list[tuple[str, ...]] = [
    ("implies",),
    ("or", "xor"),
    ("and",),
    ("in", "contains"),
    ("=", "~", "!=", "!~"),
    ("<", ">", "<=", ">="),
    ("|",),
    ("is", "as"),
    ("+", "-", "&"),
    ("*", "/", "div", "mod"),
]


def _unescape(text: str) -> str:
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", _escape_one, text)


def _escape_one(m: re.Match[str]) -> str:
    s = m.group(1)
    return chr(int(s[1:], 16)) if s[0] == "u" else _ESCAPES.get(s, s)


def _tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            raise ViewDefinitionError(f"FHIRPath {expr!r}: unexpected {expr[pos : pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, m.group()))
    return tokens


class _Parser:
    """Recursive-descent parser from tokens to a tuple AST."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.pos = 0

    def fail(self, what: str) -> ViewDefinitionError:
        return ViewDefinitionError(f"FHIRPath {self.expr!r}: {what}")

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("eof", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "eof" or (value is not None and tok[1] != value):
            raise self.fail(f"expected {value or 'more'}, found {tok[1] or 'end'!r}")
        self.pos += 1
        return tok

    def parse(self) -> Node:
        if not self.tokens:
            raise self.fail("empty expression")
        node = self.binary(0)
        if self.pos != len(self.tokens):
            raise self.fail(f"unexpected {self.peek()[1]!r}")
        return node

    def binary(self, level: int) -> Node:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[1] in _BINARY_LEVELS[level] and self.peek()[0] in ("op", "id"):
            op = self.take()[1]
            if op in ("is", "as"):
                left = ("fn", left, "ofType" if op == "as" else "is", [self.type_name()])
            else:
                left = ("bin", op, left, self.binary(level + 1))
        return left

    def type_name(self) -> Node:
        name = self.take()[1]
        while self.peek()[1] == ".":
            self.take()
            name = self.take()[1]
        return ("member", None, name.strip("`"))

    def unary(self) -> Node:
        if self.peek()[1] in ("+", "-") and self.peek()[0] == "op":
            op = self.take()[1]
            node = self.unary()
            return ("neg", node) if op == "-" else node
        return self.postfix(self.term())

    def postfix(self, node: Node) -> Node:
        while True:
            tok = self.peek()
            if tok[1] == ".":
                self.take()
                node = self.invocation(node)
            elif tok[1] == "[":
                self.take()
                index = self.binary(0)
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def invocation(self, base: Node | None) -> Node:
        kind, value = self.take()
        if kind != "id":
            raise self.fail(f"expected a name, found {value!r}")
        name = value.strip("`")
        if self.peek()[1] == "(" and not value.startswith("`"):
            self.take("(")
            args: list[Node] = []
            if self.peek()[1] != ")":
                args.append(self.binary(0))
                while self.peek()[1] == ",":
                    self.take()
                    args.append(self.binary(0))
            self.take(")")
            return ("fn", base, name, args)
        return ("member", base, name)

    def term(self) -> Node:
        kind, value = self.peek()
        if kind == "str":
            self.take()
            return ("lit", [_unescape(value[1:-1])])
        if kind == "num":
            self.take()
            return ("lit", [Decimal(value) if "." in value else int(value)])
        if kind == "date":
            self.take()
            return ("lit", [value[1:].strip("T")])  # @T12:00 is a time, @2010T a dateTime
        if kind == "ext":
            self.take()
            return ("ext", value[1:].strip("`'"))
        if kind == "var":
            self.take()
            if value != "$this":
                raise self.fail(f"unsupported variable {value}")
            return ("this",)
        if value == "(":
            self.take()
            node = self.binary(0)
            self.take(")")
            return node
        if value == "{":
            self.take()
            self.take("}")
            return ("lit", [])
        if kind == "id" and value in ("true", "false"):
            self.take()
            return ("lit", [value == "true"])
        if kind == "id":
            return self.invocation(None)
        raise self.fail(f"unexpected {value or 'end'!r}")


def parse(expr: str) -> Node:
    """Parse FHIRPath ``expr``; raise :class:`ViewDefinitionError` if it is not valid."""
    return _Parser(expr).parse()
