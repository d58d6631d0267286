"""A large load builds its search indexes at the end; nothing about the result differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from phip.importer.loader import Importer, should_defer_indexes
from phip.store import schema as S


def _index_names(store: Any) -> set[str]:
    sql = ("SELECT name FROM sqlite_master WHERE type = 'index'" if store.dialect.name == "sqlite"
           else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    with store.engine.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql(sql)}


def test_deferred_indexes_are_rebuilt_and_searches_match(node: Any, tmp_path: Path) -> None:
    f = tmp_path / "Patient.ndjson"
    f.write_bytes(b"\n".join(orjson.dumps({
        "resourceType": "Patient", "id": f"p{i}", "gender": "female" if i % 2 else "male",
        "name": [{"family": f"Fam{i % 7}"}], "birthDate": f"19{50 + i % 40}-01-02",
    }) for i in range(300)) + b"\n")
    assert not should_defer_indexes(node.store, [f])  # small loads update the indexes row by row
    phases: list[str] = []
    rep = Importer(node.store).import_all([f], defer_indexes=True, on_phase=phases.append)
    assert rep.loaded == 300
    assert "building the search indexes" in phases
    assert set(S.DEFERRABLE_INDEXES) <= _index_names(node.store)
    repo = node.store.repository()
    parser = repo.parser()
    rows = repo.search(parser.parse("Patient", [("family", "Fam3"), ("_count", "100")])).rows
    assert sorted(r.id for r in rows) == sorted(f"p{i}" for i in range(300) if i % 7 == 3)


def test_an_interrupted_deferred_load_gets_its_indexes_back_at_start(node: Any) -> None:
    node.store.defer_search_indexes()
    assert not set(S.DEFERRABLE_INDEXES) & _index_names(node.store)
    node.store.migrate()  # what Node.open does
    assert set(S.DEFERRABLE_INDEXES) <= _index_names(node.store)
