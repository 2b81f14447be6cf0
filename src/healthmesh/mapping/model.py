"""Mapping files: load a YAML mapping, check it against the schema, name the line of each error.

A mapping says how the rows of a CSV or Parquet file become FHIR resources (see
docs/how-to/map-flat-files.md for the full reference)::

    id: wearables
    title: Wearable exports -> Observation
    timezone: "Z"                      # for date-times written without an offset
    columns:
      patient_id: {type: string, required: true}
      value: {type: decimal}
      measured_at: {type: datetime, format: "%d/%m/%Y %H:%M"}
    filter: [{column: metric, in: [steps, heart_rate]}]
    resources:
      - name: steps
        type: Observation
        key: [patient_id, measured_at]
        when: [{column: metric, equals: steps}]
        template: {...FHIR JSON with {column} placeholders and $directives...}

The schema is checked by hand rather than with JSON Schema: errors must name the YAML line,
and several rules (placeholders naming declared columns, value sets and units that exist)
are not expressible in JSON Schema. Everything is checked when the file is loaded, before a
row is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from healthmesh.errors import InputError
from healthmesh.fhir.validation import resource_types
from healthmesh.mapping.template import Template, TemplateError, compile_template

__all__ = ["COLUMN_TYPES", "Column", "Condition", "Mapping", "MappingError", "ResourceRule",
           "load_mapping", "parse_mapping"]

MAX_MAPPING_BYTES = 1024 * 1024
MAX_YAML_NODES = 50_000
COLUMN_TYPES = ("string", "integer", "decimal", "boolean", "date", "datetime", "code")
CONDITION_OPS = ("equals", "not_equals", "in", "not_in", "present", "matches", "min", "max")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TZ_RE = re.compile(r"^(Z|[+-](0\d|1[0-4]):[0-5]\d)$")


class MappingError(InputError):
    """A mapping file that cannot be used; the message names the file, line and key."""


@dataclass(frozen=True, slots=True)
class Column:
    """A declared input column and how its text becomes a typed value."""

    name: str
    type: str = "string"
    required: bool = False
    format: str | None = None
    timezone: str | None = None
    values: dict[str, str] | None = None  # raw (case-folded) -> code, for type code
    default: str | None = None  # used for an empty cell


@dataclass(frozen=True, slots=True)
class Condition:
    """One row condition: ``column`` ``op`` ``value``."""

    column: str
    op: str
    value: Any


@dataclass(slots=True)
class ResourceRule:
    """How one resource is built from a row (or a group of rows)."""

    name: str
    type: str
    key: tuple[str, ...]
    template: Template
    when: tuple[Condition, ...] = ()
    append: str | None = None


@dataclass(slots=True)
class Mapping:
    """A checked mapping file."""

    id: str
    title: str
    columns: dict[str, Column]
    resources: list[ResourceRule]
    filter: tuple[Condition, ...] = ()
    group_by: tuple[str, ...] = ()
    timezone: str | None = None
    format: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    max_field_bytes: int = 1024 * 1024
    description: str = ""
    path: str = "<mapping>"
    extra: dict[str, Any] = field(default_factory=dict)


class _Doc:
    """The parsed YAML plus the line of every key path, for error messages."""

    def __init__(self, source: str, data: Any, lines: dict[tuple[Any, ...], int]) -> None:
        self.source, self.data, self.lines = source, data, lines

    def fail(self, path: tuple[Any, ...], message: str) -> MappingError:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe, 1)
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path)
        where = where.replace(".[", "[")
        return MappingError(f"{self.source}: line {line}: {where + ': ' if where else ''}"
                            f"{message}")


def load_mapping(path: Path) -> Mapping:
    """Read and check the mapping file at ``path``."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from None
    if size > MAX_MAPPING_BYTES:
        raise MappingError(f"{path}: mapping file larger than {MAX_MAPPING_BYTES} bytes")
    try:
        text = path.read_text("utf-8-sig")
    except UnicodeDecodeError:
        raise MappingError(f"{path}: mapping file is not UTF-8 text") from None
    return parse_mapping(text, str(path))


