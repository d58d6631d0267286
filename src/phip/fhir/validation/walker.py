"""Walk a resource's JSON against the compiled structs and collect issues.

The rules are those of the FHIR JSON format (https://hl7.org/fhir/R4/json.html)
and the element definitions: every property is a defined element (or its
``_name`` primitive extension), repeating elements are non-empty arrays and
single ones are not arrays, mandatory elements are present, at most one variant
of a choice element is used, there are no nulls (except to align a primitive
array with its ``_name`` array), no empty objects, arrays or strings, and every
value has the JSON kind and lexical form of its type.  Contained resources,
``Bundle.entry.resource`` and the like are walked as resources of their own type.

The walk is one function over dicts, lists and precompiled :class:`Slot` objects;
expressions (``Patient.name[0].given[1]``) are built only for objects we descend
into and for the issues found.
"""

from __future__ import annotations

from typing import Any

from phip.fhir.definitions import resource_types
from phip.fhir.validation.issue import Issue
from phip.fhir.validation.schema import (
    M_COMPLEX,
    M_COMPLEX_ARRAY,
    M_PRIM_ARRAY,
    M_PRIM_CODED,
    M_RESOURCE,
    M_RESOURCE_ARRAY,
    M_XHTML,
    Slot,
    Struct,
    resource_struct,
)
from phip.fhir.validation.xhtml import check_div


def validate(resource: Any) -> list[Issue]:
    """Validate one resource (parsed JSON); return its issues, ``[]`` when it is valid."""
    issues: list[Issue] = []
    rt = resource.get("resourceType") if type(resource) is dict else None
    root = rt if type(rt) is str and resource_struct(rt) is not None else "Resource"
    try:
        _resource(resource, root, issues, False)
    except RecursionError:  # only for JSON nested deeper than any parser would hand us
        issues.append(Issue("error", "too-costly", root, "The resource is nested too deeply to validate"))
    return issues


def prepare() -> None:
    """Compile the tables of every resource type now (about 0.1 s) instead of on first use."""
    for rt in resource_types():
        resource_struct(rt)


def _err(issues: list[Issue], code: str, expression: str, diagnostics: str) -> None:
    issues.append(Issue("error", code, expression, diagnostics))


def _kind(val: object) -> str:
    if val is None:
        return "null"
    if type(val) is dict:
        return "an object"
    if type(val) is list:
        return "an array"
    if type(val) is str:
        return "a string"
    if type(val) is bool:
        return "a boolean"
    return "a number"


def _resource(val: Any, path: str, issues: list[Issue], contained: bool) -> None:
    """Check ``val`` is a resource of a known concrete type, then walk it by its type."""
    if type(val) is not dict:
        _err(issues, "structure", path, f"A resource must be a JSON object, not {_kind(val)}")
        return
    rt = val.get("resourceType")
    if rt is None:
        _err(issues, "required", path, "The resource has no resourceType")
        return
    st = resource_struct(rt) if type(rt) is str else None
    if st is None:
        _err(issues, "not-supported", path, f"The resourceType {rt!r} is not a known concrete FHIR R4 resource type")
        return
    _walk(val, st, path, issues)
    if contained:
        _check_contained_resource(val, path, issues)
    elif "contained" in val:
        _check_contained_referenced(val, path, issues)


