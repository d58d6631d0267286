"""Compile a parsed FHIR search (:class:`phip.fhir.search.query.SearchRequest`) into SQL.

Each criterion becomes ``r.rid IN (SELECT rid FROM idx_<type> WHERE param = … AND …)``
against the index tables of ``phip.store.schema`` — a form both SQLite and PostgreSQL
drive from the index, never a scan of ``resources`` (``_text``/``_content`` excepted:
they have no index).  Values of one criterion are ORed, criteria ANDed.  Semantics
follow https://hl7.org/fhir/R4/search.html:

* string: starts-with on the folded text (``phip.fhir.search.text.normalize``),
  ``:exact`` on the raw text, ``:contains`` anywhere;
* token: ``[system]|[code]`` forms, ``:not`` (also matches resources without the
  element), ``:text``, ``:of-type``; ``:in``/``:not-in`` a ValueSet and ``:below``/``:above``
  a code of a hierarchical code system, answered from the node's :class:`CodeSets` (the
  terminology capability) as ``system IN (…) AND code IN (…)`` per code system;
* date: the value and the indexed element are both inclusive µs ranges at their
  precision, compared per prefix;
* number/quantity: implicit precision of the literal (``5.4`` is ``[5.35, 5.45)``),
  computed in decimal so the bounds are exact;
* reference: ``Type/id``, bare id, absolute URL, ``:Type``, ``:identifier``, one level
  of chaining and ``_has``; a relative search value matches local references only
  (relative, or absolute under this server's base when it is known), never an
  absolute reference to another server that happens to end in the same ``Type/id``;
* uri: exact, ``:below``, ``:above``; ``url=…|version`` on canonical resources.

Search values arrive still escaped (``\\,`` ``\\|`` ``\\$`` ``\\\\``): each type splits them
on its separators first, then unescapes the parts.

Sorting uses the smallest (ascending) or largest (descending) indexed value of a
parameter, resources without one last; paging is keyset on the sort keys and ``rid``.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement, Select

from phip.fhir import definitions as defs
from phip.fhir.datetimes import MAX, MIN, date_range, now_us
from phip.fhir.errors import FhirError, bad_request
from phip.fhir.search.extract import aliases, composite_component_types
from phip.fhir.search.query import Criterion, SearchRequest, parse_prefix, split_escaped, unescape
from phip.fhir.search.text import normalize
from phip.store import schema as S

TOP = "\U0010ffff"  # sorts after every other code point (UTF-8 and UTF-32 alike)
BIG = 1e300  # sort sentinel of a missing number
FINITE = 1e299  # sort key of an infinite (open) Range end
_TZ_SPACE = re.compile(r"^(\d{4}-\d{2}-\d{2}T[0-9:.]+) (\d{2}:\d{2})$")


def _rows(types: Sequence[str], code: str) -> list[tuple[int, str | None]]:
    """The ``(param key, target type)`` pairs that hold ``code``'s rows for these types."""
    return [p for rt in types for p in S.param_rows(rt, code)]


def _like_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@cache
def _types_with(code: str) -> tuple[str, ...]:
    """Every resource type that has a search parameter ``code`` (system-level search)."""
    return tuple(sorted(rt for rt in defs.resource_types() if code in defs.search_params_for(rt)))


#: the most codes a :in / :below / :above criterion may stand for (each is a bound parameter)
MAX_SET_CODES = 20_000
_CODE_CHUNK = 1000
CODE_SET_MODIFIERS = ("in", "not-in", "below", "above")


class CodeSets(Protocol):
    """Code sets for the token modifiers ``:in``, ``:not-in``, ``:below`` and ``:above``.

    Each answer is a list of ``(names of one code system, its codes)``; the names are the
    system's URL and every alias it is known by (an OID and its URI), as data may carry either.
    ``None``: the value set, code system or code is not known to this node.
    """

    def value_set_codes(self, url: str) -> list[tuple[list[str], list[str]]] | None: ...

    def hierarchy_codes(self, system: str, code: str, below: bool) -> list[tuple[list[str], list[str]]] | None: ...


@dataclass(slots=True)
class Compiled:
    where: list[ColumnElement[bool]]
    sort_cols: list[tuple[ColumnElement[Any], bool, str]]  # (expr, desc, kind)
    #: when the search is one positive index criterion on one type: (index table, SELECT rid of the
    #: matches).  Index rows exist only for current, live resources, and their param key names the
    #: type, so that SELECT alone answers an unsorted page (an index-only scan, no table lookups).
    rids_only: tuple[Any, Select[Any]] | None = None


