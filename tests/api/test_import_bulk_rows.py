"""The bulk import's backend-specific paths write what the generic ones write.

- ``Dialect.existing_keys`` (PostgreSQL: one probe of the unique index a key) finds exactly what
  the portable ``type = ? AND id IN (…)`` query finds;
- rows that go through COPY on PostgreSQL (batches of ``COPY_MIN_ROWS`` or more) equal the rows
  the driver's executemany writes, table by table, JSON text with awkward characters included;
- ``should_defer_indexes`` follows the store's dialect;
- an import cut off between batches with deferred indexes resumes without loss or duplicates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from phip.importer.loader import Importer, should_defer_indexes
from phip.store import repository
from phip.store import schema as S
from phip.store.db import Dialect


def _write(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    return path


def test_existing_keys_finds_what_the_portable_query_finds(node: Any) -> None:
    repo = node.store.repository()
    for i in range(40):
        repo.update("Patient", f"k{i}", {"resourceType": "Patient", "id": f"k{i}", "gender": "male"})
    repo.update("Observation", "k1", {"resourceType": "Observation", "id": "k1", "status": "final",
                                      "code": {"text": "x"}})
    repo.delete("Patient", "k2")  # deleted rows still hold their key
    keys = [("Patient", f"k{i}") for i in range(0, 1200, 3)] + [("Patient", "k5"), ("Patient", "k5")]
    keys += [("Observation", "k1"), ("Observation", "k3"), ("Encounter", "k4"), ("Patient", "K6"), ("Patient", "k2")]
    want = {("Patient", f"k{i}") for i in range(40) if i % 3 == 0 or i in (2, 5)} | {("Observation", "k1")}
    with node.store.engine.connect() as conn:
        got = node.store.dialect.existing_keys(conn, keys)
        portable = Dialect.existing_keys(node.store.dialect, conn, keys)
        assert node.store.dialect.existing_keys(conn, []) == set()
    assert got == portable == want


_AWKWARD = ["tab\there", "new\nline", "back\\slash", 'quote " and \\N', "\\.", "汉字 姓名", "emoji 🩺", "cr\rx"]


def _docs(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"resourceType": "Patient", "id": f"{prefix}{i}", "gender": "female",
             "name": [{"family": _AWKWARD[i % len(_AWKWARD)], "given": [f"G{i}", _AWKWARD[(i + 3) % len(_AWKWARD)]]}],
             "birthDate": f"19{60 + i % 30}-03-04",
             "identifier": [{"system": "http://example.org/mrn", "value": f"ID\t{i}"}],
             "extension": [{"url": "http://example.org/x", "valueDecimal": 1.5 + i}]}
            for i in range(n)]


def _rows_by_id(store: Any, prefix: str) -> dict[str, Any]:
    """Every row the import wrote for the resources with ids ``prefix…``, keyed by the id without it."""
    out: dict[str, Any] = {}
    R, V = S.resources, S.resource_versions
    with store.engine.connect() as conn:
        rids = {rid: i[len(prefix):] for rid, i in conn.execute(
            sa.select(R.c.rid, R.c.id).where(R.c.id.like(f"{prefix}%")))}
        for rid, content, ver, deleted in conn.execute(
                sa.select(R.c.rid, R.c.content, R.c.version, R.c.deleted).where(R.c.rid.in_(rids))):
            doc = orjson.loads(content) if isinstance(content, str | bytes) else content
            doc.pop("meta")
            doc["id"] = doc["id"][len(prefix):]
            out.setdefault(rids[rid], {})["resource"] = (doc, ver, deleted)
        for rid, content, method in conn.execute(
                sa.select(V.c.rid, V.c.content, V.c.method).where(V.c.rid.in_(rids))):
            doc = orjson.loads(content) if isinstance(content, str | bytes) else content
            doc.pop("meta")
            doc["id"] = doc["id"][len(prefix):]
            out[rids[rid]]["version"] = (doc, method)
        for kind, table in S.INDEX_TABLES.items():
            cols = [c for c in table.c if c.name != "rid"]
            for rec in conn.execute(sa.select(table.c.rid, *cols).where(table.c.rid.in_(rids))):
                vals = tuple(v[len(prefix):] if isinstance(v, str) and v.startswith(prefix) else v for v in rec[1:])
                out[rids[rec[0]]].setdefault(kind, []).append(vals)
        n_changes = conn.execute(sa.select(sa.func.count()).select_from(S.changes)
                                 .where(S.changes.c.rid.in_(rids))).scalar_one()
    for v in out.values():
        for kind in S.INDEX_TABLES:
            v[kind] = sorted(v.get(kind, []), key=repr)
    assert n_changes == len(rids)
    return out


def test_copy_rows_equal_executemany_rows(node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 30  # more than COPY_MIN_ROWS: COPY on PostgreSQL, unless the limit is raised
    assert n >= repository.COPY_MIN_ROWS
    imp = Importer(node.store, parallel=False)
    imp.import_all([_write(tmp_path / "copy.ndjson", _docs("c-", n))], defer_indexes=False)
    monkeypatch.setattr(repository, "COPY_MIN_ROWS", 10**9)
    imp2 = Importer(node.store, parallel=False)
    imp2.import_all([_write(tmp_path / "many.ndjson", _docs("m-", n))], defer_indexes=False)
    assert imp.report.loaded == imp2.report.loaded == n and not imp.report.rejected
    copied, inserted = _rows_by_id(node.store, "c-"), _rows_by_id(node.store, "m-")
    assert len(copied) == n and copied == inserted
    # and what was stored is what was sent
    repo = node.store.repository()
    for i, sent in enumerate(_docs("c-", n)):
        doc = repo.read("Patient", f"c-{i}").resource()
        doc.pop("meta")
        assert doc == sent


def test_should_defer_indexes_follows_the_dialect(node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _write(tmp_path / "p.ndjson", _docs("d-", 50))
    assert not should_defer_indexes(node.store, [f])
    monkeypatch.setattr(node.store.dialect, "defer_indexes_min", 1)
    assert should_defer_indexes(node.store, [f])  # an empty store, a load above the dialect's limit


def test_a_deferred_import_cut_off_between_batches_resumes_without_loss_or_duplicates(
        node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _docs("r-", 2500)
    files = [_write(tmp_path / "a.ndjson", docs[:1500]), _write(tmp_path / "b.ndjson", docs[1500:])]
    real = Importer._load_batch
    calls = {"n": 0}

    def failing(self: Importer, *args: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # a.ndjson (2 batches) is in; b.ndjson's first batch fails
            raise OSError("connection lost")
        real(self, *args, **kw)

    monkeypatch.setattr(Importer, "_load_batch", failing)
    with pytest.raises(OSError):
        Importer(node.store).import_all(files, defer_indexes=True)
    monkeypatch.setattr(Importer, "_load_batch", real)
    node.store.migrate()  # the next start rebuilds what the cut-off load had dropped
    with node.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(S.resources)
                            .where(S.resources.c.id.like("r-%"))).scalar_one() == 1500
    rep = Importer(node.store).import_all(files, defer_indexes=True)
    assert rep.skipped_done == 1500 and rep.loaded == 1000 and rep.updated == 0 and not rep.rejected
    with node.store.engine.connect() as conn:
        ids = [i for (i,) in conn.execute(sa.select(S.resources.c.id).where(S.resources.c.id.like("r-%")))]
        versions = conn.execute(sa.select(sa.func.count()).select_from(S.resource_versions)
                                .where(S.resource_versions.c.id.like("r-%"))).scalar_one()
        changes = conn.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(S.changes.c.seq)))
                               .where(S.changes.c.id.like("r-%"))).one()
    assert sorted(ids) == sorted(f"r-{i}" for i in range(2500)) and versions == 2500 and tuple(changes) == (2500, 2500)
    repo = node.store.repository()
    hits = repo.search(repo.parser().parse("Patient", [("identifier", "ID\t7"), ("_count", "10")])).rows
    assert [r.id for r in hits] == ["r-7"]
