"""Reading HL7 v2 messages: character sets, segment separators, batches, field access.

Parsing itself is python-hl7's (:func:`hl7.parse`); this module prepares its input
(byte-order marks, MSH-18 character sets, ``\\r``, ``\\n`` or ``\\r\\n`` between
segments) and gives the converters one regular view of its tree: a field is a
list of repetitions, a repetition a list of components, a component a list of
subcomponents, every leaf unescaped (``\\F\\``, ``\\T\\``, ``\\X0D\\``, ``\\.br\\``).
python-hl7 builds different node shapes depending on which separators a field
happens to contain, which is why :func:`_repetitions` exists.
"""

from __future__ import annotations

import codecs
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import hl7
from hl7.exceptions import HL7Exception

from healthmesh.hl7v2.errors import (
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE,
    UNSUPPORTED_VERSION,
    MessageRejected,
)

__all__ = ["Hl7Message", "RawMessage", "Segment", "Unreadable", "parse_message",
           "split_messages"]

Components = list[list[str]]
SUPPORTED_VERSIONS = re.compile(r"^2\.(3|3\.1|4|5|5\.1|6|7|7\.1|8|8\.1|8\.2)$")
_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
# MSH-18 values (HL7 table 0211) -> Python codecs
CHARSETS = {
    "ASCII": "ascii", "ISO IR6": "ascii", "8859/1": "latin-1", "ISO IR100": "latin-1",
    "8859/2": "iso8859-2", "8859/3": "iso8859-3", "8859/4": "iso8859-4",
    "8859/5": "iso8859-5", "8859/6": "iso8859-6", "8859/7": "iso8859-7",
    "8859/8": "iso8859-8", "8859/9": "iso8859-9", "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "UNICODE": "utf-8",
    "UNICODE UTF-16": "utf-16", "UNICODE UTF-32": "utf-32",
    "CP1252": "cp1252", "WINDOWS-1252": "cp1252",
}


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message's bytes (segments joined by CR) and the line its MSH is on."""

    data: bytes
    line: int


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Input of a file that is not a message: its line and why."""

    line: int
    reason: str


class Segment:
    """One segment; ``get(3, 1)`` is field 3, component 1 of the first repetition."""

    __slots__ = ("_cache", "_message", "_raw", "id", "position")

    def __init__(self, raw: Any, message: hl7.Message, position: int) -> None:
        self._raw = raw
        self._message = message
        self._cache: dict[int, list[Components]] = {}
        self.id: str = str(raw[0][0])
        self.position = position  # 1-based among the message's segments

    def reps(self, field: int) -> list[Components]:
        """Every repetition of a field (an empty list when the field is empty or absent)."""
        found = self._cache.get(field)
        if found is not None:
            return found
        if field >= len(self._raw):
            return []
        reps = [[[_unescape(self._message, s) for s in comp] for comp in rep]
                for rep in _repetitions(self._raw[field])]
        found = self._cache[field] = [rep for rep in reps if any(any(comp) for comp in rep)]
        return found

    def first(self, field: int) -> Components:
        """The first repetition of a field ([] when empty)."""
        reps = self.reps(field)
        return reps[0] if reps else []

    def get(self, field: int, component: int = 1, sub: int = 1) -> str:
        """One value, '' when absent."""
        return part(self.first(field), component, sub)

    def where(self, field: int | None = None) -> str:
        return f"{self.id}-{field}" if field is not None else self.id


def part(components: Components, component: int = 1, sub: int = 1) -> str:
    """Component ``component`` (subcomponent ``sub``) of a repetition, '' when absent."""
    if component > len(components):
        return ""
    subs = components[component - 1]
    return subs[sub - 1].strip() if sub <= len(subs) else ""


def _repetitions(field: Any) -> list[list[list[str]]]:
    if len(field) == 1 and isinstance(field[0], str):
        return [[[field[0]]]]
    out: list[list[list[str]]] = []
    for rep in field:
        if isinstance(rep, str):
            out.append([[rep]])
        else:
            out.append([[c] if isinstance(c, str) else list(c) for c in rep])
    return out


def _unescape(message: hl7.Message, value: str) -> str:
    if message.esc not in value:
        return value
    with warnings.catch_warnings():  # python-hl7 logs odd sequences with deprecated .warn
        warnings.simplefilter("ignore", DeprecationWarning)
        text = message.unescape(value)
    return str(text).replace("\r", "\n")


@dataclass(slots=True)
class Hl7Message:
    """A parsed message and its header fields."""

    segments: list[Segment]
    message_type: str
    event: str
    control_id: str
    version: str
    sent: str
    sending_application: Components
    sending_facility: Components
    receiving_application: Components
    receiving_facility: Components
    processing_id: str
    encoding: str
    field_separator: str
    encoding_characters: str

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @property
    def kind(self) -> str:
        """Message type and event, e.g. ``ADT^A01``."""
        return f"{self.message_type}^{self.event}"

    def all(self, segment_id: str) -> list[Segment]:
        return [s for s in self.segments if s.id == segment_id]

    def one(self, segment_id: str) -> Segment | None:
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        return None


def decode(data: bytes) -> tuple[str, str]:
    """(text, codec): strips a byte-order mark, honours MSH-18, else insists on UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        return _decode(data[3:], "utf-8", "a UTF-8 byte-order mark"), "utf-8"
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return _decode(data[2:], codec, "a UTF-16 byte-order mark"), codec
    charset = _charset(data)
    if charset:
        named = CHARSETS.get(charset.upper())
        if named is None:
            raise MessageRejected(f"MSH-18 character set '{charset}' is not supported",
                                  code="103", location="MSH-18")
        return _decode(data, named, f"MSH-18 '{charset}'"), named
    return _decode(data, "utf-8", "no MSH-18 character set (so UTF-8)"), "utf-8"


