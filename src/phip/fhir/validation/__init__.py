"""A fast FHIR R4 resource validator, generated from the spec's own definitions.

``validate(resource)`` checks a parsed JSON resource against the R4 structure
definitions (https://hl7.org/fhir/R4/json.html, https://hl7.org/fhir/R4/datatypes.html,
https://hl7.org/fhir/R4/elementdefinition.html) and returns a list of
:class:`Issue` (empty when the resource is valid).  Everything comes from
:mod:`phip.fhir.definitions`; there is no per-resource code.

Checked: resourceType, unknown properties, choice types, cardinality (min, and
array vs single), JSON kinds, lexical forms and ranges of primitives, ``_name``
primitive extensions and their alignment, nulls and empty values,
``Resource.id``, complex datatypes, backbone elements and content references,
contained/Bundle/Parameters resources (and dom-2..dom-5), Extension ext-1,
Narrative XHTML (well-formed, XHTML namespace, txt-1, txt-2), required bindings
whose value set the spec lets us expand, and Reference target types.

Not checked: profiles (``meta.profile``), the other FHIRPath invariants of the
spec (ele-1, ref-1, bdl-*, ...), extensible/preferred bindings, the code system of
a bound Coding, and whether references resolve.

Speed: the tables are compiled per resource type on first use (or all at once
with :func:`prepare`); a typical clinical resource then validates in a few tens
of microseconds (see ``bench/bench_validate.py``).  ``validate`` is a pure
function, safe to call from many threads.
"""

from __future__ import annotations

from phip.fhir.validation.issue import Issue, Severity
from phip.fhir.validation.walker import prepare, validate

__all__ = ["Issue", "Severity", "errors", "is_valid", "prepare", "validate"]


def errors(resource: object) -> list[Issue]:
    """Only the ``error`` issues of :func:`validate`."""
    return [i for i in validate(resource) if i.severity == "error"]


def is_valid(resource: object) -> bool:
    """True when :func:`validate` finds no error."""
    return not errors(resource)