def _walk(obj: dict[str, Any], st: Struct, path: str, issues: list[Issue]) -> None:
    """Check every property of ``obj`` against ``st``; then the mandatory elements.

    The common case of each mode is tested first with the cheapest C-level
    checks; everything unusual falls to the ``_bad_*`` helpers that word the issue.
    """
    props = st.props
    choices: dict[str, str] | None = None
    for key, val in obj.items():
        slot = props.get(key)
        if slot is None:
            slot = st.ext_props.get(key)
            if slot is None:
                if not (key == "resourceType" and st.is_resource):
                    _unknown(st, key, path, issues)
                continue
            if slot.choice is not None:
                if choices is None:
                    choices = {}
                if choices.setdefault(slot.choice, slot.key) != slot.key:
                    _two_choices(st, slot, choices[slot.choice], path, issues)
            _primitive_extension(obj, val, slot, path, issues)
            continue
        if slot.choice is not None:
            if choices is None:
                choices = {}
            if choices.setdefault(slot.choice, slot.key) != slot.key:
                _two_choices(st, slot, choices[slot.choice], path, issues)
        mode = slot.mode
        if mode <= M_PRIM_CODED:
            fast = slot.fast
            if fast is None or val.__class__ is not str or not val or not fast(val):
                msg = slot.check(val)  # type: ignore[misc]
                if msg is not None:
                    _bad_single(slot, key, val, msg, path, issues)
                    continue
            if mode == M_PRIM_CODED and val not in slot.codes:  # type: ignore[operator]
                _bad_code(slot, val, f"{path}.{key}", issues)
        elif mode == M_COMPLEX:
            if val.__class__ is dict and val:
                p = f"{path}.{key}"
                _walk(val, slot.struct, p, issues)  # type: ignore[arg-type]
                if slot.post is not None:
                    slot.post(val, p, issues, slot)
            else:
                _bad_single(slot, key, val, None, path, issues)
        elif mode == M_PRIM_ARRAY:
            if val.__class__ is list and val:
                _primitive_array(obj, key, val, slot, path, issues)
            else:
                _bad_array(slot, key, val, path, issues)
        elif mode == M_COMPLEX_ARRAY:
            if val.__class__ is list and val:
                sub: Struct = slot.struct  # type: ignore[assignment]
                post = slot.post
                for i, item in enumerate(val):
                    if item.__class__ is dict and item:
                        p = f"{path}.{key}[{i}]"
                        _walk(item, sub, p, issues)
                        if post is not None:
                            post(item, p, issues, slot)
                    else:
                        _bad_object(slot, item, f"{path}.{key}[{i}]", issues)
            else:
                _bad_array(slot, key, val, path, issues)
        elif mode == M_RESOURCE:
            if val.__class__ is list or val is None:
                _bad_single(slot, key, val, None, path, issues)
            else:
                _resource(val, f"{path}.{key}", issues, slot.contained)
        elif mode == M_RESOURCE_ARRAY:
            if val.__class__ is list and val:
                for i, item in enumerate(val):
                    _resource(item, f"{path}.{key}[{i}]", issues, slot.contained)
            else:
                _bad_array(slot, key, val, path, issues)
        elif mode == M_XHTML:
            if val.__class__ is list or val is None:
                _bad_single(slot, key, val, None, path, issues)
            else:
                for code, msg in check_div(val):
                    _err(issues, code, f"{path}.{key}", msg)
        else:
            _err(issues, "structure", f"{path}.{key}", f"{slot.label} is not allowed (cardinality 0..0)")
    for keys, label in st.required:
        for k in keys:
            if k in obj:
                break
        else:
            name = label.rsplit(".", 1)[-1].removesuffix("[x]")  # FHIRPath names a choice without [x]
            _err(issues, "required", f"{path}.{name}", f"{label} is required (minimum cardinality 1) but missing")
    if st.post is not None:
        st.post(obj, path, issues)


def _bad_single(slot: Slot, key: str, val: Any, msg: str | None, path: str, issues: list[Issue]) -> None:
    """Word the issue with a non-repeating element's value."""
    expr = f"{path}.{key}"
    if val is None:
        _err(issues, "structure", expr, f"{slot.label} is null; omit absent elements instead")
    elif val.__class__ is list:
        _err(issues, "structure", expr, f"{slot.label} does not repeat, so it must not be a JSON array")
    elif msg is not None:
        _err(issues, "value", expr, f"{slot.label}: {msg}")
    else:
        _bad_object(slot, val, expr, issues)