def _decode(data: bytes, codec: str, why: str) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise MessageRejected(
            f"the message is not valid {codec} as {why} requires: byte "
            f"0x{data[exc.start]:02X} at offset {exc.start}", code="102", location="MSH-18",
        ) from None


def _charset(data: bytes) -> str:
    """MSH-18 read from the raw bytes (the MSH segment is ASCII in every character set)."""
    end = len(data)
    for stop in (b"\r", b"\n"):
        at = data.find(stop)
        if at != -1:
            end = min(end, at)
    header = data[:end].decode("latin-1")
    if len(header) < 8 or not header.startswith("MSH"):
        return ""
    fields = header.split(header[3])
    if len(fields) <= 17:
        return ""
    rep = header[5] if len(header) > 5 and header[5] != header[3] else "~"
    return fields[17].split(rep)[0].strip()


def parse_message(data: bytes) -> Hl7Message:
    """Parse one message; raises :class:`MessageRejected` (an AR) when it cannot."""
    text, codec = decode(data)
    segments_text = [s for s in _LINE_BREAK.split(text.strip().strip("\x00")) if s.strip()]
    if not segments_text or not segments_text[0].startswith("MSH"):
        raise MessageRejected("the message does not start with an MSH segment",
                              code=SEGMENT_SEQUENCE, location="MSH")
    header = segments_text[0]
    if len(header) < 8 or header[3].isalnum() or header[3] in header[4:8]:
        raise MessageRejected("MSH-1/MSH-2 (field separator and encoding characters) are "
                              "missing or malformed", code=REQUIRED_FIELD_MISSING,
                              location="MSH-2")
    sep = header[3]
    for number, seg in enumerate(segments_text[1:], start=2):
        if not _SEGMENT_ID.match(seg[:3]) or (len(seg) > 3 and seg[3] != sep):
            raise MessageRejected(f"segment {number} does not start with a segment id "
                                  f"followed by '{sep}': {seg[:20]!r}",
                                  code=SEGMENT_SEQUENCE, location=f"segment {number}")
    try:
        parsed = hl7.parse("\r".join(segments_text))
    except (HL7Exception, ValueError, IndexError) as exc:
        raise MessageRejected(f"cannot parse the message: {exc}",
                              code=SEGMENT_SEQUENCE) from None
    segments = [Segment(raw, parsed, n) for n, raw in enumerate(parsed, start=1)]
    return _header(segments, codec, sep, header[4:header.find(sep, 4)])


