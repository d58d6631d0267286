"""The relational schema of the FHIR store (SQLAlchemy Core).

- ``resources``: the current version of every resource (one row per type/id, soft-deleted
  rows kept with ``deleted`` set) — the row every read, search and join starts from.
- ``resource_versions``: every version ever written (history, vread).
- ``changes``: the node's change feed; ``seq`` is assigned in commit order.
- ``idx_*``: search index tables, one per search-parameter type.  Rows carry
  ``param``, an integer key of ``"<ResourceType>.<code>"`` (see :func:`param_key`), and
  ``grp``, which ties the components of one composite value together (0 otherwise).

Timestamps are integers: microseconds since the Unix epoch, UTC.  The same schema
serves SQLite (the embedded default) and PostgreSQL (``content`` is JSONB there);
the Alembic migrations in ``phip/store/migrations`` create it.
"""

from __future__ import annotations

import zlib
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    false,
    or_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
RowId = BigInteger().with_variant(Integer(), "sqlite")
RawContent = Text().with_variant(JSONB(), "postgresql")


class _Content(TypeDecorator[Any]):
    """Resource JSON (JSONB on PostgreSQL).  When the node encrypts at rest, the privacy capability
    puts its codec on the engine's dialect (``phip_codec``) and every SQLAlchemy select of a
    ``content`` column comes back opened, whoever runs it; ``type_coerce(col, RawContent)``
    reads what is stored."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else Text())

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        codec = getattr(dialect, "phip_codec", None)
        if codec is None or value is None:
            return value
        return codec.open_value(value)


Content = _Content()
# Index text compared by code point on both backends (prefix ranges must be byte-wise).
IdxText = Text().with_variant(Text(collation="C"), "postgresql")

resources = Table(
    "resources",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content", Content, nullable=True),
    UniqueConstraint("type", "id", name="uq_resources_type_id"),
)
Index("ix_resources_type_rid", resources.c.type, resources.c.rid)
Index("ix_resources_type_lu", resources.c.type, resources.c.last_updated)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=False),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("method", String(8), nullable=False),  # POST | PUT | PATCH | DELETE
    Column("content", Content, nullable=True),
)
Index("ix_versions_lu", resource_versions.c.last_updated)
Index("ix_versions_type_lu", resource_versions.c.type, resource_versions.c.last_updated)

changes = Table(
    "changes",
    metadata,
    Column("seq", RowId, primary_key=True, autoincrement=False),
    Column("rid", RowId, nullable=False),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("ts", BigInteger, nullable=False),
)

# Bulk-data export jobs and import checkpoints.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | done | failed | cancelled
    Column("request", Text, nullable=False),
    Column("owner", String(200), nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Column("progress", Text, nullable=True),
    Column("result", Text, nullable=True),
)


def _idx(name: str, *cols: Column[object]) -> Table:
    t = Table(
        name,
        metadata,
        Column("rid", RowId, nullable=False),
        Column("param", Integer, nullable=False),
        Column("grp", SmallInteger, nullable=False),
        *cols,
    )
    Index(f"ix_{name}_rid", t.c.rid, t.c.param)  # correlated checks: this row's values of one param
    return t


idx_string = _idx("idx_string", Column("norm", IdxText, nullable=False), Column("raw", Text, nullable=False))
Index("ix_idx_string_val", idx_string.c.param, idx_string.c.norm, idx_string.c.rid)  # covering

idx_token = _idx(
    "idx_token",
    Column("system", IdxText, nullable=True),
    Column("code", IdxText, nullable=True),
    Column("text", IdxText, nullable=True),
)
Index("ix_idx_token_val", idx_token.c.param, idx_token.c.code, idx_token.c.system, idx_token.c.rid)

idx_date = _idx("idx_date", Column("low", BigInteger, nullable=False), Column("high", BigInteger, nullable=False))
Index("ix_idx_date_low", idx_date.c.param, idx_date.c.low)
Index("ix_idx_date_high", idx_date.c.param, idx_date.c.high)

idx_ref = _idx(
    "idx_ref",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", IdxText, nullable=True),
)
Index("ix_idx_ref_target", idx_ref.c.param, idx_ref.c.target_id, idx_ref.c.target_type, idx_ref.c.rid)
Index("ix_idx_ref_any", idx_ref.c.target_type, idx_ref.c.target_id)
# only references with a url (not local ones): searches look a url up by equality (migration 0003)
Index("ix_idx_ref_url", idx_ref.c.param, idx_ref.c.url, sqlite_where=idx_ref.c.url.isnot(None),
      postgresql_where=idx_ref.c.url.isnot(None))

idx_quantity = _idx(
    "idx_quantity",
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("system", IdxText, nullable=True),
    Column("code", IdxText, nullable=True),
    Column("unit", Text, nullable=True),
)
Index("ix_idx_quantity_val", idx_quantity.c.param, idx_quantity.c.low)

idx_number = _idx("idx_number", Column("value", Float, nullable=False))
Index("ix_idx_number_val", idx_number.c.param, idx_number.c.value)

idx_uri = _idx("idx_uri", Column("value", IdxText, nullable=False))
Index("ix_idx_uri_val", idx_uri.c.param, idx_uri.c.value)

INDEX_TABLES: dict[str, Table] = {
    "string": idx_string,
    "token": idx_token,
    "date": idx_date,
    "reference": idx_ref,
    "quantity": idx_quantity,
    "number": idx_number,
    "uri": idx_uri,
}


@cache
def param_key(resource_type: str, code: str) -> int:
    """The integer stored in ``idx_*.param`` for a parameter of a resource type.

    A CRC-32 of ``"Type.code"`` (31 bits): stable across releases because it depends
    only on the names; uniqueness over every known parameter is checked by the tests.
    """
    return zlib.crc32(f"{resource_type}.{code}".encode()) & 0x7FFFFFFF


ParamRows = tuple[tuple[int, str | None], ...]


@cache
def param_rows(resource_type: str, code: str) -> ParamRows:
    """Where the index rows of a parameter of a type are: ``(param key, target type)`` pairs; a
    target type means only the rows under that key which point to a resource of that type.

    ``code`` may carry a modifier row's suffix (``code:identifier``, ``code:of-type``) or a
    composite component's (``code$0``).  Most parameters are their own key.  An alias's rows are
    (also) its bases' (see :class:`phip.fhir.search.extract.Alias`): a union is its bases' keys, a
    restriction is its own key plus its base's key narrowed to its target type.
    """
    from phip.fhir.search.extract import aliases

    cut = min((i for i in (code.find(":"), code.find("$")) if i >= 0), default=len(code))
    name, suffix = code[:cut], code[cut:]
    al = aliases(resource_type).get(name)
    if al is None:
        return ((param_key(resource_type, code), None),)
    if al.target is None:
        return tuple((param_key(resource_type, b + suffix), None) for b in al.bases)
    if suffix:
        return ((param_key(resource_type, code), None),)
    return ((param_key(resource_type, code), None), (param_key(resource_type, al.bases[0]), al.target))


def rows_of(t: Any, pairs: Any, *conds: Any) -> ColumnElement[bool]:
    """The rows of index table ``t`` (or an alias of it) under the ``(key, target type)`` pairs of
    :func:`param_rows` (several parameters' pairs may be joined) that also meet ``conds``.

    One ``param IN (…) AND conds`` for the plain keys and one more, with ``target_type = T``, per
    target type: each branch is an index search on (param, …), so the OR does not scan.
    """
    by: dict[str | None, list[int]] = {}
    for k, target in pairs:
        if k not in by.setdefault(target, []):
            by[target].append(k)
    terms: list[ColumnElement[bool]] = []
    for target, keys in sorted(by.items(), key=lambda kv: (kv[0] is not None, kv[0] or "")):
        keys.sort()
        cond = t.c.param == keys[0] if len(keys) == 1 else t.c.param.in_(keys)
        if target is not None:
            cond = and_(cond, t.c.target_type == target)
        terms.append(and_(cond, *conds) if conds else cond)
    if not terms:
        return false()
    return terms[0] if len(terms) == 1 else or_(*terms)


def pairs_in(first: Any, second: Any, keys: Any) -> ColumnElement[bool]:
    """``(first, second) IN keys`` written so that an index on (first, second) serves it.

    SQLite scans the whole table for a row-value ``IN`` list; one ``first = ? AND second IN (…)``
    per distinct first value is a few index searches on every backend.
    """
    by: dict[Any, list[Any]] = {}
    for a, b in keys:
        by.setdefault(a, []).append(b)
    terms = [and_(first == a, second.in_(bs)) for a, bs in by.items()]
    if not terms:
        return false()
    return terms[0] if len(terms) == 1 else or_(*terms)

#: the value indexes of the search tables: a bulk load into a (nearly) empty store drops them
#: and builds them again at the end (``Store.defer_search_indexes`` / ``ensure_indexes``)
DEFERRABLE_INDEXES: tuple[str, ...] = (
    "ix_idx_string_val", "ix_idx_token_val", "ix_idx_date_low", "ix_idx_date_high", "ix_idx_ref_target",
    "ix_idx_ref_any", "ix_idx_ref_url", "ix_idx_quantity_val", "ix_idx_number_val", "ix_idx_uri_val",
)