def parse_mapping(text: str, source: str = "<mapping>") -> Mapping:
    """Check a mapping given as YAML text; ``source`` names it in errors."""
    return _build(_parse_yaml(text, source))


def _parse_yaml(text: str, source: str) -> _Doc:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise MappingError(f"{source}: the mapping file is empty")
        lines: dict[tuple[Any, ...], int] = {}
        _index_lines(node, (), lines, set(), source)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MappingError(f"{source}: {line}not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise MappingError(f"{source}: line 1: a mapping file is a YAML mapping (key: value)")
    return _Doc(source, data, lines)


def _index_lines(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
                 seen: set[int], source: str) -> None:
    if id(node) in seen:
        raise MappingError(f"{source}: line {node.start_mark.line + 1}: YAML aliases "
                           "(*name) are not allowed in mapping files")
    seen.add(id(node))
    if len(seen) > MAX_YAML_NODES:
        raise MappingError(f"{source}: more than {MAX_YAML_NODES} YAML nodes")
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark)
            lines[(*path, name)] = key.start_mark.line + 1
            _index_lines(value, (*path, name), lines, seen, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines, seen, source)


# -- schema ----------------------------------------------------------------------------

_TOP_KEYS = {"id", "title", "description", "source", "columns", "filter", "group_by",
             "timezone", "resources"}
_SOURCE_KEYS = {"format", "delimiter", "encoding", "max_field_bytes"}
_COLUMN_KEYS = {"type", "required", "format", "timezone", "values", "default"}
_RESOURCE_KEYS = {"name", "type", "key", "when", "append", "template"}


