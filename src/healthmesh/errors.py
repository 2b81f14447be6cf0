"""The healthmesh exception tree.

Every error raised by healthmesh derives from :class:`HealthmeshError`.
Errors that a FHIR client may see carry an HTTP status and a list of
OperationOutcome issues, so the API layer turns any of them into a proper
``OperationOutcome`` response without knowing what went wrong::

    HealthmeshError
     ├── ConfigError                 bad settings or node folder
     ├── InputError                  unreadable input file/line (CLI ingest)
     └── FhirError                   carries status + OperationOutcome issues
          ├── InvalidResource        400  resource fails FHIR R4 validation
          ├── InvalidRequest         400  malformed request or search parameter
          ├── NotFound               404
          ├── MethodNotAllowed       405
          ├── Conflict               409  version conflict, duplicate
          ├── Gone                   410  resource was deleted
          ├── PreconditionFailed     412  If-Match / conditional failure
          ├── PayloadTooLarge        413
          ├── UnsupportedMediaType   415
          └── BusinessRuleViolation  422

Third-party errors (sqlite3, orjson, ...) are translated at the boundary of
the module that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BusinessRuleViolation",
    "ConfigError",
    "Conflict",
    "FhirError",
    "Gone",
    "HealthmeshError",
    "InputError",
    "InvalidRequest",
    "InvalidResource",
    "Issue",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "UnsupportedMediaType",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue.

    ``code`` is a FHIR IssueType code (``structure``, ``required``, ``value``,
    ``code-invalid``, ``invalid``, ``not-found``, ``not-supported``, ...);
    ``expression`` is the FHIRPath location of the problem, if any.
    """

    severity: str
    code: str
    message: str
    expression: str | None = None

    def to_fhir(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.message,
        }
        if self.expression:
            out["expression"] = [self.expression]
        return out


class HealthmeshError(Exception):
    """Base of every healthmesh error."""


class ConfigError(HealthmeshError):
    """Invalid settings or node folder."""


class InputError(HealthmeshError):
    """An input file or line that cannot be read; the message names it."""


@dataclass
class FhirError(HealthmeshError):
    """An error a FHIR client sees as an OperationOutcome with ``status``."""

    message: str
    issues: list[Issue] = field(default_factory=list)
    status: int = 400
    code: str = "processing"

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.issues:
            self.issues = [Issue("error", self.code, self.message)]

    def __str__(self) -> str:
        return self.message

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome resource for this error."""
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """Build an OperationOutcome resource from issues."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def _subclass(name: str, status: int, code: str, doc: str) -> type[FhirError]:
    def init(self: FhirError, message: str, issues: list[Issue] | None = None) -> None:
        FhirError.__init__(self, message, issues or [], status, code)

    return type(name, (FhirError,), {"__init__": init, "__doc__": doc})


InvalidResource = _subclass("InvalidResource", 400, "invalid", "Resource fails validation.")
InvalidRequest = _subclass("InvalidRequest", 400, "invalid", "Malformed request.")
NotFound = _subclass("NotFound", 404, "not-found", "No such resource.")
MethodNotAllowed = _subclass("MethodNotAllowed", 405, "not-supported", "Method not allowed.")
Conflict = _subclass("Conflict", 409, "conflict", "Version conflict or duplicate.")
Gone = _subclass("Gone", 410, "deleted", "The resource was deleted.")
PreconditionFailed = _subclass("PreconditionFailed", 412, "conflict", "Precondition failed.")
PayloadTooLarge = _subclass("PayloadTooLarge", 413, "too-costly", "Request body too large.")
UnsupportedMediaType = _subclass(
    "UnsupportedMediaType", 415, "not-supported", "Unsupported media type."
)
BusinessRuleViolation = _subclass(
    "BusinessRuleViolation", 422, "business-rule", "A business rule was violated."
)
