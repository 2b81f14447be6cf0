"""HL7 v2 feeds into a node: parse (python-hl7), convert to FHIR R4, store, acknowledge.

* :func:`parse_message` reads one message (character sets, ``\\r``/``\\n`` separators,
  escape sequences); :func:`split_messages` splits files and FHS/BHS batches.
* :func:`convert` maps ADT^A01/A03/A04/A08/A28/A31/A40, ORU^R01, ORM^O01, OML^O21 and
  VXU^V04 to Patient, Encounter, Organization, Practitioner, DiagnosticReport,
  Observation, ServiceRequest and Immunization (tables in docs/hl7v2.md).
* :class:`Hl7Intake` stores one message per transaction through the node's write path,
  idempotently; :func:`build_ack` answers it.
* :class:`MllpServer` is the ``healthmesh mllp serve`` listener, :class:`DeadLetter`
  keeps what it rejects.
"""

from healthmesh.hl7v2.ack import build_ack
from healthmesh.hl7v2.convert import SUPPORTED, convert
from healthmesh.hl7v2.deadletter import DeadLetter
from healthmesh.hl7v2.errors import ConversionError, Hl7Error, MessageRejected
from healthmesh.hl7v2.intake import Hl7Intake, Receipt
from healthmesh.hl7v2.message import (
    Hl7Message,
    RawMessage,
    Unreadable,
    parse_message,
    split_messages,
)
from healthmesh.hl7v2.mllp import MllpServer, send

__all__ = [
    "SUPPORTED",
    "ConversionError",
    "DeadLetter",
    "Hl7Error",
    "Hl7Intake",
    "Hl7Message",
    "MessageRejected",
    "MllpServer",
    "RawMessage",
    "Receipt",
    "Unreadable",
    "build_ack",
    "convert",
    "parse_message",
    "send",
    "split_messages",
]