class SearchCompiler:
    """Builds WHERE clauses and sort keys for one backend."""

    def __init__(self, dialect_name: str, base_url: str = "") -> None:
        self.dialect = dialect_name
        self.base_url = base_url.rstrip("/")
        #: set by the terminology capability: the token modifiers that need code sets work then
        self.code_sets: CodeSets | None = None

    def compile(self, req: SearchRequest, r: Any) -> Compiled:
        base = (req.base_url or self.base_url or "").rstrip("/")
        return _Build(self.dialect, base, self.code_sets).compile(req, r)


class _Build:
    """The compilation of one request (knows the dialect and this server's base URL)."""

    def __init__(self, dialect: str, base: str, code_sets: CodeSets | None = None) -> None:
        self.dialect = dialect
        self.base = base
        self.code_sets = code_sets
        self.correlate = False
        self.last_sub: tuple[Any, Select[Any]] | None = None

    # -- entry points ---------------------------------------------------------------------------
    def compile(self, req: SearchRequest, r: Any) -> Compiled:
        where: list[ColumnElement[bool]] = [r.c.deleted == sa.false()]
        types: list[str] | None
        if req.resource_type is not None:
            where.append(r.c.type == req.resource_type)
            types = [req.resource_type]
        elif req.types:
            where.append(r.c.type.in_(req.types))
            types = list(req.types)
        else:
            types = None  # the whole system
        # The most selective criterion drives the query (rid IN (index lookup)); the others are
        # checked per candidate row with correlated EXISTS on the index's (rid, param) key, so a
        # broad criterion (a date range over every Observation) is never materialised in full.
        ranked = sorted(range(len(req.criteria)), key=lambda i: _selectivity(req.criteria[i]))
        drive = ranked[0] if ranked and _selectivity(req.criteria[ranked[0]]) < _BROAD else None
        for i, crit in enumerate(req.criteria):
            self.correlate = i != drive
            self.last_sub = None
            where.append(self.criterion(types, crit, r))
        self.correlate = False
        sort_cols = [self.sort_key(types or [], code, desc, r) for code, desc in req.sort]
        only = self.last_sub if len(req.criteria) == 1 and req.resource_type is not None else None
        return Compiled(where, sort_cols, only)

    def _types(self, types: Sequence[str] | None, code: str) -> list[str]:
        return list(types) if types is not None else list(_types_with(code))

    def criterion(self, types: Sequence[str] | None, c: Criterion, r: Any) -> ColumnElement[bool]:
        if c.kind == "_id":
            if c.modifier == "missing":
                return sa.false() if c.values[0] == "true" else sa.true()
            cond: ColumnElement[bool] = r.c.id.in_([unescape(v) for v in c.values])
            return sa.not_(cond) if c.modifier == "not" else cond
        if c.kind == "_lastUpdated":
            if c.modifier == "missing":
                return sa.false() if c.values[0] == "true" else sa.true()
            return sa.or_(*[self._date_cond(v, r.c.last_updated, r.c.last_updated) for v in c.values])
        if c.kind in ("_text", "_content"):
            return sa.or_(*[self._fulltext(c.kind, unescape(v), r) for v in c.values])
        if c.kind == "near":
            return sa.or_(*[self._near(v, r) for v in c.values])
        if c.kind == "_has":
            return self._has(types, c, r)
        assert c.param is not None
        rtypes = self._types(types, c.code)
        if c.modifier == "missing":
            return self._missing(rtypes, c, r, c.values[0] == "true")
        if c.chain is not None:
            return self._chain(rtypes, c, r)
        if c.kind == "composite":
            return sa.or_(*[self._composite(rtypes, c, v, r) for v in c.values])
        if c.kind == "token" and c.modifier == "of-type":
            t = S.idx_token
            keys = _rows(rtypes, c.code + ":of-type")
            ors = [self._of_type_cond(t, v, c.code) for v in c.values]
        elif c.kind == "reference" and c.modifier == "identifier":
            t = S.idx_token
            keys = _rows(rtypes, c.code + ":identifier")
            ors = [self._token_cond(t, v, None) for v in c.values]
        else:
            t = S.INDEX_TABLES[c.kind]
            keys = _rows(rtypes, c.code)
            extra: list[ColumnElement[bool]] = []
            ors = []
            for v in c.values:
                versioned = self._canonical_version(rtypes, c, v, r)
                if versioned is not None:
                    extra.append(versioned)
                else:
                    ors.append(self._value_cond(c, t, v))
            if extra:
                if ors:
                    extra.append(r.c.rid.in_(sa.select(t.c.rid).where(S.rows_of(t, keys, sa.or_(*ors)))))
                return sa.or_(*extra)
        sub = sa.select(t.c.rid).where(S.rows_of(t, keys, sa.or_(*ors)))
        if c.kind == "token" and c.modifier in ("not", "not-in"):
            return r.c.rid.not_in(sub)
        if self.correlate:
            return sa.exists(sub.where(t.c.rid == r.c.rid))
        self.last_sub = (t, sub)
        return r.c.rid.in_(sub)

    # -- per type ---------------------------------------------------------------------------------
    def _value_cond(self, c: Criterion, t: Any, v: str) -> ColumnElement[bool]:
        kind = c.kind
        if kind == "string":
            return self._string_cond(t, unescape(v), c.modifier)
        if kind == "token":
            return self._token_cond(t, v, c.modifier, f"{c.code}:{c.modifier}" if c.modifier else c.code)
        if kind == "date":
            return self._date_cond(v, t.c.low, t.c.high)
        if kind == "number":
            return self._number_cond(v, t.c.value, t.c.value)
        if kind == "quantity":
            return self._quantity_cond(t, v)
        if kind == "uri":
            return self._uri_cond(t, unescape(v), c.modifier)
        if kind == "reference":
            return self._ref_cond(t, unescape(v), c)
        raise bad_request(f"Search on {kind} parameters is not supported", expression=c.code)

    def _string_cond(self, t: Any, v: str, modifier: str | None) -> ColumnElement[bool]:
        if modifier == "exact":
            return t.c.raw == v
        n = normalize(v)
        if modifier == "contains":
            return t.c.norm.like("%" + _like_escape(n) + "%", escape="\\")
        return sa.and_(t.c.norm >= n, t.c.norm < n + TOP)

    def _token_cond(self, t: Any, v: str, modifier: str | None, name: str | None = None) -> ColumnElement[bool]:
        if modifier in CODE_SET_MODIFIERS:
            return self._code_set_cond(t, v, modifier, name)
        if modifier == "text":
            n = normalize(unescape(v))
            return sa.and_(t.c.text >= n, t.c.text < n + TOP)
        parts = [unescape(p) for p in split_escaped(v, "|")]
        if len(parts) == 1:
            return t.c.code == parts[0]
        if len(parts) != 2:
            raise bad_request(f"A token is [system]|[code], not {unescape(v)!r}")
        system, code = parts
        if system == "":
            return sa.and_(t.c.system.is_(None), t.c.code == code)
        if code == "":
            return t.c.system == system
        return sa.and_(t.c.system == system, t.c.code == code)

    def _code_set_cond(self, t: Any, v: str, modifier: str, name: str | None) -> ColumnElement[bool]:
        """A token in a value set (``:in``, ``:not-in``) or in a code's subtree or path to the root
        (``:below``, ``:above``; the code itself included), per https://hl7.org/fhir/R4/search.html#token."""

        def refuse(message: str, code: str) -> FhirError:
            return FhirError(400, message, code=code, expression=name, msg_id="PHIP-2010")

        if self.code_sets is None:
            raise refuse(f"Modifier :{modifier} needs the terminology service", "not-supported")
        if modifier in ("in", "not-in"):
            url = unescape(v)
            groups = self.code_sets.value_set_codes(url)
            if groups is None:
                raise refuse(f"ValueSet {url!r} is not known to this node (:{modifier})", "not-found")
        else:
            system, code = (unescape(p) for p in split_escaped(v, "|"))
            groups = self.code_sets.hierarchy_codes(system, code, modifier == "below")
            if groups is None:
                raise refuse(f"{code!r} is not a code of a code system known to this node ({system}; "
                             f":{modifier})", "not-found")
        total = sum(len(codes) for _names, codes in groups)
        if total > MAX_SET_CODES:
            raise refuse(f":{modifier} {unescape(v)!r} stands for {total} codes, more than "
                         f"{MAX_SET_CODES}; search a narrower set", "too-costly")
        ors: list[ColumnElement[bool]] = []
        for names, codes in groups:
            if not codes:
                continue
            chunks = [t.c.code.in_(codes[i:i + _CODE_CHUNK]) for i in range(0, len(codes), _CODE_CHUNK)]
            ors.append(sa.and_(t.c.system.in_(names), sa.or_(*chunks)))
        return sa.or_(*ors) if ors else sa.false()

    def _of_type_cond(self, t: Any, v: str, code: str) -> ColumnElement[bool]:
        parts = [unescape(p) for p in split_escaped(v, "|")]
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise bad_request(f":of-type takes system|code|value, not {unescape(v)!r}", expression=code)
        system_cond = t.c.system.is_(None) if parts[0] == "" else t.c.system == parts[0]
        return sa.and_(system_cond, t.c.code == f"{parts[1]}|{parts[2]}")

    def _date_cond(self, v: str, low: Any, high: Any) -> ColumnElement[bool]:
        prefix, text = parse_prefix(unescape(v))
        # an unencoded '+' of a timezone arrives as a space ("…T10:00:00 08:00")
        m = _TZ_SPACE.match(text)
        if m is not None:
            text = f"{m.group(1)}+{m.group(2)}"
        try:
            ql, qh = date_range(text)
        except ValueError as e:
            raise bad_request(f"Invalid date search value {v!r}: {e}") from None
        contained = sa.and_(low >= ql, high <= qh)
        if prefix == "eq":
            return contained
        if prefix == "ne":
            return sa.not_(contained)
        if prefix == "gt":
            return high > qh
        if prefix == "lt":
            return low < ql
        if prefix == "ge":
            return sa.or_(high > qh, contained)
        if prefix == "le":
            return sa.or_(low < ql, contained)
        if prefix == "sa":
            return low > qh
        if prefix == "eb":
            return high < ql
        # ap: overlap with the value widened by 10% of its distance from now (at least a day)
        gap = max(abs(now_us() - ql) // 10, 86_400_000_000)
        return sa.and_(low <= qh + gap, high >= ql - gap)

    def _number_cond(self, v: str, low: Any, high: Any) -> ColumnElement[bool]:
        """``low``/``high``: the indexed value's range (equal for a plain number)."""
        prefix, text = parse_prefix(unescape(v))
        x, lo, hi = _number_bounds(text, v)
        if prefix == "eq":
            return sa.and_(low >= lo, high < hi)
        if prefix == "ne":
            return sa.not_(sa.and_(low >= lo, high < hi))
        if prefix in ("gt", "sa"):
            return high > x
        if prefix in ("lt", "eb"):
            return low < x
        if prefix == "ge":
            return high >= x
        if prefix == "le":
            return low <= x
        span = abs(x) * 0.1  # ap: ±10%
        return sa.and_(low <= x + span, high >= x - span)

    def _quantity_cond(self, t: Any, v: str) -> ColumnElement[bool]:
        parts = [unescape(p) for p in split_escaped(v, "|")]
        if len(parts) not in (1, 3):
            raise bad_request(f"A quantity is [prefix]number[|system|code], not {unescape(v)!r}")
        cond = self._number_cond(parts[0], t.c.low, t.c.high)
        if len(parts) == 3:
            system, code = parts[1], parts[2]
            if system and code:
                cond = sa.and_(cond, t.c.system == system, t.c.code == code)
            elif system:
                cond = sa.and_(cond, t.c.system == system)
            elif code:
                cond = sa.and_(cond, sa.or_(t.c.code == code, t.c.unit == code))
        return cond

    def _uri_cond(self, t: Any, v: str, modifier: str | None) -> ColumnElement[bool]:
        if modifier == "below":
            return sa.and_(t.c.value >= v, t.c.value < v + TOP)
        if modifier == "above":
            prefixes = {v}
            cut = v
            while "/" in cut.rstrip("/"):
                cut = cut.rstrip("/").rsplit("/", 1)[0]
                if cut.endswith(":/") or cut.endswith(":"):
                    break
                prefixes.add(cut)
                prefixes.add(cut + "/")
            return t.c.value.in_(sorted(prefixes))
        return t.c.value == v

    def _canonical_version(
        self, types: Sequence[str], c: Criterion, v: str, r: Any
    ) -> ColumnElement[bool] | None:
        """``url=[url]|[version]`` on a canonical resource: the url and its ``version``."""
        if c.kind != "uri" or c.modifier is not None or c.code != "url":
            return None
        parts = split_escaped(v, "|")
        if len(parts) != 2:
            return None
        vtypes = [rt for rt in types if "version" in defs.search_params_for(rt)]
        if not vtypes:
            return None
        u, t = S.idx_uri, S.idx_token
        url, version = unescape(parts[0]), unescape(parts[1])
        by_url = sa.select(u.c.rid).where(S.rows_of(u, _rows(vtypes, c.code), u.c.value == url))
        by_version = sa.select(t.c.rid).where(S.rows_of(t, _rows(vtypes, "version"), t.c.code == version))
        return sa.and_(r.c.rid.in_(by_url), r.c.rid.in_(by_version))

    # -- references -----------------------------------------------------------------------------
    def _local(self, x: Any) -> ColumnElement[bool]:
        return local_refs(x, self.base)

    def _ref_target(self, v: str) -> tuple[str | None, str | None, str | None]:
        """(type, id, url) that a reference search value names."""
        if self.base and v.startswith(self.base + "/"):
            v = v[len(self.base) + 1 :]
        if "://" in v or v.startswith("urn:"):
            return None, None, v
        if "/_history/" in v:
            v = v.split("/_history/", 1)[0]
        if "/" in v:
            rt, _, rid = v.partition("/")
            return rt, rid, None
        return None, v, None

    def _ref_cond(self, t: Any, v: str, c: Criterion) -> ColumnElement[bool]:
        rtype, rid, url = self._ref_target(v)
        if url is not None:
            return t.c.url == url
        if rtype is not None and rtype not in defs.resource_types():
            raise bad_request(f"Unknown resource type {rtype!r} in reference {v!r}", expression=c.code)
        if c.chain_type is not None:  # the :Type modifier
            if rtype is not None and rtype != c.chain_type:
                return sa.false()
            rtype = c.chain_type
        cond = sa.and_(t.c.target_id == rid, self._local(t))
        if rtype is not None:
            cond = sa.and_(cond, t.c.target_type == rtype)
        elif c.chain_type is None and rid is not None:
            cond = sa.or_(cond, t.c.url == rid)  # a relative canonical such as "library-x"
        return cond

    def _chain(self, types: Sequence[str], c: Criterion, r: Any) -> ColumnElement[bool]:
        assert c.chain is not None and c.chain_type is not None
        x = S.idx_ref.alias("x")
        t = S.resources.alias("t")
        inner = self.criterion([c.chain_type], c.chain, t)
        sub = (
            sa.select(x.c.rid)
            .select_from(x.join(t, sa.and_(t.c.type == x.c.target_type, t.c.id == x.c.target_id)))
            .where(
                S.rows_of(x, _rows(types, c.code), x.c.target_type == c.chain_type),
                self._local(x),
                t.c.deleted == sa.false(),
                inner,
            )
        )
        return r.c.rid.in_(sub)

    def _has(self, types: Sequence[str] | None, c: Criterion, r: Any) -> ColumnElement[bool]:
        """``_has:Type:ref:param=v``: the targets of ``ref`` from ``Type`` resources matching ``param=v``."""
        assert c.chain is not None and c.has_type is not None and c.has_param is not None
        x = S.idx_ref.alias("hx")
        h = S.resources.alias("h")
        t = S.resources.alias("ht")
        inner = self.criterion([c.has_type], c.chain, h)
        conds: list[ColumnElement[bool]] = [
            S.rows_of(x, S.param_rows(c.has_type, c.has_param.code)),
            self._local(x),
            h.c.type == c.has_type,
            h.c.deleted == sa.false(),
            inner,
        ]
        if types is not None:
            conds.append(x.c.target_type.in_(list(types)))
        sub = (
            sa.select(t.c.rid)
            .select_from(
                x.join(h, h.c.rid == x.c.rid).join(t, sa.and_(t.c.type == x.c.target_type, t.c.id == x.c.target_id))
            )
            .where(*conds)
        )
        return r.c.rid.in_(sub)

    # -- composite, missing, text -----------------------------------------------------------------
    def _composite(self, types: Sequence[str], c: Criterion, v: str, r: Any) -> ColumnElement[bool]:
        assert c.param is not None
        parts = split_escaped(v, "$")
        comps = _component_types(types, c)
        if len(parts) != len(comps):
            raise bad_request(
                f"Composite parameter {c.code!r} takes {len(comps)} values joined by '$', not {unescape(v)!r}",
                expression=c.code,
            )
        if any(ctype not in S.INDEX_TABLES for ctype in comps):
            raise bad_request(f"Composite parameter {c.code!r} has an unsupported component")
        # the rows of one value share a grp within one parameter's rows: an alias whose rows are
        # other composites' (combo-code-value-quantity) is matched in each of them apart
        families: dict[str, list[str]] = {}  # a parameter whose rows are searched -> in these types
        for rt in types:
            for fam in _union_bases(rt, c.code) or (c.code,):
                families.setdefault(fam, []).append(rt)
        found: list[ColumnElement[bool]] = []
        for fam, fam_types in sorted(families.items()):
            tables: list[Any] = []
            conds: list[ColumnElement[bool]] = []
            for j, ctype in enumerate(comps):
                t = S.INDEX_TABLES[ctype].alias(f"c{j}")
                tables.append(t)
                sub = Criterion(f"{c.code}${j}", ctype, [parts[j]], None, c.param)
                conds.append(S.rows_of(t, [(S.param_key(rt, f"{fam}${j}"), None) for rt in fam_types]))
                conds.append(self._value_cond(sub, t, parts[j]))
            first = tables[0]
            for t in tables[1:]:
                conds.append(t.c.rid == first.c.rid)
                conds.append(t.c.grp == first.c.grp)
            found.append(r.c.rid.in_(sa.select(first.c.rid).select_from(*tables).where(*conds)))
        return found[0] if len(found) == 1 else sa.or_(*found)

    def _missing(self, types: Sequence[str], c: Criterion, r: Any, missing: bool) -> ColumnElement[bool]:
        if c.kind == "composite":  # composite values are indexed under their components, code$0…
            table = S.INDEX_TABLES[_component_types(types, c)[0]]
            keys = _rows(types, c.code + "$0")
        else:
            table = S.INDEX_TABLES[c.kind]
            keys = _rows(types, c.code)
        present = r.c.rid.in_(sa.select(table.c.rid).where(S.rows_of(table, keys)))
        if c.kind == "reference":  # a Reference with only an identifier is there too
            t = S.idx_token
            by_ident = sa.select(t.c.rid).where(S.rows_of(t, _rows(types, c.code + ":identifier")))
            present = sa.or_(present, r.c.rid.in_(by_ident))
        return sa.not_(present) if missing else present

    def _near(self, v: str, r: Any) -> ColumnElement[bool]:
        """``near=lat|long[|distance[|units]]`` (https://hl7.org/fhir/R4/location.html#positional):
        Locations whose ``position`` lies within ``distance`` (default 1 km) of the point.

        Compares on an equirectangular projection around the point (exact enough for the
        distances a region works with), so no trigonometry is needed in SQL.
        """
        parts = split_escaped(v, "|")
        try:
            lat, lon = float(parts[0]), float(parts[1])
            dist = float(parts[2]) if len(parts) > 2 and parts[2] else 1.0
        except (ValueError, IndexError):
            raise bad_request(f"near takes latitude|longitude|distance|units, not {v!r}", expression="near") from None
        units = parts[3] if len(parts) > 3 and parts[3] else "km"
        per_km = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "mi": 1.609344}.get(units)
        if per_km is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or dist < 0:
            raise bad_request(f"near: bad point, distance or unit in {v!r} (units: km, m, [mi_i])", expression="near")
        radius_deg = dist * per_km / 111.195  # km per degree of latitude on a 6371 km sphere
        k = math.cos(math.radians(lat))
        if self.dialect == "postgresql":
            plat = sa.cast(sa.func.jsonb_extract_path_text(r.c.content, "position", "latitude"), sa.Float)
            plon = sa.cast(sa.func.jsonb_extract_path_text(r.c.content, "position", "longitude"), sa.Float)
        else:
            plat = sa.func.json_extract(r.c.content, "$.position.latitude")
            plon = sa.func.json_extract(r.c.content, "$.position.longitude")
        dlat = plat - lat
        dlon = (plon - lon) * k
        box = sa.and_(plat.between(lat - radius_deg, lat + radius_deg),
                      plon.between(lon - radius_deg / max(k, 1e-6), lon + radius_deg / max(k, 1e-6)))
        return sa.and_(r.c.type == "Location", box, dlat * dlat + dlon * dlon <= radius_deg * radius_deg)

    def _fulltext(self, kind: str, v: str, r: Any) -> ColumnElement[bool]:
        """``_text``: the narrative; ``_content``: any string value of the resource (not its keys)."""
        pattern = "%" + _like_escape(v.lower()) + "%"
        if self.dialect == "postgresql":
            if kind == "_text":
                div = sa.func.jsonb_extract_path_text(r.c.content, "text", "div")
                return div.ilike(pattern, escape="\\")
            path: Any = sa.literal_column("""'strict $.** ? (@.type() == "string")'::jsonpath""")
            vals = sa.func.jsonb_path_query(r.c.content, path).table_valued("value").render_derived(name="cv")
            text = vals.c.value.op("#>>", return_type=sa.Text)(sa.literal_column("'{}'"))
            return sa.exists(sa.select(sa.literal(1)).select_from(vals).where(text.ilike(pattern, escape="\\")))
        if kind == "_text":
            return sa.func.lower(sa.func.json_extract(r.c.content, "$.text.div")).like(pattern, escape="\\")
        tree = sa.func.json_tree(r.c.content).table_valued("type", "value").alias("cv")
        return sa.exists(
            sa.select(sa.literal(1)).select_from(tree).where(
                tree.c.type == "text", sa.func.lower(tree.c.value).like(pattern, escape="\\")
            )
        )

    # -- sorting --------------------------------------------------------------------------------
    def sort_key(self, types: Sequence[str], code: str, desc: bool, r: Any) -> tuple[Any, bool, str]:
        if code == "_id":
            col = r.c.id.collate("C") if self.dialect == "postgresql" else r.c.id
            return col, desc, "text"
        if code == "_lastUpdated":
            return r.c.last_updated, desc, "int"
        p = defs.search_params_for(types[0]).get(code) if types else None
        if p is None or p.type not in S.INDEX_TABLES:
            raise bad_request(f"Cannot sort on {code!r}", expression="_sort")
        t = S.INDEX_TABLES[p.type].alias("s")
        col, kind = _SORT_COLUMN[p.type](t, desc)
        # Wrapped so the planner cannot use a (param, value) index for MIN/MAX, which would walk
        # every row of the parameter for each candidate; (rid, param) finds this row's few values.
        col = col + 0 if kind in ("int", "float") else sa.func.coalesce(col, "")
        agg: Any = sa.func.max(col) if desc else sa.func.min(col)
        if p.type == "quantity":
            # an open Range end is ±infinity in the index: keep the key finite (a cursor is JSON)
            # and inside the missing-value sentinels
            agg = sa.case((agg > FINITE, FINITE), (agg < -FINITE, -FINITE), else_=agg)
        sub = sa.select(agg).where(t.c.rid == r.c.rid, S.rows_of(t, _rows(types, code)))
        sentinel: Any
        if kind == "text":
            sentinel = "" if desc else TOP
        elif kind == "int":
            sentinel = MIN if desc else MAX
        else:
            sentinel = -BIG if desc else BIG
        return sa.func.coalesce(sub.scalar_subquery(), sentinel), desc, kind


