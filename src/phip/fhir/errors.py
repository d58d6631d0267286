"""FHIR errors and OperationOutcome builders.

Every error phip returns is an ``OperationOutcome`` (https://hl7.org/fhir/R4/operationoutcome.html)
whose issues name the bad path in ``expression``.  Code raises :class:`FhirError`;
the HTTP layer turns it into a response with the error's status.  Each error carries
a stable ``code`` (``PHIP-xxxx``) in ``details.coding`` so clients can act on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue."""

    severity: str  # fatal | error | warning | information
    code: str  # OperationOutcome issue-type code (invalid, structure, not-found, conflict, …)
    diagnostics: str
    expression: str | None = None
    msg_id: str | None = None  # phip's stable message code, e.g. PHIP-1001

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.msg_id:
            out["details"] = {"coding": [{"system": "urn:phip:message", "code": self.msg_id}]}
        out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = [self.expression]
        return out


def outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    """An OperationOutcome resource for ``issues`` (an informational 'ok' when empty)."""
    if not issues:
        issues = [Issue("information", "informational", "All OK")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


class FhirError(Exception):
    """An error answered with ``status`` and an OperationOutcome."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        *,
        code: str = "invalid",
        expression: str | None = None,
        msg_id: str | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issues = issues or [Issue("error", code, diagnostics, expression, msg_id)]
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return outcome(self.issues)


def bad_request(diagnostics: str, *, expression: str | None = None, msg_id: str | None = None) -> FhirError:
    return FhirError(400, diagnostics, code="invalid", expression=expression, msg_id=msg_id)


def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, diagnostics, code="not-found", msg_id="PHIP-1404")


def gone(diagnostics: str) -> FhirError:
    return FhirError(410, diagnostics, code="deleted", msg_id="PHIP-1410")


def conflict(diagnostics: str, status: int = 409) -> FhirError:
    return FhirError(status, diagnostics, code="conflict", msg_id=f"PHIP-1{status}")
