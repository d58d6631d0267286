"""Compiled validation tables, built once from :mod:`phip.fhir.definitions`.

For every type (and every backbone element inside a type) we build a
:class:`Struct`: a dict from each JSON property name the object may carry to a
:class:`Slot` that knows how to check that property's value.  Choice elements
(``value[x]``) get one slot per allowed type under its JSON name
(``valueQuantity``, ``valueString``: https://hl7.org/fhir/R4/formats.html#choice);
primitive elements also get their ``_name`` extension slot
(https://hl7.org/fhir/R4/json.html#primitive).  Content references
(``Questionnaire.item.item`` repeats ``Questionnaire.item``) point at the struct
of the element they repeat.

Structs are made lazily, per type, the first time a resource of that type is
validated; building is cycle-safe (``Extension.extension`` is an Extension), and
after that validating is a dict walk with no definition look-ups.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from phip.fhir.definitions import Element, TypeDef, resource_types, types, valueset_codes
from phip.fhir.validation.checks import SLOT_POSTS, STRUCT_POSTS
from phip.fhir.validation.issue import Issue
from phip.fhir.validation.primitives import Primitive, primitives

# Slot kinds.
PRIM = 0
COMPLEX = 1
RESOURCE = 2
XHTML = 3

# Slot modes: kind x (single | array) x (coded), the walker's dispatch key.
M_PRIM = 0
M_PRIM_CODED = 1
M_COMPLEX = 2
M_PRIM_ARRAY = 3
M_COMPLEX_ARRAY = 4
M_RESOURCE = 5
M_RESOURCE_ARRAY = 6
M_XHTML = 7
M_PROHIBITED = 8


class Slot:
    """How to check one JSON property of an object."""

    __slots__ = (
        "binding",
        "check",
        "choice",
        "codes",
        "contained",
        "element",
        "ext_key",
        "fast",
        "key",
        "kind",
        "label",
        "mode",
        "post",
        "prim",
        "prohibited",
        "repeats",
        "struct",
        "targets",
    )

    def __init__(self, key: str, element: str, label: str, kind: int, repeats: bool) -> None:
        self.key = key  # JSON property name, e.g. "valueQuantity"
        self.element = element  # element name, e.g. "value[x]"
        self.label = label  # definition path for diagnostics, e.g. "Observation.value[x]"
        self.kind = kind
        self.repeats = repeats
        self.prohibited = False
        self.prim: Primitive | None = None
        self.check: Callable[[object], str | None] | None = None
        self.fast: Callable[[str], object] | None = None  # see Primitive.fast
        self.mode = M_PROHIBITED  # set by _slot
        self.struct: Struct | None = None  # complex children, or a primitive's "_x" object
        self.codes: frozenset[str] | None = None  # required binding, when expandable
        self.binding: str | None = None
        self.targets: frozenset[str] | None = None  # Reference targets, None = any
        self.choice: str | None = None  # the choice element ("value[x]") this slot is a variant of
        self.post: Callable[[dict[str, Any], str, list[Issue], Slot], None] | None = None
        self.ext_key = "_" + key
        self.contained = False


class Struct:
    """The compiled definition of one object shape (a type, or a backbone element)."""

    __slots__ = ("choice_types", "ext_props", "is_resource", "label", "post", "props", "required")

    def __init__(self, label: str, is_resource: bool) -> None:
        self.label = label
        self.is_resource = is_resource
        self.props: dict[str, Slot] = {}
        self.ext_props: dict[str, Slot] = {}  # "_given" -> the slot of "given"
        self.required: tuple[tuple[tuple[str, ...], str], ...] = ()  # (JSON keys, element label)
        self.choice_types: dict[str, tuple[str, tuple[str, ...]]] = {}  # "value" -> ("value[x]", types)
        self.post: Callable[[dict[str, Any], str, list[Issue]], None] | None = None


_STRUCTS: dict[tuple[str, str], Struct] = {}


def struct_for(type_name: str, path: str = "") -> Struct:
    """The struct of ``type_name`` (``path`` "") or of its backbone element at ``path``."""
    st = _STRUCTS.get((type_name, path))
    if st is None:
        td = types()[type_name]
        st = Struct(f"{type_name}.{path}" if path else type_name, td.kind == "resource" and not path)
        _STRUCTS[(type_name, path)] = st  # registered before filling: types refer to themselves
        _fill(st, td, path)
        if not path and type_name in STRUCT_POSTS:
            st.post = STRUCT_POSTS[type_name]
    return st


_READY: dict[str, Struct] = {}
_BUILD_LOCK = threading.Lock()


def resource_struct(type_name: str) -> Struct | None:
    """The struct of a concrete resource type, or None when there is no such type.

    Thread-safe: a type's structs are built under a lock and published only once
    complete (while building, :data:`_STRUCTS` holds structs still being filled).
    """
    st = _READY.get(type_name)
    if st is None:
        if type_name not in resource_types():
            return None
        with _BUILD_LOCK:
            st = struct_for(type_name)
            _READY[type_name] = st
    return st


def _fill(st: Struct, td: TypeDef, path: str) -> None:
    required: list[tuple[tuple[str, ...], str]] = []
    for name, el in td.children(path).items():
        if td.kind == "primitive-type" and name == "value":
            continue  # the value itself is the JSON primitive; "_x" holds only id and extension
        target = td.elements[el.ref] if el.ref else el
        is_choice = el.is_choice
        base = name[:-3] if is_choice else name
        label = f"{td.name}.{el.path}"
        keys: list[str] = []
        for code in target.types:
            key = base + code[0].upper() + code[1:] if is_choice else name
            slot = _slot(st, td, el, target, code, key, label)
            if is_choice:
                slot.choice = name
            st.props[key] = slot
            keys.append(key)
            if slot.kind in (PRIM, XHTML):
                st.ext_props[slot.ext_key] = slot
                keys.append(slot.ext_key)
        if is_choice:
            st.choice_types[base] = (name, target.types)
        if el.min > 0:
            required.append((tuple(keys), label))
    st.required = tuple(required)


def _slot(st: Struct, td: TypeDef, el: Element, target: Element, code: str, key: str, label: str) -> Slot:
    prims = primitives()
    if code == "xhtml":
        kind = XHTML
    elif code in prims:
        kind = PRIM
    elif code == "Resource":
        kind = RESOURCE
    else:
        kind = COMPLEX
    slot = Slot(key, el.name, label, kind, el.repeats)
    slot.prohibited = el.max == "0"
    if kind in (PRIM, XHTML):
        if st.is_resource and el.path == "id":
            code = "id"  # Resource.id is an id (https://hl7.org/fhir/R4/resource.html#id)
        slot.prim = prims[code]
        slot.check = slot.prim.check
        slot.fast = slot.prim.fast
        slot.struct = struct_for(code)
    elif kind == COMPLEX:
        if code in ("BackboneElement", "Element") and td.children(target.path):
            slot.struct = struct_for(td.name, target.path)
        else:
            slot.struct = struct_for(code)
    elif kind == RESOURCE:
        slot.contained = el.path == "contained"
    binding = el.binding or target.binding
    if binding is not None:
        slot.binding = binding
        slot.codes = valueset_codes().get(binding)
    targets = el.targets or target.targets
    if targets and "Resource" not in targets:
        slot.targets = frozenset(targets)
    if code in SLOT_POSTS and (slot.codes is not None or slot.targets is not None):
        slot.post = SLOT_POSTS[code]
    if slot.prohibited:
        slot.mode = M_PROHIBITED
    elif kind == PRIM:
        if slot.repeats:
            slot.mode = M_PRIM_ARRAY
        else:
            slot.mode = M_PRIM if slot.codes is None else M_PRIM_CODED
    elif kind == COMPLEX:
        slot.mode = M_COMPLEX_ARRAY if slot.repeats else M_COMPLEX
    elif kind == RESOURCE:
        slot.mode = M_RESOURCE_ARRAY if slot.repeats else M_RESOURCE
    else:
        slot.mode = M_XHTML
    return slot