def _bad_array(slot: Slot, key: str, val: Any, path: str, issues: list[Issue]) -> None:
    """Word the issue with a repeating element that is not a non-empty array."""
    expr = f"{path}.{key}"
    if val is None:
        _err(issues, "structure", expr, f"{slot.label} is null; omit absent elements instead")
    elif val.__class__ is not list:
        _err(issues, "structure", expr, f"{slot.label} repeats, so it must be a JSON array, not {_kind(val)}")
    else:
        _err(issues, "structure", expr, f"{slot.label} is an empty array; omit it instead")


def _primitive_array(obj: dict[str, Any], key: str, val: list[Any], slot: Slot, path: str, issues: list[Issue]) -> None:
    """Items of a repeating primitive; a null is allowed where ``_key`` has an item."""
    fast = slot.fast
    codes = slot.codes
    for i, item in enumerate(val):
        if fast is None or item.__class__ is not str or not item or not fast(item):
            if item is None:
                ext = obj.get(slot.ext_key)
                if not (ext.__class__ is list and len(ext) == len(val) and ext[i] is not None):
                    _err(
                        issues,
                        "structure",
                        f"{path}.{key}[{i}]",
                        f"{slot.label} has a null item with no matching item in {slot.ext_key}",
                    )
                continue
            msg = slot.check(item)  # type: ignore[misc]
            if msg is not None:
                _err(issues, "value", f"{path}.{key}[{i}]", f"{slot.label}: {msg}")
                continue
        if codes is not None and item not in codes:
            _bad_code(slot, item, f"{path}.{key}[{i}]", issues)


def _primitive_extension(obj: dict[str, Any], val: Any, slot: Slot, path: str, issues: list[Issue]) -> None:
    """A ``_name`` property: the id and extensions of primitive ``name`` (json.html#primitive)."""
    key = slot.key
    sub: Struct = slot.struct  # type: ignore[assignment]
    if slot.repeats:
        if type(val) is not list:
            _err(
                issues,
                "structure",
                f"{path}.{key}",
                f"The property {slot.ext_key} must be a JSON array aligned with {key}, not {_kind(val)}",
            )
            return
        if not val:
            _err(
                issues, "structure", f"{path}.{key}", f"The property {slot.ext_key} is an empty array; omit it instead"
            )
            return
        base = obj.get(key)
        if type(base) is list and len(base) != len(val):
            _err(
                issues,
                "structure",
                f"{path}.{key}",
                f"The property {slot.ext_key} has {len(val)} items but {key} has {len(base)}; they must be aligned",
            )
            base = None
        elif type(base) is not list:
            base = None
        for i, item in enumerate(val):
            p = f"{path}.{key}[{i}]"
            if item is None:
                if base is None:  # with an aligned value array, the value side reports a double null
                    _err(issues, "structure", p, f"The property {slot.ext_key} has a null item with no value in {key}")
                continue
            if type(item) is not dict or not item:
                _bad_object(slot, item, p, issues, f"An item of {slot.ext_key}")
                continue
            _walk(item, sub, p, issues)
    elif type(val) is not dict or not val:
        _bad_object(slot, val, f"{path}.{key}", issues, f"The property {slot.ext_key}")
    else:
        _walk(val, sub, f"{path}.{key}", issues)


def _bad_code(slot: Slot, val: Any, path: str, issues: list[Issue]) -> None:
    codes = slot.codes or frozenset()
    hint = " (one of: " + ", ".join(sorted(codes)) + ")" if len(codes) <= 12 else ""
    _err(
        issues,
        "code-invalid",
        path,
        f"The code {val!r} of {slot.label} is not in the required value set {slot.binding}{hint}",
    )