# per parameter type: the index column a sort compares, and its kind (for the sentinel)
_SORT_COLUMN: dict[str, Any] = {
    "string": lambda t, desc: (t.c.norm, "text"),
    "token": lambda t, desc: (t.c.code, "text"),
    "uri": lambda t, desc: (t.c.value, "text"),
    "reference": lambda t, desc: (t.c.target_id, "text"),
    "number": lambda t, desc: (t.c.value, "float"),
    "quantity": lambda t, desc: (t.c.high if desc else t.c.low, "float"),
    "date": lambda t, desc: (t.c.high if desc else t.c.low, "int"),
}


def local_refs(x: Any, base: str | None) -> ColumnElement[bool]:
    """Rows of ``idx_ref`` alias ``x`` that point at this server: relative, or absolute under ``base``.

    Written with functions on ``url`` on purpose: a plain ``url IS NULL`` lets the planner pick
    the (param, url) index, under which every local reference of the parameter lies.
    """
    url = sa.func.coalesce(x.c.url, "")
    if not base:
        return url == ""
    prefix = base.rstrip("/") + "/"
    return sa.or_(url == "", sa.func.substr(url, 1, len(prefix)) == prefix)


#: criteria at or past this rank are never used to drive a query
_BROAD = 6


def _selectivity(c: Criterion) -> int:
    """A rank of how few rows a criterion is likely to match (lower: fewer), without statistics."""
    if c.kind == "_id" and c.modifier is None:
        return 0
    if c.modifier in ("missing", "not", "not-in", "text", "contains") or c.chain is not None:
        return 9
    return {"reference": 1, "token": 2, "uri": 3, "string": 4, "composite": 5, "quantity": 6,
            "number": 6, "date": 7, "_lastUpdated": 7}.get(c.kind, 9)


