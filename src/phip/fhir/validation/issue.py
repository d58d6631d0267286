"""The validator's finding: one OperationOutcome issue.

Each :class:`Issue` maps one-to-one onto an ``OperationOutcome.issue``
(https://hl7.org/fhir/R4/operationoutcome.html): ``severity`` and ``code`` come
from the required value sets ``issue-severity`` and ``issue-type``
(https://hl7.org/fhir/R4/valueset-issue-type.html), ``expression`` is the
FHIRPath of the offending element with indexes (``Patient.name[0].given[1]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a resource.

    ``code`` is an OperationOutcome issue-type code: ``structure`` (JSON shape,
    unknown property, array/single mismatch), ``required`` (missing mandatory
    element), ``value`` (bad primitive value), ``code-invalid`` (code not in a
    required value set), ``invariant`` (a spec constraint such as ext-1 or
    dom-3), ``invalid`` (wrong reference target), ``not-supported`` (unknown
    resource type).
    """

    severity: Severity
    code: str
    expression: str
    diagnostics: str

    def to_json(self) -> dict[str, Any]:
        """This issue as an ``OperationOutcome.issue`` JSON object."""
        return {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
            "expression": [self.expression],
        }
