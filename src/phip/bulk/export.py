"""Writing resources out as NDJSON, one file per type (Bulk Data and ``phip export``).

Streams through the store in ``rid`` order in batches (constant memory), optionally
limited to types, to changes since a time, and to the compartments of a set of
patients (Patient- and Group-level export, https://hl7.org/fhir/uv/bulkdata/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from phip.fhir import definitions as defs
from phip.fhir.datetimes import date_range
from phip.fhir.errors import bad_request
from phip.store import schema as S
from phip.store.repository import Store, content_bytes

BATCH = 2000


def patient_compartment_types() -> dict[str, tuple[str, ...]]:
    return {t: ps for t, ps in defs.compartments().get("Patient", {}).items() if t in defs.resource_types()}


def iter_type(store: Store, rtype: str, since_us: int | None, patients: list[str] | None,
              where: Callable[[Any, str], list[Any]] | None = None,
              transform: Callable[[str, bytes], bytes] | None = None) -> Iterator[bytes]:
    """Current, non-deleted resources of one type as JSON bytes, in rid order.

    ``where(resources, type)``: extra SQL conditions (the caller's access scope); ``transform``:
    what each body becomes on its way out (masking)."""
    r = S.resources
    conds = [r.c.type == rtype, r.c.deleted == sa.false(), *(where(r, rtype) if where is not None else ())]
    if since_us is not None:
        conds.append(r.c.last_updated >= since_us)
    if patients is not None:
        if rtype == "Patient":
            conds.append(r.c.id.in_(patients))
        else:
            params = [p for p in patient_compartment_types().get(rtype, ()) if p != "{def}"]
            if not params:
                return
            x = S.idx_ref
            conds.append(
                r.c.rid.in_(
                    sa.select(x.c.rid).where(
                        S.rows_of(x, [k for p in params for k in S.param_rows(rtype, p)],
                                  x.c.target_type == "Patient", x.c.target_id.in_(patients)),
                    )
                )
            )
    last = 0
    while True:
        with store.engine.connect() as conn:
            recs = conn.execute(
                sa.select(r.c.rid, r.c.content).where(*conds, r.c.rid > last).order_by(r.c.rid).limit(BATCH)
            ).all()
        if not recs:
            return
        for rec in recs:
            body = content_bytes(rec.content)
            if body is not None and store.codec is not None:
                body = store.codec.open(body)  # encryption at rest: exports carry plaintext
            if body is not None:
                yield transform(rtype, body) if transform is not None else body
        last = recs[-1].rid


def types_present(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(
            t for (t,) in conn.execute(sa.select(S.resources.c.type).where(S.resources.c.deleted == sa.false())
                                       .distinct())
        )


def parse_types(value: str | None) -> list[str] | None:
    if not value:
        return None
    types = [t.strip() for t in value.split(",") if t.strip()]
    bad = [t for t in types if t not in defs.resource_types()]
    if bad:
        raise bad_request(f"_type names unknown resource type(s): {', '.join(bad)}", expression="_type")
    return types


def parse_since(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return date_range(value)[0]
    except ValueError:
        raise bad_request(f"_since must be a FHIR instant, not {value!r}", expression="_since") from None


def export(
    store: Store,
    out: Path,
    *,
    types: Iterable[str] | None = None,
    since_us: int | None = None,
    patients: list[str] | None = None,
    progress: Callable[[str, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    where: Callable[[Any, str], list[Any]] | None = None,
    transform: Callable[[str, bytes], bytes] | None = None,
) -> dict[str, int]:
    """Write ``<Type>.ndjson`` files into ``out``; returns counts per type (empty types omitted)."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = list(types) if types else types_present(store)
    if patients is not None:
        comp = patient_compartment_types()
        wanted = [t for t in wanted if t == "Patient" or t in comp]
    counts: dict[str, int] = {}
    for rtype in wanted:
        path = out / f"{rtype}.ndjson"
        n = 0
        f: IO[bytes] | None = None
        try:
            for body in iter_type(store, rtype, since_us, patients, where, transform):
                if cancelled is not None and cancelled():
                    return counts
                if f is None:
                    f = path.open("wb")
                f.write(body)
                f.write(b"\n")
                n += 1
                if progress is not None and n % 1000 == 0:
                    progress(rtype, n)
        finally:
            if f is not None:
                f.close()
        if n:
            counts[rtype] = n
            if progress is not None:
                progress(rtype, n)
    return counts