def _number_bounds(text: str, original: str) -> tuple[float, float, float]:
    """``(value, low, high)``: a number literal and the half-open range its precision implies.

    ``5.4`` → ``[5.35, 5.45)``, ``100`` → ``[99.5, 100.5)``, ``1.5e2`` → ``[145, 155)``
    (the precision is that of the last digit written).  Computed in decimal: float
    arithmetic would make ``5.4 - 0.05`` slightly more than ``5.35``.
    """
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        raise bad_request(f"Invalid number search value {original!r}")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise bad_request(f"Invalid number search value {original!r}") from None
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    half = Decimal(5).scaleb(exp - 1)
    x, lo, hi = float(d), float(d - half), float(d + half)
    if not (math.isfinite(x) and math.isfinite(lo) and math.isfinite(hi)):
        raise bad_request(f"Invalid number search value {original!r}")
    if hi <= x:  # the half step is below float resolution (1e18, 66.89999999999999): keep x inside [lo, hi)
        hi = math.nextafter(x, math.inf)
    return x, lo, hi


def _union_bases(rt: str, code: str) -> tuple[str, ...]:
    """The parameters whose rows hold a union alias's (see :class:`phip.fhir.search.extract.Alias`)."""
    al = aliases(rt).get(code)
    return al.bases if al is not None and al.target is None else ()


