"""Checks of datatype semantics that cardinality and types alone do not give.

- Reference targets: a relative reference ``Type/id`` (or ``Type/id/_history/v``)
  must name one of the types the element allows
  (https://hl7.org/fhir/R4/references.html#Reference); so must ``Reference.type``.
- Required bindings (https://hl7.org/fhir/R4/terminologies.html#required): a
  ``Coding`` must carry a code of the value set, a ``CodeableConcept`` at least one
  such coding.  Only value sets the spec lets us expand have codes; others are skipped.
- Extension invariant ext-1 (https://hl7.org/fhir/R4/extensibility.html#Extension):
  an extension has either a ``value[x]`` or nested extensions, not both, not neither.

These are keyed by datatype name (generic to FHIR, not to any resource) and the
schema attaches them to the slots or structs they apply to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from phip.fhir.definitions import resource_types
from phip.fhir.validation.issue import Issue

if TYPE_CHECKING:
    from collections.abc import Callable

    from phip.fhir.validation.schema import Slot


_RESOURCE_TYPES = resource_types()


def _codes_hint(codes: frozenset[str]) -> str:
    if len(codes) <= 12:
        return " (one of: " + ", ".join(sorted(codes)) + ")"
    return ""


def _names(targets: frozenset[str]) -> str:
    return ", ".join(sorted(targets))


def check_reference(value: dict[str, Any], path: str, issues: list[Issue], slot: Slot) -> None:
    """The reference's target type must be one the element allows."""
    targets = slot.targets
    if targets is None:
        return
    ref = value.get("reference")
    if type(ref) is str:
        head, slash, rest = ref.partition("/")  # the common case (an allowed type) ends here
        if slash and head not in targets and head in _RESOURCE_TYPES:
            parts = rest.split("/")
            if len(parts) == 1 or (len(parts) == 3 and parts[1] == "_history"):
                issues.append(
                    Issue(
                        "error",
                        "invalid",
                        path + ".reference",
                        f"{slot.label} may refer only to {_names(targets)}, not to {head} ({ref!r})",
                    )
                )
    rtype = value.get("type")
    if type(rtype) is str and rtype not in targets and rtype in _RESOURCE_TYPES:
        issues.append(
            Issue(
                "error",
                "invalid",
                path + ".type",
                f"{slot.label} may refer only to {_names(targets)}, not to the type {rtype!r}",
            )
        )


def check_coding(value: dict[str, Any], path: str, issues: list[Issue], slot: Slot) -> None:
    """A Coding bound to a required value set must have one of its codes."""
    codes = slot.codes
    if codes is None:
        return
    code = value.get("code")
    if code is None:
        if "_code" not in value:
            issues.append(
                Issue(
                    "error",
                    "code-invalid",
                    path,
                    f"{slot.label} has a required binding to {slot.binding} but the Coding has no code"
                    + _codes_hint(codes),
                )
            )
    elif type(code) is str and code not in codes:
        issues.append(
            Issue(
                "error",
                "code-invalid",
                path + ".code",
                f"The code {code!r} of {slot.label} is not in the required value set {slot.binding}"
                + _codes_hint(codes),
            )
        )


def check_codeable_concept(value: dict[str, Any], path: str, issues: list[Issue], slot: Slot) -> None:
    """A CodeableConcept bound to a required value set needs a coding from it."""
    codes = slot.codes
    if codes is None:
        return
    codings = value.get("coding")
    if type(codings) is list:
        for c in codings:
            if type(c) is dict:
                code = c.get("code")
                if type(code) is str and code in codes:
                    return
    found = [c.get("code") for c in codings if type(c) is dict] if type(codings) is list else []
    shown = ", ".join(repr(c) for c in found if type(c) is str)
    if shown:
        what = f"none of its codes ({shown}) is in that value set"
    else:
        what = "the CodeableConcept has no coded value"
    issues.append(
        Issue(
            "error",
            "code-invalid",
            path,
            f"{slot.label} has a required binding to {slot.binding}, but {what}" + _codes_hint(codes),
        )
    )


def check_extension(value: dict[str, Any], path: str, issues: list[Issue]) -> None:
    """ext-1: an extension has nested extensions or a value, not both and not neither."""
    has_ext = "extension" in value
    has_value = False
    for k in value:
        if k.startswith(("value", "_value")):
            has_value = True
            break
    if has_ext == has_value:
        what = "both a value[x] and nested extensions" if has_ext else "neither a value[x] nor extensions"
        issues.append(
            Issue(
                "error",
                "invariant",
                path,
                f"The extension {value.get('url', '')!r} has {what}; it must have exactly one (ext-1)",
            )
        )


#: Post-checks for a complex value, by datatype, run when the element has targets or a binding.
SLOT_POSTS: dict[str, Callable[[dict[str, Any], str, list[Issue], Slot], None]] = {
    "Reference": check_reference,
    "Coding": check_coding,
    "CodeableConcept": check_codeable_concept,
}

#: Checks for every object of a datatype.
STRUCT_POSTS: dict[str, Callable[[dict[str, Any], str, list[Issue]], None]] = {
    "Extension": check_extension,
}
