"""Acknowledgements (original mode): MSH + MSA, and ERR for AE/AR naming the problem.

Built by hand rather than with python-hl7's ``Message.create_ack`` because an ACK
must also answer input python-hl7 could not parse (no message object exists then),
and because the error ACK needs MSA-3 and ERR filled with the reason.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime

from healthmesh.hl7v2.errors import ERROR_TEXT, INTERNAL_ERROR
from healthmesh.hl7v2.intake import Receipt

__all__ = ["build_ack"]

_COUNTER = itertools.count(1)
_MAX_TEXT = 200  # MSA-3 is an 80-character ST in v2.5 and 200 from v2.7; keep it short


def build_ack(receipt: Receipt, raw: bytes | None = None) -> bytes:
    """The ACK for one message, in the message's own separators and version."""
    msg = receipt.message
    sep, enc = (msg.field_separator, msg.encoding_characters) if msg else _separators(raw)
    comp = enc[0] if enc else "^"
    esc = enc[2] if len(enc) > 2 else "\\"
    header = _header_fields(raw) if msg is None else None

    def field(value: str) -> str:
        return _escape(value, sep, enc, esc)

    if msg is not None:
        sender, facility = _hd(msg.receiving_application, comp), _hd(
            msg.receiving_facility, comp)
        receiver, receiver_facility = _hd(msg.sending_application, comp), _hd(
            msg.sending_facility, comp)
        event, control, processing, version = (msg.event, msg.control_id, msg.processing_id,
                                               msg.version)
    else:
        assert header is not None
        sender, facility, receiver, receiver_facility = (header.get(5, ""), header.get(6, ""),
                                                         header.get(3, ""), header.get(4, ""))
        msh9 = header.get(9, "").split(comp)
        event, control = (msh9[1] if len(msh9) > 1 else ""), header.get(10, "")
        processing, version = header.get(11, "") or "P", header.get(12, "") or "2.5"
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    ack_id = f"ACK{now[:14]}{next(_COUNTER):06d}"
    msh = sep.join(["MSH", enc, sender or "healthmesh", facility, receiver, receiver_facility,
                    now, "", f"ACK{comp}{field(event)}{comp}ACK", ack_id,
                    field(processing.split(comp)[0]) or "P", field(version.split(comp)[0])])
    segments = [msh]
    text = ""
    if receipt.error is not None:
        text = receipt.error.message[:_MAX_TEXT]
    segments.append(sep.join(["MSA", receipt.ack_code, field(control), field(text)]).rstrip(sep))
    if receipt.error is not None:
        segments.append(_err(receipt, sep, comp, field))
    return ("\r".join(segments) + "\r").encode("utf-8")


def _err(receipt: Receipt, sep: str, comp: str, escape: Callable[[str], str]) -> str:
    """ERR (v2.5 layout): ERR-2 location, ERR-3 HL7 error code, ERR-4 severity, ERR-8 text."""
    assert receipt.error is not None
    error = receipt.error
    location = ""
    match = re.fullmatch(r"([A-Z][A-Z0-9]{2})-(\d+)", error.location or "")
    if match:
        location = f"{match.group(1)}{comp}1{comp}{match.group(2)}"
    code = error.code or INTERNAL_ERROR
    hl7_code = comp.join([code, ERROR_TEXT.get(code, ""), "HL70357"])
    message = escape(error.message)
    return sep.join(["ERR", "", location, hl7_code, "E", "", "", "", message])


def _hd(components: list[list[str]], comp: str) -> str:
    return comp.join("&".join(sub) for sub in components).rstrip(comp)


def _separators(raw: bytes | None) -> tuple[str, str]:
    text = (raw or b"")[:16].decode("latin-1")
    if text.startswith("MSH") and len(text) > 8 and not text[3].isalnum():
        sep = text[3]
        end = text.find(sep, 4)
        enc = text[4:end] if end > 4 else "^~\\&"
        if len(enc) >= 2 and sep not in enc:
            return sep, enc
    return "|", "^~\\&"


def _header_fields(raw: bytes | None) -> dict[int, str]:
    """MSH fields of input that did not parse, read as leniently as possible."""
    sep, _enc = _separators(raw)
    first = re.split(rb"\r|\n", raw or b"", maxsplit=1)[0].decode("latin-1")
    if not first.startswith("MSH"):
        return {}
    parts = first.split(sep)
    return {n + 1: v for n, v in enumerate(parts) if n >= 2}


def _escape(value: str, sep: str, enc: str, esc: str) -> str:
    """HL7 escape sequences for the delimiters in a text (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\)."""
    if not value:
        return value
    codes = {esc: "E", sep: "F"}
    if enc:
        codes[enc[0]] = "S"
    if len(enc) > 1:
        codes[enc[1]] = "R"
    if len(enc) > 3:
        codes[enc[3]] = "T"
    value = value.replace("\r", " ").replace("\n", " ")
    return "".join(f"{esc}{codes[c]}{esc}" if c in codes else c for c in value)