def _bad_object(slot: Slot, val: Any, path: str, issues: list[Issue], what: str | None = None) -> None:
    what = what or slot.label
    if type(val) is dict:
        _err(issues, "structure", path, f"{what} is an empty object; omit it instead")
    elif val is None:
        _err(issues, "structure", path, f"{what} is null; omit absent elements instead")
    else:
        _err(issues, "structure", path, f"{what} must be a JSON object, not {_kind(val)}")


def _unknown(st: Struct, key: str, path: str, issues: list[Issue]) -> None:
    """Say why ``key`` is not a property of ``st``: a wrong choice type, a misplaced ``_``, or unknown."""
    expr = f"{path}.{key}"
    for base, (element, tys) in st.choice_types.items():
        if key.startswith(base) and key[len(base) : len(base) + 1].isupper():
            allowed = ", ".join(base + t[0].upper() + t[1:] for t in tys)
            _err(
                issues,
                "structure",
                expr,
                f"The property {key!r} is not an allowed type for {st.label}.{element}; use one of: {allowed}",
            )
            return
    if key.startswith("_") and key[1:] in st.props:
        _err(
            issues,
            "structure",
            expr,
            f"The property {key!r} is not allowed: {st.props[key[1:]].label} is not a primitive, so it has no '_' form",
        )
        return
    if key == "resourceType":
        _err(
            issues,
            "structure",
            expr,
            f"The property resourceType is not allowed in {st.label}, which is not a resource",
        )
        return
    _err(issues, "structure", expr, f"Unknown property {key!r}: {st.label} has no element of that name")


def _two_choices(st: Struct, slot: Slot, first: str, path: str, issues: list[Issue]) -> None:
    _err(
        issues,
        "structure",
        f"{path}.{slot.key}",
        f"{st.label}.{slot.choice} may have only one type, but both {first} and {slot.key} are present",
    )


# Contained resources (https://hl7.org/fhir/R4/references.html#contained, invariants dom-2..dom-5).


def _check_contained_resource(res: dict[str, Any], path: str, issues: list[Issue]) -> None:
    if "contained" in res:
        _err(issues, "invariant", f"{path}.contained", "A contained resource must not contain resources (dom-2)")
    meta = res.get("meta")
    if type(meta) is dict:
        for name in ("versionId", "lastUpdated"):
            if name in meta:
                _err(
                    issues,
                    "invariant",
                    f"{path}.meta.{name}",
                    f"A contained resource must not have meta.{name} (dom-4)",
                )
        if "security" in meta:
            _err(
                issues,
                "invariant",
                f"{path}.meta.security",
                "A contained resource must not have security labels (dom-5)",
            )


def _local_refs(node: Any, out: set[str]) -> None:
    """Collect every string starting with '#' (references, canonicals, uris) under ``node``."""
    if type(node) is dict:
        for v in node.values():
            if type(v) is str:
                if v[:1] == "#":
                    out.add(v)
            elif type(v) is dict or type(v) is list:
                _local_refs(v, out)
    elif type(node) is list:
        for v in node:
            if type(v) is str:
                if v[:1] == "#":
                    out.add(v)
            elif type(v) is dict or type(v) is list:
                _local_refs(v, out)


def _check_contained_referenced(res: dict[str, Any], path: str, issues: list[Issue]) -> None:
    """dom-3: each contained resource is referenced from the resource or refers to it ("#")."""
    contained = res.get("contained")
    if type(contained) is not list:
        return
    refs: set[str] = set()
    _local_refs(res, refs)
    for i, c in enumerate(contained):
        if type(c) is not dict:
            continue
        cid = c.get("id")
        if type(cid) is str and "#" + cid in refs:
            continue
        own: set[str] = set()
        _local_refs(c, own)
        if "#" in own:
            continue
        what = f"with id {cid!r}" if type(cid) is str else "without an id"
        _err(
            issues,
            "invariant",
            f"{path}.contained[{i}]",
            f"The contained resource {what} is not referenced from the resource and does not refer to it (dom-3)",
        )
