"""Errors of HL7 v2 intake, each carrying what the sender is told in its ACK.

::

    HealthmeshError
     └── Hl7Error                  ack_code, HL7 error code (table 0357), location
          ├── MessageRejected      AR: cannot be parsed, or an unsupported type/version
          └── ConversionError      AE: parsed, but cannot be converted or stored

``location`` is a segment-field position such as ``PID-7`` (the ERR-2 of the ACK).
"""

from __future__ import annotations

from healthmesh.errors import HealthmeshError

__all__ = ["ConversionError", "Hl7Error", "MessageRejected"]

# HL7 table 0357 (message error condition codes) used here
SEGMENT_SEQUENCE = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT = "201"
UNSUPPORTED_VERSION = "203"
INTERNAL_ERROR = "207"

ERROR_TEXT = {
    SEGMENT_SEQUENCE: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT: "Unsupported event code",
    UNSUPPORTED_VERSION: "Unsupported version id",
    INTERNAL_ERROR: "Application internal error",
}


class Hl7Error(HealthmeshError):
    """A message that is not accepted; ``str()`` is the reason the ACK names."""

    ack_code = "AE"

    def __init__(self, message: str, *, code: str = INTERNAL_ERROR,
                 location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.location = location


class MessageRejected(Hl7Error):
    """AR: the message cannot be parsed, or its type or version is not supported."""

    ack_code = "AR"


class ConversionError(Hl7Error):
    """AE: the message parses but cannot be converted to valid FHIR or stored."""

    ack_code = "AE"