def _component_types(types: Sequence[str], c: Criterion) -> list[str]:
    """The index table type of each component of a composite, as the indexer wrote them."""
    assert c.param is not None
    for rt in types:
        comps = composite_component_types(rt, c.code)
        if comps:
            return [t for _name, t in comps]
    by_url = defs.search_params_by_url()
    out: list[str] = []
    for url, _expr in c.param.component:
        cp = by_url.get(url)
        out.append(cp.type if cp is not None else "token")
    return out


# -- keyset cursors ------------------------------------------------------------------------------
def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(text: str) -> list[Any]:
    try:
        pad = "=" * (-len(text) % 4)
        out = orjson.loads(base64.urlsafe_b64decode(text.encode("ascii") + pad.encode()))
    except Exception:
        raise bad_request("The paging cursor is not valid", expression="_cursor") from None
    if not isinstance(out, list) or not out or any(not isinstance(v, str | int | float) for v in out):
        raise bad_request("The paging cursor is not valid", expression="_cursor")
    return out


def _python_type(col: Any) -> type | None:
    try:
        pt = col.type.python_type
    except (NotImplementedError, AttributeError):
        return None
    return pt if isinstance(pt, type) else None


def _checked(col: Any, v: Any) -> Any:
    """A cursor value fit to compare with ``col`` (a 400, never a database error, otherwise)."""
    pt = _python_type(col)
    if isinstance(v, bool) or (pt is int and not isinstance(v, int)) or (
        pt is float and not isinstance(v, int | float)
    ) or (pt is str and not isinstance(v, str)):
        raise bad_request("The paging cursor does not fit this search", expression="_cursor")
    return v


