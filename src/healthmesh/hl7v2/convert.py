"""One message -> FHIR resources: pick the converter by MSH-9, add the Provenance.

Every converted message also yields a ``Provenance`` (id from MSH-3, MSH-4 and
MSH-10) that names the message, its sender and every resource it wrote, and
carries the SHA-256 of the raw message: :mod:`healthmesh.hl7v2.intake` finds an
exact re-send by it and acknowledges it without writing anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

from healthmesh.hl7v2 import datatypes as dt
from healthmesh.hl7v2.adt import ADT_EVENTS, convert_adt
from healthmesh.hl7v2.context import Conversion, make_id
from healthmesh.hl7v2.errors import (
    UNSUPPORTED_EVENT,
    UNSUPPORTED_MESSAGE_TYPE,
    MessageRejected,
)
from healthmesh.hl7v2.lab import convert_orders, convert_results
from healthmesh.hl7v2.message import Hl7Message
from healthmesh.hl7v2.vxu import convert_vaccinations

__all__ = ["DIGEST_EXTENSION", "SUPPORTED", "convert", "message_digest", "provenance_id"]

DIGEST_EXTENSION = "https://healthmesh.dev/fhir/StructureDefinition/hl7v2-message-sha256"
Converter = Callable[[Conversion], None]
SUPPORTED: dict[str, tuple[tuple[str, ...], Converter]] = {
    "ADT": (ADT_EVENTS, convert_adt),
    "ORU": (("R01",), convert_results),
    "ORM": (("O01",), convert_orders),
    "OML": (("O21",), convert_orders),
    "VXU": (("V04",), convert_vaccinations),
}


def message_digest(raw: bytes) -> str:
    """SHA-256 of a message with segment separators normalised (CR, LF, CRLF alike)."""
    text = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r\n \t\x00")
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    return hashlib.sha256(text).hexdigest()


def provenance_id(message: Hl7Message) -> str:
    """The id of the Provenance of a message (sender + control id)."""
    return make_id("message", dt.hd_text(message.sending_application),
                   dt.hd_text(message.sending_facility), message.control_id)


def check_supported(message: Hl7Message) -> Converter:
    """The converter of a message's type and event, or an AR naming what is unsupported."""
    found = SUPPORTED.get(message.message_type)
    if found is None:
        raise MessageRejected(f"message type {message.message_type} is not supported "
                              f"(supported: {', '.join(SUPPORTED)})",
                              code=UNSUPPORTED_MESSAGE_TYPE, location="MSH-9")
    events, converter = found
    if message.event not in events and not (message.message_type == "ADT" and not message.event):
        raise MessageRejected(f"{message.kind} is not supported ({message.message_type} "
                              f"events: {', '.join(events)})", code=UNSUPPORTED_EVENT,
                              location="MSH-9")
    return converter


def convert(message: Hl7Message, raw: bytes, tz: tzinfo,
            received: datetime | None = None) -> Conversion:
    """The resources of one parsed message (raises MessageRejected / ConversionError)."""
    converter = check_supported(message)
    conv = Conversion(message, tz)
    converter(conv)
    conv.add(_provenance(conv, raw, received))
    return conv


def _provenance(conv: Conversion, raw: bytes, received: datetime | None) -> dict[str, Any]:
    msg = conv.message
    sent = dt.date_time(msg.sent, "MSH-7 date/time of message", conv.tz)
    if sent is None or "T" not in sent:
        sent = (received or datetime.now(UTC)).isoformat(timespec="seconds")
    org = conv.organization()
    sender = dt.hd_text(msg.sending_application) or dt.hd_text(msg.sending_facility)
    agent_who: dict[str, Any] = org if org is not None else {"display": sender or "unknown"}
    targets = [{"reference": f"{t}/{i}"} for t, i in conv.entries]
    return {
        "resourceType": "Provenance", "id": provenance_id(msg),
        "extension": [{"url": DIGEST_EXTENSION, "valueString": message_digest(raw)}],
        "target": targets, "recorded": sent,
        "activity": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "code": "UPDATE" if msg.message_type == "ADT" and msg.event != "A28" else "CREATE"}]},
        "agent": [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "author"}]}, "who": agent_who}],
        "entity": [{"role": "source", "what": {
            "identifier": {"type": {"text": "MSH-10 message control id"},
                           "value": msg.control_id},
            "display": f"HL7 v{msg.version} {msg.kind} message {msg.control_id}"
                       + (f" from {sender}" if sender else "")}}],
    }
