"""In-memory indexes of CodeSystem, ValueSet and ConceptMap resources.

Built once from the FHIR JSON (https://hl7.org/fhir/R4/codesystem.html, valueset.html,
conceptmap.html) and then answered with dictionary look-ups: the terminology service keeps one
index per stored resource and rebuilds only the resources that changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

Json = dict[str, Any]


@dataclass(slots=True)
class Concept:
    code: str
    display: str | None = None
    definition: str | None = None
    parents: tuple[str, ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)
    designations: list[Json] = field(default_factory=list)

    @property
    def inactive(self) -> bool:
        st = self.properties.get("status")
        return bool(self.properties.get("inactive")) or st in ("retired", "inactive", "deprecated")


@dataclass(slots=True)
class CodeSystemIndex:
    """The concepts of one version of a code system, with its hierarchy."""

    url: str
    version: str | None
    name: str | None
    title: str | None
    status: str
    content: str  # complete | fragment | example | not-present | supplement
    date: str | None
    case_sensitive: bool = True
    resource_id: str | None = None
    concepts: dict[str, Concept] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    #: normalises a code before the look-up (ICD-10 dot, case) — None: exact codes only
    normalize: Callable[[str], str] | None = None
    #: accepts a code not listed (UCUM's grammar); returns a display or None
    grammar: Callable[[str], str | None] | None = None
    properties: list[Json] = field(default_factory=list)
    #: derived look-ups computed on demand by the service (e.g. ICD-10 → notifiable disease)
    memo: dict[str, Any] = field(default_factory=dict)

    def get(self, code: str) -> Concept | None:
        c = self.concepts.get(code)
        if c is None and self.normalize is not None:
            c = self.concepts.get(self.normalize(code))
        if c is None and not self.case_sensitive:
            c = self.concepts.get(code.upper()) or self.concepts.get(code.lower())
        return c

    @property
    def roots(self) -> list[str]:
        return [c.code for c in self.concepts.values() if not c.parents]

    def descendants(self, code: str) -> Iterator[str]:
        stack = list(reversed(self.children.get(code, [])))
        seen: set[str] = set()
        while stack:
            c = stack.pop()
            if c in seen:
                continue
            seen.add(c)
            yield c
            stack.extend(reversed(self.children.get(c, [])))

    def ancestors(self, code: str) -> set[str]:
        out: set[str] = set()
        stack = list(self.concepts[code].parents) if code in self.concepts else []
        while stack:
            p = stack.pop()
            if p not in out:
                out.add(p)
                if p in self.concepts:
                    stack.extend(self.concepts[p].parents)
        return out

    def subsumes(self, a: str, b: str) -> str | None:
        """FHIR ``$subsumes`` outcome of ``a`` against ``b`` (None: a code is unknown)."""
        ca, cb = self.get(a), self.get(b)
        if ca is None or cb is None:
            return None
        if ca.code == cb.code:
            return "equivalent"
        if ca.code in self.ancestors(cb.code):
            return "subsumes"
        if cb.code in self.ancestors(ca.code):
            return "subsumed-by"
        return "not-subsumed"

    def effective(self, today: date | None = None) -> bool:
        """False for a version whose ``date`` lies in the future (not yet in force)."""
        if not self.date:
            return True
        try:
            d = date.fromisoformat(self.date[:10])
        except ValueError:
            return True
        return d <= (today or date.today())


def parse_codesystem(res: Json) -> CodeSystemIndex:
    cs = CodeSystemIndex(
        url=res.get("url", ""), version=res.get("version"), name=res.get("name"), title=res.get("title"),
        status=res.get("status", "active"), content=res.get("content", "complete"), date=res.get("date"),
        case_sensitive=res.get("caseSensitive", True) is not False, resource_id=res.get("id"),
        properties=list(res.get("property") or []),
    )

    def walk(concepts: Iterable[Json], parent: str | None) -> None:
        for c in concepts:
            code = c.get("code")
            if not isinstance(code, str):
                continue
            props: dict[str, Any] = {}
            parents: list[str] = [parent] if parent else []
            for p in c.get("property") or []:
                v = _prop_value(p)
                if p.get("code") == "parent" and isinstance(v, str):
                    parents.append(v)
                elif p.get("code") in props:
                    cur = props[p["code"]]
                    props[p["code"]] = [*cur, v] if isinstance(cur, list) else [cur, v]
                else:
                    props[p.get("code", "")] = v
            cs.concepts[code] = Concept(code, c.get("display"), c.get("definition"), tuple(dict.fromkeys(parents)),
                                        props, list(c.get("designation") or []))
            for p in parents:
                cs.children.setdefault(p, []).append(code)
            walk(c.get("concept") or [], code)

    walk(res.get("concept") or [], None)
    return cs


def _prop_value(p: Json) -> Any:
    for k, v in p.items():
        if k.startswith("value"):
            return v
    return None


# -- value sets -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Include:
    system: str | None
    version: str | None
    codes: dict[str, str | None] | None  # code -> display (None: not enumerated)
    filters: list[tuple[str, str, str]]  # (property, op, value)
    valuesets: list[str]


@dataclass(slots=True)
class ValueSetIndex:
    url: str
    version: str | None
    name: str | None
    title: str | None
    status: str
    resource_id: str | None
    includes: list[Include]
    excludes: list[Include]
    expansion: list[Json] | None = None  # a stored expansion (contains) when there is no compose

    @property
    def systems(self) -> set[str]:
        return {i.system for i in self.includes if i.system}


def _includes(items: Iterable[Json]) -> list[Include]:
    out = []
    for inc in items:
        codes = None
        if inc.get("concept"):
            codes = {c["code"]: c.get("display") for c in inc["concept"] if "code" in c}
        filters = [(f.get("property", ""), f.get("op", ""), str(f.get("value", ""))) for f in inc.get("filter") or []]
        out.append(Include(inc.get("system"), inc.get("version"), codes, filters, list(inc.get("valueSet") or [])))
    return out


def parse_valueset(res: Json) -> ValueSetIndex:
    compose = res.get("compose") or {}
    expansion = None
    if not compose and res.get("expansion"):
        expansion = _flatten(res["expansion"].get("contains") or [])
    return ValueSetIndex(
        url=res.get("url", ""), version=res.get("version"), name=res.get("name"), title=res.get("title"),
        status=res.get("status", "active"), resource_id=res.get("id"),
        includes=_includes(compose.get("include") or []), excludes=_includes(compose.get("exclude") or []),
        expansion=expansion,
    )


def _flatten(contains: list[Json]) -> list[Json]:
    out: list[Json] = []
    for c in contains:
        out.append({k: v for k, v in c.items() if k != "contains"})
        out.extend(_flatten(c.get("contains") or []))
    return out


# -- concept maps -----------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class Mapping:
    """One target of a mapped code (FHIR ``ConceptMap.group.element.target``)."""

    source_system: str
    source_code: str
    target_system: str
    target_code: str | None
    display: str | None
    equivalence: str
    conceptmap: str
    comment: str | None = None


@dataclass(slots=True)
class ConceptMapIndex:
    url: str
    version: str | None
    name: str | None
    status: str
    resource_id: str | None
    source_vs: str | None
    target_vs: str | None
    #: (source system, code) -> mappings
    by_source: dict[tuple[str, str], list[Mapping]] = field(default_factory=dict)
    #: (target system, code) -> mappings (for reverse translation)
    by_target: dict[tuple[str, str], list[Mapping]] = field(default_factory=dict)
    source_systems: set[str] = field(default_factory=set)
    #: source system -> unmapped rule (``mode``: provided | fixed | other-map, code, url)
    unmapped: dict[str, Json] = field(default_factory=dict)


def parse_conceptmap(res: Json) -> ConceptMapIndex:
    url = res.get("url", "")
    cm = ConceptMapIndex(
        url=url, version=res.get("version"), name=res.get("name"), status=res.get("status", "active"),
        resource_id=res.get("id"),
        source_vs=res.get("sourceUri") or res.get("sourceCanonical"),
        target_vs=res.get("targetUri") or res.get("targetCanonical"),
    )
    for g in res.get("group") or []:
        src, tgt = g.get("source", ""), g.get("target", "")
        cm.source_systems.add(src)
        if g.get("unmapped"):
            cm.unmapped[src] = g["unmapped"]
        for el in g.get("element") or []:
            code = el.get("code")
            if not code:
                continue
            targets = el.get("target") or []
            for t in targets:
                m = Mapping(src, code, tgt, t.get("code"), t.get("display"), t.get("equivalence", "equivalent"), url,
                            t.get("comment"))
                cm.by_source.setdefault((src, code), []).append(m)
                if m.target_code:
                    cm.by_target.setdefault((tgt, m.target_code), []).append(m)
            if not targets:
                m = Mapping(src, code, tgt, None, None, "unmatched", url, None)
                cm.by_source.setdefault((src, code), []).append(m)
    return cm


# -- helpers ----------------------------------------------------------------------------------------
def filter_matches(cs: CodeSystemIndex, code: str, prop: str, op: str, value: str) -> bool:
    """Whether ``code`` passes one ``ValueSet.compose.include.filter`` on code system ``cs``."""
    c = cs.get(code)
    if c is None:
        return False
    if prop == "concept" and op == "is-a":
        return c.code == value or value in cs.ancestors(c.code)
    if prop == "concept" and op == "descendent-of":
        return value in cs.ancestors(c.code)
    if prop == "concept" and op == "is-not-a":
        return not (c.code == value or value in cs.ancestors(c.code))
    if prop == "concept" and op == "in":
        return c.code in value.split(",")
    if prop == "concept" and op == "regex":
        return re.fullmatch(value, c.code) is not None
    if prop == "parent" and op == "=":
        return value in c.parents
    v = c.properties.get(prop)
    vals = [str(x) for x in v] if isinstance(v, list) else ([] if v is None else [str(v).lower() if isinstance(v, bool)
                                                                                   else str(v)])
    if op == "=":
        return value in vals
    if op == "in":
        return any(x in value.split(",") for x in vals)
    if op == "not-in":
        return not any(x in value.split(",") for x in vals)
    if op == "regex":
        return any(re.fullmatch(value, x) for x in vals)
    if op == "exists":
        return bool(vals) == (value.lower() == "true")
    return False
