"""The FHIR R4 definitions, loaded once from the generated tables in ``spec/``.

Everything phip knows of FHIR structure (resource types, elements, datatypes,
required bindings, search parameters, compartments) comes from here: data from
the spec, never per-type code.  See ``scripts/gen_spec.py`` for how the tables
are made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import orjson


def _load(name: str) -> Any:
    raw = resources.files("phip.fhir").joinpath("spec", name).read_bytes()
    return orjson.loads(raw)["data"]


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a type, relative to the type (``name.given``, ``value[x]``)."""

    path: str
    min: int
    max: str  # "1", "*", "0"
    types: tuple[str, ...]
    targets: tuple[str, ...] = ()
    binding: str | None = None  # required ValueSet url
    ref: str | None = None  # contentReference (relative path of the element it repeats)
    modifier: bool = False
    summary: bool = False

    @property
    def repeats(self) -> bool:
        return self.max != "1" and self.max != "0"

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def is_choice(self) -> bool:
        return self.path.endswith("[x]")


@dataclass(slots=True)
class TypeDef:
    name: str
    kind: str  # resource | complex-type | primitive-type
    abstract: bool
    base: str | None
    elements: dict[str, Element] = field(default_factory=dict)
    regex: str | None = None

    def children(self, parent: str) -> dict[str, Element]:
        """The direct children of ``parent`` ("" for the top), by element name."""
        return _children(self.name, parent)


@dataclass(frozen=True, slots=True)
class SearchParamDef:
    url: str
    code: str
    base: tuple[str, ...]
    type: str  # number date string token reference composite quantity uri special
    expression: str | None
    target: tuple[str, ...] = ()
    modifier: tuple[str, ...] = ()
    comparator: tuple[str, ...] = ()
    component: tuple[tuple[str, str], ...] = ()  # (definition url, expression)


@cache
def types() -> dict[str, TypeDef]:
    out: dict[str, TypeDef] = {}
    for name, t in _load("structures.json").items():
        td = TypeDef(name=name, kind=t["kind"], abstract=t["abstract"], base=t["base"], regex=t.get("regex"))
        for e in t["elements"]:
            td.elements[e["path"]] = Element(
                path=e["path"],
                min=e["min"],
                max=e["max"],
                types=tuple(e.get("types", ())),
                targets=tuple(e.get("targets", ())),
                binding=e.get("binding"),
                ref=e.get("ref"),
                modifier=e.get("modifier", False),
                summary=e.get("summary", False),
            )
        out[name] = td
    return out


@cache
def resource_types() -> frozenset[str]:
    """Every concrete R4 resource type."""
    return frozenset(n for n, t in types().items() if t.kind == "resource" and not t.abstract)


@cache
def _children(type_name: str, parent: str) -> dict[str, Element]:
    td = types()[type_name]
    prefix = parent + "." if parent else ""
    depth = parent.count(".") + 1 if parent else 0
    out: dict[str, Element] = {}
    for path, el in td.elements.items():
        if path.startswith(prefix) and path.count(".") == depth:
            out[el.name] = el
    return out


@cache
def valueset_codes() -> dict[str, frozenset[str]]:
    """Codes of the ValueSets the base spec binds with strength ``required``."""
    return {url: frozenset(codes) for url, codes in _load("valuesets.json").items()}


@cache
def search_params() -> tuple[SearchParamDef, ...]:
    out = []
    for p in _load("search.json"):
        out.append(
            SearchParamDef(
                url=p["url"],
                code=p["code"],
                base=tuple(p["base"]),
                type=p["type"],
                expression=p.get("expression"),
                target=tuple(p.get("target", ())),
                modifier=tuple(p.get("modifier", ())),
                comparator=tuple(p.get("comparator", ())),
                component=tuple((c["definition"], c["expression"]) for c in p.get("component", ())),
            )
        )
    return tuple(out)


@cache
def search_params_by_url() -> dict[str, SearchParamDef]:
    return {p.url: p for p in search_params()}


@cache
def search_params_for(resource_type: str) -> dict[str, SearchParamDef]:
    """The search parameters of one resource type, by code (base Resource ones included)."""
    out: dict[str, SearchParamDef] = {}
    for p in search_params():
        if resource_type in p.base or "Resource" in p.base or (
            "DomainResource" in p.base and resource_type not in ("Bundle", "Binary", "Parameters")
        ):
            out[p.code] = p
    return out


@cache
def compartments() -> dict[str, dict[str, tuple[str, ...]]]:
    """compartment type -> resource type -> the params that place a resource in it."""
    return {c: {rt: tuple(ps) for rt, ps in m.items()} for c, m in _load("compartments.json").items()}