def _keys(doc: _Doc, path: tuple[Any, ...], value: Any, allowed: set[str],
          required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.fail(path, f"expected a mapping (key: value), got {_kind(value)}")
    for key in value:
        if key not in allowed:
            raise doc.fail((*path, key), f"unknown key {key!r} "
                                         f"(allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in value:
            raise doc.fail(path, f"missing required key {key!r}")
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(value), "a value")


def _text(doc: _Doc, path: tuple[Any, ...], value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise doc.fail(path, f"expected non-empty text, got {_kind(value)}")
    return value


def _names(doc: _Doc, path: tuple[Any, ...], value: Any, columns: dict[str, Column]
           ) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise doc.fail(path, "expected a non-empty list of column names")
    for i, name in enumerate(value):
        if name not in columns:
            raise doc.fail((*path, i), f"{name!r} is not a declared column")
    return tuple(value)


def _build(doc: _Doc) -> Mapping:
    raw = _keys(doc, (), doc.data, _TOP_KEYS, ("id", "title", "columns", "resources"))
    mid = _text(doc, ("id",), raw["id"])
    if not _ID_RE.match(mid):
        raise doc.fail(("id",), "id is lower-case letters, digits and dashes (at most 40)")
    columns = _columns(doc, raw["columns"])
    timezone = raw.get("timezone")
    if timezone is not None and (not isinstance(timezone, str) or not _TZ_RE.match(timezone)):
        raise doc.fail(("timezone",), "timezone is 'Z' or an offset like '+01:00'")
    mapping = Mapping(id=mid, title=_text(doc, ("title",), raw["title"]), columns=columns,
                      resources=[], timezone=timezone, path=doc.source,
                      description=str(raw.get("description") or ""))
    _source(doc, raw.get("source"), mapping)
    mapping.filter = _conditions(doc, ("filter",), raw.get("filter"), columns)
    if raw.get("group_by") is not None:
        mapping.group_by = _names(doc, ("group_by",), raw["group_by"], columns)
    mapping.resources = _resources(doc, raw["resources"], mapping)
    return mapping


def _source(doc: _Doc, value: Any, mapping: Mapping) -> None:
    if value is None:
        return
    src = _keys(doc, ("source",), value, _SOURCE_KEYS)
    fmt = src.get("format")
    if fmt is not None and fmt not in ("csv", "parquet"):
        raise doc.fail(("source", "format"), "format is csv or parquet")
    mapping.format = fmt
    delimiter = src.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise doc.fail(("source", "delimiter"), "delimiter is one character (not a quote "
                                                "or a line break)")
    mapping.delimiter = delimiter
    encoding = src.get("encoding", "utf-8")
    try:
        "".encode(encoding)
    except (LookupError, TypeError):
        raise doc.fail(("source", "encoding"), f"unknown encoding {encoding!r}") from None
    mapping.encoding = encoding
    limit = src.get("max_field_bytes", mapping.max_field_bytes)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 64 << 20:
        raise doc.fail(("source", "max_field_bytes"), "max_field_bytes is 1 to 67108864")
    mapping.max_field_bytes = limit


def _columns(doc: _Doc, value: Any) -> dict[str, Column]:
    if not isinstance(value, dict) or not value:
        raise doc.fail(("columns",), "expected a mapping of column name -> definition")
    out: dict[str, Column] = {}
    for name, spec in value.items():
        path = ("columns", name)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise doc.fail(path, "column names are letters, digits and _ (as in the header)")
        spec = _keys(doc, path, spec if spec is not None else {}, _COLUMN_KEYS)
        ctype = spec.get("type", "string")
        if ctype not in COLUMN_TYPES:
            raise doc.fail((*path, "type"), f"unknown type {ctype!r} "
                                            f"(known: {', '.join(COLUMN_TYPES)})")
        fmt = spec.get("format")
        if fmt is not None and (ctype not in ("date", "datetime") or not isinstance(fmt, str)
                                or "%" not in fmt):
            raise doc.fail((*path, "format"), "format is a strptime pattern such as "
                                              "'%d/%m/%Y', for date and datetime columns")
        tz = spec.get("timezone")
        if tz is not None and (ctype != "datetime" or not isinstance(tz, str)
                               or not _TZ_RE.match(tz)):
            raise doc.fail((*path, "timezone"), "timezone ('Z' or '+01:00') is for datetime "
                                                "columns")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            raise doc.fail((*path, "required"), "required is true or false")
        default = spec.get("default")
        if default is not None and (isinstance(default, dict | list) or default == ""):
            raise doc.fail((*path, "default"), "default is a single value")
        out[name] = Column(name, ctype, required, fmt, tz, _values(doc, path, spec, ctype),
                           None if default is None else _operand_text(default))
    return out


def _values(doc: _Doc, path: tuple[Any, ...], spec: dict[str, Any], ctype: str
            ) -> dict[str, str] | None:
    values = spec.get("values")
    if values is None:
        return None
    if ctype != "code":
        raise doc.fail((*path, "values"), "values is for columns of type code")
    if isinstance(values, list):
        values = {v: v for v in values}
    if not isinstance(values, dict) or not values:
        raise doc.fail((*path, "values"), "values is a list of codes or a mapping of "
                                          "text -> code")
    out: dict[str, str] = {}
    for raw, code in values.items():
        if isinstance(raw, bool) or isinstance(code, bool) or raw is None:
            raise doc.fail((*path, "values"), "YAML reads yes/no/on/off/true/false/null as "
                                              "booleans or nothing: quote them ('yes')")
        if not isinstance(code, str | int) or isinstance(code, bool) or str(code) == "":
            raise doc.fail((*path, "values", raw), "each value maps to a code (text)")
        out[str(raw).strip().casefold()] = str(code)
    return out


def _conditions(doc: _Doc, path: tuple[Any, ...], value: Any, columns: dict[str, Column]
                ) -> tuple[Condition, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise doc.fail(path, "expected a list of conditions")
    out = []
    for i, item in enumerate(value):
        here = (*path, i)
        item = _keys(doc, here, item, {"column", *CONDITION_OPS}, ("column",))
        if item["column"] not in columns:
            raise doc.fail((*here, "column"), f"{item['column']!r} is not a declared column")
        ops = [k for k in item if k != "column"]
        if len(ops) != 1:
            raise doc.fail(here, f"a condition has exactly one of {', '.join(CONDITION_OPS)}")
        out.append(Condition(item["column"], ops[0], _operand(doc, (*here, ops[0]), ops[0],
                                                              item[ops[0]])))
    return tuple(out)


def _operand(doc: _Doc, path: tuple[Any, ...], op: str, value: Any) -> Any:
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise doc.fail(path, f"{op} takes a non-empty list")
        return frozenset(_operand_text(v) for v in value)
    if op == "present":
        if not isinstance(value, bool):
            raise doc.fail(path, "present is true or false")
        return value
    if op == "matches":
        try:
            return re.compile(str(value))
        except re.error as exc:
            raise doc.fail(path, f"not a valid regular expression: {exc}") from None
    if op in ("min", "max"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise doc.fail(path, f"{op} takes a number")
        return float(value)
    return _operand_text(value)


def _operand_text(value: Any) -> str:
    """How a YAML literal compares with a typed cell (``true``, ``5``, ``2.5``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _resources(doc: _Doc, value: Any, mapping: Mapping) -> list[ResourceRule]:
    if not isinstance(value, list) or not value:
        raise doc.fail(("resources",), "expected a non-empty list of resources")
    rules: list[ResourceRule] = []
    for i, item in enumerate(value):
        path = ("resources", i)
        item = _keys(doc, path, item, _RESOURCE_KEYS, ("name", "type", "key", "template"))
        name = _text(doc, (*path, "name"), item["name"])
        if not re.match(r"^[a-z][a-z0-9-]{0,29}$", name):
            raise doc.fail((*path, "name"), "name is lower-case letters, digits and dashes "
                                            "(at most 30)")
        if name in {r.name for r in rules}:
            raise doc.fail((*path, "name"), f"two resources are named {name!r}")
        rtype = item["type"]
        if rtype not in resource_types():
            raise doc.fail((*path, "type"), f"{rtype!r} is not a FHIR R4 resource type")
        rules.append(_rule(doc, path, item, name, rtype, mapping))
    names = {r.name for r in rules}
    for i, rule in enumerate(rules):
        for ref in rule.template.resource_refs:
            if ref not in names:
                raise doc.fail(("resources", i, "template"),
                               f"{{@{ref}}} names no resource of this mapping")
    return rules


def _rule(doc: _Doc, path: tuple[Any, ...], item: dict[str, Any], name: str, rtype: str,
          mapping: Mapping) -> ResourceRule:
    key = _names(doc, (*path, "key"), item["key"], mapping.columns)
    template = item["template"]
    if not isinstance(template, dict):
        raise doc.fail((*path, "template"), "the template is a mapping (FHIR JSON)")
    if "resourceType" in template or "id" in template:
        raise doc.fail((*path, "template"), "leave resourceType and id out of the template: "
                                            "they come from type and key")
    append = item.get("append")
    if append is not None:
        if not mapping.group_by:
            raise doc.fail((*path, "append"), "append needs group_by at the top of the file")
        if not isinstance(template.get(append), list) or len(template[append]) != 1:
            raise doc.fail((*path, "append"), f"append names a template element holding a "
                                              f"list of one entry; {append!r} is not one")
        if not set(mapping.group_by) <= set(key):
            raise doc.fail((*path, "key"), "the key of a grouped resource includes the "
                                           "group_by columns")
    try:
        compiled = compile_template(template, mapping.columns, grouped=append is not None)
    except TemplateError as exc:
        raise doc.fail((*path, "template", *exc.path), exc.message) from None
    return ResourceRule(name, rtype, key, compiled,
                        _conditions(doc, (*path, "when"), item.get("when"), mapping.columns),
                        append)
