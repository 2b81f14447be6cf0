"""Linkage schemas in the clkhash v3 format: what each feature is and how it is hashed.

A linkage schema is the JSON document the linking parties agree on (clkhash's "linkage
schema v3"): the filter length ``l`` (after ``xorFolds`` XOR folds), the HKDF settings that
derive one key pair per feature from the shared secret, and per feature its format (string,
integer, date, enum), comparison (``ngram`` with optional positions, ``exact``, ``numeric``),
insertion strategy (``bitsPerToken`` or ``bitsPerFeature``), hash (``blakeHash`` or
``doubleHash``) and missing-value sentinel. :func:`parse_schema` checks a document against
the published v3 definition and returns a :class:`LinkageSchema`.

The schema checks are written out here instead of running the jsonschema validator on the
master schema: clkhash's own loader accepts a few spellings the master schema does not
(``xor_folds``) and the messages here name the feature, which is what a user needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from healthmesh.linkage.errors import LinkageSchemaError

__all__ = [
    "Comparison",
    "Feature",
    "LinkageSchema",
    "default_schema",
    "load_schema",
    "parse_schema",
]

_ENCODINGS = ("ascii", "utf-8", "utf-16", "utf-32")
_HKDF_HASHES = ("SHA256", "SHA512")
_DEFAULT_KEY_SIZE = 64  # the block size of SHA1 and MD5, clkhash's default HMAC key size
_DATE_OUTPUT = "%Y%m%d"


@dataclass(frozen=True, slots=True)
class Comparison:
    """How a feature value becomes tokens (clkhash's comparison techniques).

    ``ngram``: the ``n``-grams of the value padded with ``n - 1`` spaces each side, each
    prefixed with its 1-based position when ``positional``; ``exact``: the whole value as
    one token; ``numeric``: ``2 * resolution + 1`` tokens around the value quantised to
    ``threshold_distance / (2 * resolution)`` steps, so close numbers share tokens.
    """

    kind: str
    n: int = 2
    positional: bool = False
    threshold_distance: float = 0.0
    resolution: int = 0
    fractional_precision: int = 0

    def tokenize(self, word: str) -> list[str]:
        """The tokens of ``word`` (none for the empty string)."""
        if not word:
            return []
        if self.kind == "exact":
            return [word]
        if self.kind == "numeric":
            return self._numeric(word)
        if self.n > 1:
            pad = " " * (self.n - 1)
            word = pad + word + pad
        grams = [word[i:i + self.n] for i in range(len(word) - self.n + 1)]
        if self.positional:
            return [f"{i + 1} {g}" for i, g in enumerate(grams)]
        return grams

    def _numeric(self, word: str) -> list[str]:
        scale = 10 ** self.fractional_precision
        interval = round(self.threshold_distance * scale)
        try:
            value = int(word, 10) * scale
        except ValueError:
            number = float(word)
            value = round(number * scale) if self.fractional_precision else int(number)
        value *= 2 * self.resolution
        residue = value % interval
        if residue and residue < interval / 2:
            value -= residue
        elif residue:
            value += interval - residue
        return [str(value + i * interval) for i in range(-self.resolution, self.resolution + 1)]


@dataclass(frozen=True, slots=True)
class Feature:
    """One column of the records: its format checks and its hashing settings."""

    identifier: str
    ignored: bool = False
    fmt: str = "string"
    encoding: str = "utf-8"
    case: str = "mixed"
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    date_format: str | None = None
    values: tuple[str, ...] = ()
    comparison: Comparison | None = None
    strategy: str = "bitsPerToken"
    strategy_value: int = 0
    hash_type: str = "blakeHash"
    prevent_singularity: bool = False
    sentinel: str | None = None
    replace_with: str | None = None

    def prepare(self, value: str) -> str:
        """``value`` checked against the format and normalised for hashing.

        A missing-value sentinel is replaced (and not checked). Raises ``ValueError``
        naming the feature when the value breaks the format.
        """
        if self.sentinel is not None and value == self.sentinel:
            return self.replace_with if self.replace_with is not None else self.sentinel
        try:
            value.encode(self.encoding)
        except UnicodeEncodeError as exc:
            raise ValueError(f"{self.identifier}: not encodable as {self.encoding}") from exc
        return _CHECKS[self.fmt](self, value)

    def bits_per_token(self, count: int) -> list[int]:
        """How many indices each of ``count`` tokens sets (the insertion strategy)."""
        if self.strategy == "bitsPerToken":
            return [self.strategy_value] * count
        k, residue = divmod(self.strategy_value, count)
        return [k + 1] * residue + [k] * (count - residue)


def _check_string(f: Feature, value: str) -> str:
    if f.pattern is not None:
        if not re.fullmatch(f.pattern, value):
            raise ValueError(f"{f.identifier}: {value!r} does not match {f.pattern!r}")
        return value
    if f.case == "upper" and value.upper() != value:
        raise ValueError(f"{f.identifier}: expected upper case")
    if f.case == "lower" and value.lower() != value:
        raise ValueError(f"{f.identifier}: expected lower case")
    if f.min_length is not None and len(value) < f.min_length:
        raise ValueError(f"{f.identifier}: shorter than {f.min_length} characters")
    if f.max_length is not None and len(value) > f.max_length:
        raise ValueError(f"{f.identifier}: longer than {f.max_length} characters")
    return value


def _check_integer(f: Feature, value: str) -> str:
    try:
        number = int(value)
    except ValueError as exc:
        raise ValueError(f"{f.identifier}: {value!r} is not an integer") from exc
    if f.minimum is not None and number < f.minimum:
        raise ValueError(f"{f.identifier}: {number} is below {f.minimum}")
    if f.maximum is not None and number > f.maximum:
        raise ValueError(f"{f.identifier}: {number} is above {f.maximum}")
    return str(number)


def _check_date(f: Feature, value: str) -> str:
    try:
        return datetime.strptime(value, f.date_format or "%Y-%m-%d").strftime(_DATE_OUTPUT)
    except ValueError as exc:
        raise ValueError(f"{f.identifier}: {value!r} is not a date ({f.date_format})") from exc


def _check_enum(f: Feature, value: str) -> str:
    if value not in f.values:
        raise ValueError(f"{f.identifier}: {value!r} is not one of {list(f.values)}")
    return value


_CHECKS = {"string": _check_string, "integer": _check_integer, "date": _check_date,
           "enum": _check_enum}


@dataclass(frozen=True, slots=True)
class LinkageSchema:
    """A parsed clkhash v3 linkage schema; ``fingerprint`` identifies it exactly."""

    l: int  # noqa: E741  (the schema's own name for the filter length)
    xor_folds: int
    kdf_hash: str
    kdf_salt: bytes | None
    kdf_info: bytes | None
    kdf_key_size: int
    features: tuple[Feature, ...]
    document: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of the schema document."""
        return hashlib.sha256(orjson.dumps(self.document, option=orjson.OPT_SORT_KEYS)).hexdigest()

    @property
    def identifiers(self) -> list[str]:
        """The feature identifiers, in record column order."""
        return [f.identifier for f in self.features]


def parse_schema(document: Any) -> LinkageSchema:
    """Check a clkhash v3 linkage schema (parsed JSON) and return it.

    Raises :class:`LinkageSchemaError` naming the first problem found.
    """
    if not isinstance(document, dict):
        raise LinkageSchemaError("a linkage schema is a JSON object")
    if document.get("version") != 3:
        raise LinkageSchemaError(f"only linkage schema version 3 is supported, "
                                 f"got {document.get('version')!r}")
    config = _obj(document.get("clkConfig"), "clkConfig")
    length = _int(config.get("l"), "clkConfig.l", 8)
    folds = _int(config.get("xorFolds", config.get("xor_folds", 0)), "clkConfig.xorFolds", 0)
    if length % 8:
        raise LinkageSchemaError("clkConfig.l must be a multiple of 8")
    kdf = _obj(config.get("kdf"), "clkConfig.kdf")
    if kdf.get("type") != "HKDF":
        raise LinkageSchemaError("clkConfig.kdf.type must be 'HKDF'")
    kdf_hash = kdf.get("hash", "SHA256")
    if kdf_hash not in _HKDF_HASHES:
        raise LinkageSchemaError(f"clkConfig.kdf.hash must be one of {list(_HKDF_HASHES)}")
    raw = document.get("features")
    if not isinstance(raw, list) or not raw:
        raise LinkageSchemaError("features must be a non-empty list")
    features = tuple(_feature(item, i) for i, item in enumerate(raw))
    names = [f.identifier for f in features]
    if len(set(names)) != len(names):
        raise LinkageSchemaError("feature identifiers must be unique")
    for f in features:
        if f.hash_type == "blakeHash" and (length << folds) & ((length << folds) - 1):
            raise LinkageSchemaError(f"{f.identifier}: blakeHash needs l * 2**xorFolds to be a "
                                     "power of two")
    return LinkageSchema(length, folds, kdf_hash, _b64(kdf.get("salt"), "salt"),
                         _b64(kdf.get("info"), "info"),
                         _int(kdf.get("keySize", _DEFAULT_KEY_SIZE), "kdf.keySize", 1),
                         features, document)


def _feature(item: Any, index: int) -> Feature:
    item = _obj(item, f"features[{index}]")
    ident = item.get("identifier")
    if not isinstance(ident, str) or not ident:
        raise LinkageSchemaError(f"features[{index}] needs a string identifier")
    if item.get("ignored") is True:
        return Feature(ident, ignored=True)
    fmt = _obj(item.get("format"), f"{ident}.format")
    hashing = _obj(item.get("hashing"), f"{ident}.hashing")
    return Feature(ident, **_format_fields(ident, fmt), **_hashing_fields(ident, hashing))


def _format_fields(ident: str, fmt: dict[str, Any]) -> dict[str, Any]:
    kind = fmt.get("type")
    if kind not in _CHECKS:
        raise LinkageSchemaError(f"{ident}.format.type must be one of {list(_CHECKS)}")
    out: dict[str, Any] = {"fmt": kind, "encoding": fmt.get("encoding", "utf-8")}
    if out["encoding"] not in _ENCODINGS:
        raise LinkageSchemaError(f"{ident}.format.encoding must be one of {list(_ENCODINGS)}")
    if kind == "string":
        out.update(case=fmt.get("case", "mixed"), min_length=fmt.get("minLength"),
                   max_length=fmt.get("maxLength"), pattern=fmt.get("pattern"))
        if out["case"] not in ("upper", "lower", "mixed"):
            raise LinkageSchemaError(f"{ident}.format.case must be upper, lower or mixed")
        if out["pattern"] is not None:
            try:
                re.compile(out["pattern"])
            except (re.error, TypeError) as exc:
                raise LinkageSchemaError(f"{ident}.format.pattern: {exc}") from exc
    elif kind == "integer":
        out.update(minimum=fmt.get("minimum"), maximum=fmt.get("maximum"))
    elif kind == "date":
        if not isinstance(fmt.get("format"), str):
            raise LinkageSchemaError(f"{ident}.format.format (a strptime format) is required")
        out["date_format"] = fmt["format"]
    else:
        values = fmt.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise LinkageSchemaError(f"{ident}.format.values must be a list of strings")
        out["values"] = tuple(values)
    return out


def _hashing_fields(ident: str, hashing: dict[str, Any]) -> dict[str, Any]:
    strategy = _obj(hashing.get("strategy"), f"{ident}.hashing.strategy")
    if len(strategy) != 1 or next(iter(strategy)) not in ("bitsPerToken", "bitsPerFeature"):
        raise LinkageSchemaError(f"{ident}.hashing.strategy needs exactly one of "
                                 "bitsPerToken or bitsPerFeature")
    name, value = next(iter(strategy.items()))
    hash_ = _obj(hashing.get("hash", {"type": "blakeHash"}), f"{ident}.hashing.hash")
    if hash_.get("type") not in ("blakeHash", "doubleHash"):
        raise LinkageSchemaError(f"{ident}.hashing.hash.type must be blakeHash or doubleHash")
    missing = hashing.get("missingValue")
    if missing is not None and not isinstance(_obj(missing, ident).get("sentinel"), str):
        raise LinkageSchemaError(f"{ident}.hashing.missingValue.sentinel must be a string")
    return {"comparison": _comparison(ident, _obj(hashing.get("comparison"),
                                                  f"{ident}.hashing.comparison")),
            "strategy": name, "strategy_value": _int(value, f"{ident}.hashing.strategy", 1),
            "hash_type": hash_["type"],
            "prevent_singularity": bool(hash_.get("prevent_singularity", False)),
            "sentinel": missing.get("sentinel") if missing else None,
            "replace_with": missing.get("replaceWith") if missing else None}


def _comparison(ident: str, spec: dict[str, Any]) -> Comparison:
    kind = spec.get("type")
    if kind == "ngram":
        return Comparison("ngram", n=_int(spec.get("n"), f"{ident}.comparison.n", 1),
                          positional=bool(spec.get("positional", False)))
    if kind == "exact":
        return Comparison("exact")
    if kind == "numeric":
        distance = spec.get("thresholdDistance")
        if isinstance(distance, bool) or not isinstance(distance, int | float) or distance <= 0:
            raise LinkageSchemaError(f"{ident}.comparison.thresholdDistance must be positive")
        precision = _int(spec.get("fractional_precision", 0), f"{ident}.fractional_precision", 0)
        if round(distance * 10 ** precision) == 0:
            raise LinkageSchemaError(f"{ident}: not enough fractional precision for the distance")
        return Comparison("numeric", threshold_distance=float(distance),
                          resolution=_int(spec.get("resolution"), f"{ident}.resolution", 1),
                          fractional_precision=precision)
    raise LinkageSchemaError(f"{ident}.comparison.type must be ngram, exact or numeric")


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LinkageSchemaError(f"{where} must be a JSON object")
    return value


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LinkageSchemaError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _b64(value: Any, name: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise LinkageSchemaError(f"clkConfig.kdf.{name} must be base64") from exc


def load_schema(path: Path) -> LinkageSchema:
    """Read and check a linkage schema JSON file."""
    try:
        return parse_schema(orjson.loads(path.read_bytes()))
    except OSError as exc:
        raise LinkageSchemaError(f"cannot read schema {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise LinkageSchemaError(f"schema {path} is not JSON: {exc}") from exc


def default_schema() -> LinkageSchema:
    """The schema shipped with healthmesh (``linkage/data/schema-v3.json``)."""
    data = resources.files("healthmesh.linkage").joinpath("data/schema-v3.json").read_bytes()
    return parse_schema(orjson.loads(data))