def _header(segments: list[Segment], codec: str, sep: str, enc: str) -> Hl7Message:
    msh = segments[0]
    message_type, event = msh.get(9, 1), msh.get(9, 2)
    if not message_type:
        raise MessageRejected("MSH-9 message type is empty", code=REQUIRED_FIELD_MISSING,
                              location="MSH-9")
    control_id = msh.get(10)
    if not control_id:
        raise MessageRejected("MSH-10 message control id is empty",
                              code=REQUIRED_FIELD_MISSING, location="MSH-10")
    version = msh.get(12)
    if not version:
        raise MessageRejected("MSH-12 version id is empty (truncated MSH?)",
                              code=REQUIRED_FIELD_MISSING, location="MSH-12")
    if not SUPPORTED_VERSIONS.match(version):
        raise MessageRejected(f"HL7 version {version} is not supported (2.3 to 2.8)",
                              code=UNSUPPORTED_VERSION, location="MSH-12")
    return Hl7Message(
        segments, message_type.upper(), event.upper(), control_id, version, msh.get(7),
        msh.first(3), msh.first(4), msh.first(5), msh.first(6), msh.get(11), codec, sep, enc,
    )


def split_messages(handle: IO[bytes],
                   max_message_bytes: int) -> Iterator[RawMessage | Unreadable]:
    """Messages of a file (one, several, or an FHS/BHS batch), in order.

    Yields a :class:`RawMessage` per MSH, or an :class:`Unreadable` for text that is not
    part of any message or a message larger than ``max_message_bytes`` (its bytes are
    skipped, never held).
    """
    current: list[bytes] = []
    size, start, skipping = 0, 0, False
    for number, line in _lines(handle, max_message_bytes):
        if line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        if line.startswith(b"MSH"):
            if current:
                yield RawMessage(b"\r".join(current), start)
            current, size, start, skipping = [line], len(line), number, False
        elif line[:3] in ENVELOPE:
            if current:
                yield RawMessage(b"\r".join(current), start)
            current, size, skipping = [], 0, False
        elif skipping:
            continue
        elif not current:
            yield Unreadable(number, "text outside any message (no MSH before it): "
                             f"{line[:40]!r}")
            skipping = True
        else:
            current.append(line)
            size += len(line) + 1
        if size > max_message_bytes:
            yield Unreadable(start, f"message is larger than the limit of {max_message_bytes} "
                                    "bytes (mllp_max_message_bytes)")
            current, size, skipping = [], 0, True
    if current:
        yield RawMessage(b"\r".join(current), start)


def _lines(handle: IO[bytes], max_line: int,
           chunk_size: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """Lines split at CR, LF or CRLF, numbered from 1, read a chunk at a time.

    A line longer than ``max_line`` is yielded cut to ``max_line + 1`` bytes (so the
    caller sees it is too long) and the rest of it is never held in memory.
    """
    rest = b""
    number = 0
    discarding = False
    while True:
        chunk = handle.read(chunk_size)
        if not chunk:
            break
        data = rest + chunk
        if data.endswith(b"\r"):  # a CRLF may straddle the chunk boundary
            data, rest = data[:-1], b"\r"
        else:
            rest = b""
        lines = re.split(rb"\r\n|\n|\r", data)
        rest = lines.pop() + rest
        for line in lines:
            if discarding:
                discarding = False
                continue
            number += 1
            yield number, line
        if len(rest) > max_line and not discarding:
            number += 1
            yield number, rest[: max_line + 1]
            discarding = True
        if discarding:
            rest = rest[-1:] if rest.endswith(b"\r") else b""
    if rest.rstrip(b"\r") and not discarding:
        yield number + 1, rest.rstrip(b"\r")
