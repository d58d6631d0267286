"""A resource's index rows made ready before the write lock (``stored_rows``) are inserted as the
same rows as its ``ResourceIndex`` — on every R4 example of a spread of types, sealed values
included."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from phip.fhir.search.extract import index_resource
from phip.store import schema as S
from phip.store.repository import insert_index_rows, stored_rows

TYPES = ("Patient", "Observation", "Encounter", "Condition", "MedicationRequest", "Practitioner",
         "Immunization", "Task", "SearchParameter", "Questionnaire")


def _rows(conn: Any, rid: int) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for kind, table in S.INDEX_TABLES.items():
        cols = [c for c in table.c if c.name != "rid"]
        out[kind] = sorted((tuple(r) for r in conn.execute(sa.select(*cols).where(table.c.rid == rid))), key=repr)
    return out


def test_stored_rows_insert_the_rows_of_the_resource_index(store: Any) -> None:
    from phip.fhir.package import package_dir

    try:
        files = sorted(package_dir(fetch=False).glob("*-*.json"))
    except RuntimeError as exc:
        pytest.skip(f"R4 examples not cached: {exc}")
    docs = [d for d in (orjson.loads(p.read_bytes()) for p in files) if d.get("resourceType") in TYPES]
    assert len(docs) > 150
    codec = store.codec
    with store.engine.begin() as conn:
        a: dict[int, Any] = {}
        b: dict[int, Any] = {}
        for k, doc in enumerate(docs):
            rtype = doc["resourceType"]
            ix = index_resource(doc)
            if codec is not None:
                codec.index(rtype, doc, ix)
            a[10_000_000 + k] = ix
            again = index_resource(doc)
            if codec is not None:
                codec.index(rtype, doc, again)
            b[20_000_000 + k] = stored_rows(rtype, again)
        insert_index_rows(conn, {r: (d["resourceType"], d) for r, d in zip(a, docs, strict=True)}, a,
                          codec=codec, prepared_sealed=True)
        insert_index_rows(conn, {r: (d["resourceType"], d) for r, d in zip(b, docs, strict=True)}, b,
                          codec=codec, prepared_sealed=True)
        total = 0
        for k in range(len(docs)):
            want, got = _rows(conn, 10_000_000 + k), _rows(conn, 20_000_000 + k)
            assert got == want, docs[k]["id"]
            total += sum(len(v) for v in got.values())
        assert total > 3000
        conn.rollback()