def after_cursor(cols: list[tuple[Any, bool]], values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``cols`` ((expr, descending) pairs)."""
    if len(values) != len(cols):
        raise bad_request("The paging cursor does not fit this search", expression="_cursor")
    values = [_checked(col, v) for (col, _d), v in zip(cols, values, strict=True)]
    ors: list[ColumnElement[bool]] = []
    for i, (col, desc) in enumerate(cols):
        eqs = [c == values[k] for k, (c, _d) in enumerate(cols[:i])]
        step = col < values[i] if desc else col > values[i]
        ors.append(sa.and_(*eqs, step))
    return sa.or_(*ors)


def paged(
    base: Select[Any], compiled: Compiled, r: Any, count: int, cursor: str | None
) -> tuple[Select[Any], list[tuple[Any, bool]]]:
    """Add sort columns, the keyset condition and LIMIT count+1 to ``base``."""
    order: list[tuple[Any, bool]] = [(expr, desc) for expr, desc, _k in compiled.sort_cols]
    order.append((r.c.rid, False))
    if len(order) == 1:
        q = base
        if cursor is not None:
            vals = decode_cursor(cursor)
            q = q.where(after_cursor(order, vals))
        return q.order_by(r.c.rid).limit(count + 1), order
    labelled = [expr.label(f"k{i}") for i, (expr, _d) in enumerate(order[:-1])]
    inner = base.add_columns(*labelled).subquery("q")
    cols = [(inner.c[f"k{i}"], d) for i, (_e, d) in enumerate(order[:-1])] + [(inner.c.rid, False)]
    q2 = sa.select(inner)
    if cursor is not None:
        q2 = q2.where(after_cursor(cols, decode_cursor(cursor)))
    q2 = q2.order_by(*[c.desc() if d else c.asc() for c, d in cols]).limit(count + 1)
    return q2, cols
