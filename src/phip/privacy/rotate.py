"""Re-encryption: seal every stored personal record with the newest data key (online).

``phip keys rotate`` makes a new data key and walks ``resources`` and ``resource_versions`` of
the sealed types in batches of ``BATCH`` rows, one short transaction each, so the API keeps
serving: a row sealed with an older key, or not sealed at all (a node that turned encryption on
later), is opened and sealed again; a current row that was in clear gets blind index rows.  A
current row changed meanwhile is skipped (its new version was sealed by the writer).  Older keys
stay in the key store until no row uses them (``--retire`` deletes them then).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from phip.store import schema as S
from phip.store.repository import content_bytes, insert_index_rows

BATCH = 500


@dataclass(slots=True)
class RotateReport:
    new_kid: str
    resealed: int = 0
    newly_sealed: int = 0
    skipped: int = 0
    by_key_left: dict[str, int] = field(default_factory=dict)


def _kids(content: bytes) -> set[str]:
    from phip.privacy.codec import PREFIX

    out: set[str] = set()
    marker = ('"' + PREFIX).encode()
    start = 0
    while True:
        i = content.find(marker, start)
        if i < 0:
            return out
        j = content.find(b":", i + len(marker))
        out.add(content[i + len(marker): j].decode())
        start = j


def count_rows(store: Any, types: list[str]) -> int:
    with store.engine.connect() as conn:
        n = 0
        for t in (S.resources, S.resource_versions):
            n += conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.type.in_(types),
                                                                               t.c.content.is_not(None))).scalar_one()
    return int(n)


def reseal(store: Any, codec: Any, progress: Callable[[int], None] | None = None) -> RotateReport:
    """Seal every personal row with ``codec.current``; returns what was done."""
    rep = RotateReport(codec.current.kid)
    types = sorted(codec.types)
    sqlite = store.dialect.name == "sqlite"
    done = 0
    for table, current in ((S.resources, True), (S.resource_versions, False)):
        last = -1
        while True:
            with store.engine.connect() as conn:
                recs = conn.execute(
                    sa.select(table.c.rid, table.c.version, table.c.type,
                              sa.type_coerce(table.c.content, S.RawContent).label("content"))
                    .where(table.c.type.in_(types), table.c.content.is_not(None), table.c.rid > last)
                    .order_by(table.c.rid, table.c.version).limit(BATCH)
                ).all()
            if not recs:
                break
            last = recs[-1].rid
            if not current:  # all versions of the last rid in one batch
                recs = [r for r in recs if r.rid < last] or recs
                last = recs[-1].rid
            with store.write_tx() as tx:
                conn = tx.conn
                reindex: dict[int, tuple[str, dict[str, Any]]] = {}
                for r in recs:
                    raw = content_bytes(r.content)
                    assert raw is not None
                    kids = _kids(raw)
                    plain = orjson.loads(codec.open(raw))
                    if kids == {codec.current.kid}:
                        continue
                    if not kids and not codec.secrets(r.type, plain):
                        continue
                    sealed = codec.seal(r.type, plain) or plain
                    value: Any = orjson.dumps(sealed).decode() if sqlite else sealed
                    cond = [table.c.rid == r.rid, table.c.version == r.version]
                    res = conn.execute(table.update().where(*cond).values(content=value))
                    if res.rowcount == 0:
                        rep.skipped += 1
                        continue
                    if kids:
                        rep.resealed += 1
                    else:
                        rep.newly_sealed += 1
                        if current:
                            reindex[r.rid] = (r.type, plain)
                if reindex:
                    for t in S.INDEX_TABLES.values():
                        conn.execute(t.delete().where(t.c.rid.in_(list(reindex))))
                    insert_index_rows(conn, reindex, codec=codec)
            done += len(recs)
            if progress is not None:
                progress(done)
            if len(recs) < BATCH and current:
                break
    done = _reseal_columns(store, codec, rep, progress, done)
    rep.by_key_left = keys_in_use(store, types)
    return rep


def _value_kid(value: str | None) -> str | None:
    """The data key id of a value sealed by ``Codec.encrypt``, None for a value in clear."""
    from phip.privacy.codec import PREFIX

    if not value or not value.startswith(PREFIX):
        return None
    return value[len(PREFIX):].partition(":")[0]


def _pages(store: Any, col: Any, size: int) -> Iterator[list[Any]]:
    """(key, value) rows of a sealed column in key order, ``size`` at a time (a short read each)."""
    kc, vc = col.table.c[col.key], col.table.c[col.value]
    last = ""
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(kc, vc).where(kc > last).order_by(kc).limit(size)).all()
        if not rows:
            return
        last = rows[-1][0]
        yield list(rows)


def _reseal_columns(store: Any, codec: Any, rep: RotateReport, progress: Callable[[int], None] | None,
                    done: int) -> int:
    """The capabilities' own sealed columns (``Store.sealed_columns``), a batch at a time."""
    for col in store.sealed_columns:
        t = col.table
        kc, vc = t.c[col.key], t.c[col.value]
        for recs in _pages(store, col, BATCH):
            first: list[tuple[str, str]] = []
            with store.write_tx() as tx:
                for k, v in recs:
                    kid = _value_kid(v)
                    if kid == codec.current.kid or v is None:
                        continue
                    aad = f"{col.context}/{k}".encode()
                    plain = codec.decrypt(v, aad) if kid else v
                    new = codec.encrypt(plain, aad)
                    res = tx.conn.execute(t.update().where(kc == k, vc == v).values({col.value: new}))
                    if res.rowcount == 0:
                        rep.skipped += 1
                    elif kid:
                        rep.resealed += 1
                    else:
                        rep.newly_sealed += 1
                        first.append((k, plain))
                if first and col.after_first_seal is not None:
                    col.after_first_seal(tx.conn, codec, first)
            done += len(recs)
            if progress is not None:
                progress(done)
    return done


def keys_in_use(store: Any, types: list[str]) -> dict[str, int]:
    """Data key id → rows (current and history) still sealed with it."""
    out: dict[str, int] = {}
    for table in (S.resources, S.resource_versions):
        last = -1
        while True:
            with store.engine.connect() as conn:
                recs = conn.execute(sa.select(table.c.rid,
                                              sa.type_coerce(table.c.content, S.RawContent).label("content"))
                                    .where(table.c.type.in_(types), table.c.content.is_not(None), table.c.rid > last)
                                    .order_by(table.c.rid).limit(5000)).all()
            if not recs:
                break
            last = recs[-1].rid
            for r in recs:
                raw = content_bytes(r.content)
                for kid in _kids(raw or b""):
                    out[kid] = out.get(kid, 0) + 1
    for col in store.sealed_columns:
        for vals in _pages(store, col, 5000):
            for _k, v in vals:
                kid = _value_kid(v)
                if kid:
                    out[kid] = out.get(kid, 0) + 1
    return out
