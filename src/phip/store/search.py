"""Compile a parsed FHIR search (:class:`phip.fhir.search.query.SearchRequest`) into SQL.

Each criterion becomes ``r.rid IN (SELECT rid FROM idx_<type> WHERE …)`` against the
index tables of ``phip.store.schema`` — a form both SQLite and PostgreSQL drive from
the index, never a scan of ``resources``.  Values of one criterion are ORed, criteria
ANDed.  Semantics follow https://hl7.org/fhir/R4/search.html: ranges for dates
(precision of the literal), implicit precision for numbers, ``system|code`` tokens,
starts-with strings.  Sorting uses the smallest (ascending) or largest (descending)
indexed value of a parameter; paging is keyset on the sort keys and ``rid``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement, Select

from phip.fhir import definitions as defs
from phip.fhir.datetimes import MAX, MIN, date_range, now_us
from phip.fhir.errors import bad_request
from phip.fhir.search.query import Criterion, SearchRequest, parse_prefix, split_escaped
from phip.fhir.search.text import normalize
from phip.store import schema as S

TOP = "\U0010ffff"
BIG = 1e300


def _param(rt: str, code: str) -> int:
    return S.param_key(rt, code)


def _like_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(slots=True)
class Compiled:
    where: list[ColumnElement[bool]]
    sort_cols: list[tuple[ColumnElement[Any], bool, str]]  # (expr, desc, kind)


class SearchCompiler:
    """Builds WHERE clauses and sort keys for one backend."""

    def __init__(self, dialect_name: str, base_url: str = "") -> None:
        self.dialect = dialect_name
        self.base_url = base_url.rstrip("/")

    # -- entry points ---------------------------------------------------------------------------
    def compile(self, req: SearchRequest, r: Any) -> Compiled:
        where: list[ColumnElement[bool]] = [r.c.deleted == sa.false()]
        if req.resource_type is not None:
            where.append(r.c.type == req.resource_type)
        elif req.types:
            where.append(r.c.type.in_(req.types))
        types = [req.resource_type] if req.resource_type else (req.types or [])
        for crit in req.criteria:
            where.append(self.criterion(types, crit, r))
        sort_cols = [self.sort_key(types, code, desc, r) for code, desc in req.sort]
        return Compiled(where, sort_cols)

    def criterion(self, types: Sequence[str], c: Criterion, r: Any) -> ColumnElement[bool]:
        if c.kind == "_id":
            cond: ColumnElement[bool] = r.c.id.in_(c.values)
            return sa.not_(cond) if c.modifier == "not" else cond
        if c.kind == "_lastUpdated":
            return sa.or_(*[self._date_cond(v, r.c.last_updated, r.c.last_updated) for v in c.values])
        if c.kind in ("_text", "_content"):
            return sa.or_(*[self._fulltext(c.kind, v, r) for v in c.values])
        if c.kind == "_has":
            return self._has(c, r)
        assert c.param is not None
        keys = [_param(t, c.code) for t in types]
        if c.modifier == "missing":
            return self._missing(types, c, r, c.values[0] == "true")
        if c.chain is not None:
            return self._chain(c, keys, r)
        if c.kind == "composite":
            return sa.or_(*[self._composite(types, c, v, r) for v in c.values])
        table = S.INDEX_TABLES[c.kind]
        if c.kind == "token" and c.modifier == "of-type":
            keys = [_param(t, c.code + ":of-type") for t in types]
        if c.kind == "reference" and c.modifier == "identifier":
            table = S.idx_token
            keys = [_param(t, c.code + ":identifier") for t in types]
            ors = [self._token_cond(table, v, None) for v in c.values]
        else:
            ors = [self._value_cond(c, table, v) for v in c.values]
        sub = sa.select(table.c.rid).where(_key(table, keys), sa.or_(*ors))
        if c.kind == "token" and c.modifier == "not":
            return r.c.rid.not_in(sub)
        return r.c.rid.in_(sub)

    # -- per type ---------------------------------------------------------------------------------
    def _value_cond(self, c: Criterion, t: sa.Table, v: str) -> ColumnElement[bool]:
        kind = c.kind
        if kind == "string":
            return self._string_cond(t, v, c.modifier)
        if kind == "token":
            return self._token_cond(t, v, c.modifier)
        if kind == "date":
            return self._date_cond(v, t.c.low, t.c.high)
        if kind == "number":
            return self._number_cond(v, t.c.value, t.c.value)
        if kind == "quantity":
            return self._quantity_cond(t, v)
        if kind == "uri":
            return self._uri_cond(t, v, c.modifier)
        if kind == "reference":
            return self._ref_cond(t, v, c)
        raise bad_request(f"Search on {kind} parameters is not supported", expression=c.code)

    def _string_cond(self, t: sa.Table, v: str, modifier: str | None) -> ColumnElement[bool]:
        if modifier == "exact":
            return t.c.raw == v
        n = normalize(v)
        if modifier == "contains":
            return t.c.norm.like("%" + _like_escape(n) + "%", escape="\\")
        return sa.and_(t.c.norm >= n, t.c.norm < n + TOP)

    def _token_cond(self, t: sa.Table, v: str, modifier: str | None) -> ColumnElement[bool]:
        if modifier == "text":
            n = normalize(v)
            return sa.and_(t.c.text >= n, t.c.text < n + TOP)
        if modifier == "of-type":
            parts = split_escaped(v, "|")
            if len(parts) != 3:
                raise bad_request(f":of-type takes system|code|value, not {v!r}", expression="identifier")
            return sa.and_(t.c.system == parts[0], t.c.code == f"{parts[1]}|{parts[2]}")
        parts = split_escaped(v, "|")
        if len(parts) == 1:
            return t.c.code == parts[0]
        if len(parts) != 2:
            raise bad_request(f"A token is [system]|[code], not {v!r}")
        system, code = parts
        if system == "":
            return sa.and_(t.c.system.is_(None), t.c.code == code)
        if code == "":
            return t.c.system == system
        return sa.and_(t.c.system == system, t.c.code == code)

    def _date_cond(self, v: str, low: Any, high: Any) -> ColumnElement[bool]:
        prefix, text = parse_prefix(v)
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
        prefix, text = parse_prefix(v)
        try:
            x = float(text)
        except ValueError:
            raise bad_request(f"Invalid number search value {v!r}") from None
        if not math.isfinite(x):
            raise bad_request(f"Invalid number search value {v!r}")
        if "e" in text.lower():
            d = 0.0
        else:
            decimals = len(text.split(".", 1)[1]) if "." in text else 0
            d = 0.5 * 10 ** (-decimals)
        if prefix == "eq":
            return sa.and_(low >= x - d, high < x + d)
        if prefix == "ne":
            return sa.not_(sa.and_(low >= x - d, high < x + d))
        if prefix in ("gt", "sa"):
            return high > x
        if prefix in ("lt", "eb"):
            return low < x
        if prefix == "ge":
            return high >= x
        if prefix == "le":
            return low <= x
        span = abs(x) * 0.1
        return sa.and_(low <= x + span, high >= x - span)

    def _quantity_cond(self, t: sa.Table, v: str) -> ColumnElement[bool]:
        parts = split_escaped(v, "|")
        num = parts[0]
        cond = self._number_cond(num, t.c.low, t.c.high)
        if len(parts) == 3:
            system, code = parts[1], parts[2]
            if system:
                cond = sa.and_(cond, t.c.system == system, t.c.code == code)
            elif code:
                cond = sa.and_(cond, sa.or_(t.c.code == code, t.c.unit == code))
        elif len(parts) != 1:
            raise bad_request(f"A quantity is [prefix]number[|system|code], not {v!r}")
        return cond

    def _uri_cond(self, t: sa.Table, v: str, modifier: str | None) -> ColumnElement[bool]:
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

    def _ref_target(self, v: str) -> tuple[str | None, str | None, str | None]:
        """(type, id, url) that a reference search value names."""
        if self.base_url and v.startswith(self.base_url + "/"):
            v = v[len(self.base_url) + 1 :]
        if "/_history/" in v and not v.startswith(("http:", "https:")):
            v = v.split("/_history/", 1)[0]
        if "://" in v or v.startswith("urn:"):
            return None, None, v
        if "/" in v:
            rt, _, rid = v.partition("/")
            return rt, rid, None
        return None, v, None

    def _ref_cond(self, t: sa.Table, v: str, c: Criterion) -> ColumnElement[bool]:
        rtype, rid, url = self._ref_target(v)
        if url is not None:
            return t.c.url == url
        cond = t.c.target_id == rid
        if rtype is None:
            rtype = c.chain_type
        if rtype is not None:
            if rtype not in defs.resource_types():
                raise bad_request(f"Unknown resource type {rtype!r} in reference {v!r}", expression=c.code)
            cond = sa.and_(cond, t.c.target_type == rtype)
        return cond

    def _composite(self, types: Sequence[str], c: Criterion, v: str, r: Any) -> ColumnElement[bool]:
        assert c.param is not None
        parts = split_escaped(v, "$")
        comps = c.param.component
        if len(parts) != len(comps):
            raise bad_request(
                f"Composite parameter {c.code!r} takes {len(comps)} values joined by '$', not {v!r}",
                expression=c.code,
            )
        by_url = defs.search_params_by_url()
        tables: list[Any] = []
        conds: list[ColumnElement[bool]] = []
        for j, (url, _expr) in enumerate(comps):
            cp = by_url.get(url)
            if cp is None or cp.type not in S.INDEX_TABLES:
                raise bad_request(f"Composite parameter {c.code!r} has an unsupported component")
            t = S.INDEX_TABLES[cp.type].alias(f"c{j}")
            tables.append(t)
            sub = Criterion(cp.code, cp.type, [parts[j]], None, cp)
            conds.append(_key(t, [_param(rt, f"{c.code}${j}") for rt in types]))
            conds.append(self._value_cond(sub, t, parts[j]))
        first = tables[0]
        for t in tables[1:]:
            conds.append(t.c.rid == first.c.rid)
            conds.append(t.c.grp == first.c.grp)
        return r.c.rid.in_(sa.select(first.c.rid).select_from(*tables).where(*conds))

    def _missing(self, types: Sequence[str], c: Criterion, r: Any, missing: bool) -> ColumnElement[bool]:
        if c.kind == "composite":  # composite values are indexed under their components, code$0…
            table = S.INDEX_TABLES[_component_type(c, 0)]
            keys = [_param(rt, c.code + "$0") for rt in types]
        else:
            table = S.INDEX_TABLES[c.kind]
            keys = [_param(rt, c.code) for rt in types]
        sub = sa.select(table.c.rid).where(_key(table, keys))
        return r.c.rid.not_in(sub) if missing else r.c.rid.in_(sub)

    def _chain(self, c: Criterion, keys: list[int], r: Any) -> ColumnElement[bool]:
        assert c.chain is not None and c.chain_type is not None
        x = S.idx_ref.alias("x")
        t = S.resources.alias("t")
        inner = self.criterion([c.chain_type], c.chain, t)
        sub = (
            sa.select(x.c.rid)
            .select_from(x.join(t, sa.and_(t.c.type == x.c.target_type, t.c.id == x.c.target_id)))
            .where(_key(x, keys), x.c.target_type == c.chain_type, t.c.deleted == sa.false(), inner)
        )
        return r.c.rid.in_(sub)

    def _has(self, c: Criterion, r: Any) -> ColumnElement[bool]:
        assert c.chain is not None and c.has_type is not None and c.has_param is not None
        x = S.idx_ref.alias("hx")
        h = S.resources.alias("h")
        inner = self.criterion([c.has_type], c.chain, h)
        sub = (
            sa.select(x.c.target_id)
            .select_from(x.join(h, h.c.rid == x.c.rid))
            .where(
                x.c.param == _param(c.has_type, c.has_param.code),
                x.c.target_type == r.c.type,
                h.c.type == c.has_type,
                h.c.deleted == sa.false(),
                inner,
            )
        )
        return r.c.id.in_(sub)

    def _fulltext(self, kind: str, v: str, r: Any) -> ColumnElement[bool]:
        pattern = "%" + _like_escape(v.lower()) + "%"
        if self.dialect == "postgresql":
            col: Any = r.c.content["text"]["div"].astext if kind == "_text" else sa.cast(r.c.content, sa.Text)
            return col.ilike(pattern, escape="\\")
        if kind == "_text":
            col = sa.func.json_extract(r.c.content, "$.text.div")
        else:
            col = r.c.content
        return sa.func.lower(col).like(pattern, escape="\\")

    # -- sorting --------------------------------------------------------------------------------
    def sort_key(self, types: Sequence[str], code: str, desc: bool, r: Any) -> tuple[Any, bool, str]:
        if code == "_id":
            return r.c.id, desc, "text"
        if code == "_lastUpdated":
            return r.c.last_updated, desc, "int"
        p = defs.search_params_for(types[0]).get(code) if types else None
        if p is None or p.type not in S.INDEX_TABLES:
            raise bad_request(f"Cannot sort on {code!r}", expression="_sort")
        t = S.INDEX_TABLES[p.type].alias("s")
        col, kind = {
            "string": (t.c.norm, "text"),
            "token": (t.c.code, "text"),
            "uri": (t.c.value, "text"),
            "reference": (t.c.target_id, "text"),
            "number": (t.c.value, "float"),
            "quantity": (t.c.high if desc else t.c.low, "float"),
            "date": (t.c.high if desc else t.c.low, "int"),
        }[p.type]
        agg = sa.func.max(col) if desc else sa.func.min(col)
        sub = sa.select(agg).where(t.c.rid == r.c.rid, _key(t, [_param(rt, code) for rt in types]))
        sentinel: Any
        if kind == "text":
            sentinel = "" if desc else TOP
        elif kind == "int":
            sentinel = MIN if desc else MAX
        else:
            sentinel = -BIG if desc else BIG
        return sa.func.coalesce(sub.scalar_subquery(), sentinel), desc, kind


def _key(t: Any, keys: list[int]) -> ColumnElement[bool]:
    uniq = sorted(set(keys))
    return t.c.param == uniq[0] if len(uniq) == 1 else t.c.param.in_(uniq)


def _component_type(c: Criterion, j: int) -> str:
    assert c.param is not None
    cp = defs.search_params_by_url().get(c.param.component[j][0])
    return cp.type if cp is not None else "token"


# -- keyset cursors ------------------------------------------------------------------------------
def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(text: str) -> list[Any]:
    try:
        pad = "=" * (-len(text) % 4)
        out = orjson.loads(base64.urlsafe_b64decode(text + pad))
    except Exception:
        raise bad_request("The paging cursor is not valid", expression="_cursor") from None
    if not isinstance(out, list) or not out:
        raise bad_request("The paging cursor is not valid", expression="_cursor")
    return out


def after_cursor(cols: list[tuple[Any, bool]], values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``cols`` ((expr, descending) pairs)."""
    if len(values) != len(cols):
        raise bad_request("The paging cursor does not fit this search", expression="_cursor")
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
