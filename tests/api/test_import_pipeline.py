"""``phip import`` keeps the worker process busy across files: batches of later files are prepared
while earlier ones are written, yet they are written strictly in order, and an interrupted import
resumes without loading a line twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from phip.importer import loader
from phip.importer.loader import Importer
from phip.store import schema as S


def _write(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    return path


def _patients(start: int, n: int, gender: str) -> list[dict[str, Any]]:
    return [{"resourceType": "Patient", "id": f"p{i}", "gender": gender,
             "name": [{"family": f"Fam{i % 7}", "given": ["Given" * 40]}]} for i in range(start, start + n)]


def _files(tmp_path: Path) -> list[Path]:
    # a big first file starts the worker; the small ones after it go through it too, and the last
    # ones change resources the first ones created (so the order of writing shows in the versions)
    return [
        _write(tmp_path / "a.ndjson", _patients(0, 1200, "male")),
        _write(tmp_path / "b.ndjson", _patients(0, 10, "female")),
        _write(tmp_path / "c.ndjson", _patients(5, 10, "other")),
        _write(tmp_path / "d.ndjson", [{"resourceType": "Observation", "id": "o1", "status": "final",
                                        "code": {"text": "x"}, "subject": {"reference": "Patient/p3"}}]),
    ]


def _state(store: Any) -> dict[str, tuple[int, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(S.resources.c.id, S.resources.c.version, S.resources.c.content)
                            .where(S.resources.c.type == "Patient")).all()
    out = {}
    for rid, ver, content in rows:
        doc = orjson.loads(content) if isinstance(content, str | bytes) else content
        out[rid] = (ver, doc["gender"])
    return out


def test_files_are_written_in_order_while_the_worker_runs_ahead(node: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(tmp_path)
    assert files[0].stat().st_size >= loader.PARALLEL_MIN_BYTES > files[1].stat().st_size
    seen: list[tuple[str, int, bool]] = []
    real = Importer._load_batch

    def spy(self: Importer, path: Path, key: str, batch: Any, last: int, final: bool, prepared: Any = None) -> None:
        seen.append((path.name, last, prepared is not None))
        real(self, path, key, batch, last, final, prepared)

    monkeypatch.setattr(Importer, "_load_batch", spy)
    rep = Importer(node.store).import_all(files, defer_indexes=False)
    assert rep.loaded == 1201 and rep.updated == 20 and not rep.rejected
    assert [s[0] for s in seen] == ["a.ndjson"] * 2 + ["b.ndjson", "c.ndjson", "d.ndjson"]
    assert [s[1] for s in seen[:2]] == [1000, 1200]
    assert all(s[2] for s in seen)  # every batch, small files too, was prepared by the worker
    state = _state(node.store)
    assert state["p0"] == (2, "female") and state["p4"] == (2, "female")
    assert state["p5"] == (3, "other") and state["p9"] == (3, "other")  # b then c
    assert state["p14"] == (2, "other") and state["p100"] == (1, "male")


def test_an_import_interrupted_mid_queue_resumes_without_loading_twice(node: Any, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(tmp_path)
    real = Importer._load_batch
    calls = {"n": 0}

    def failing(self: Importer, *args: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # b.ndjson: a.ndjson is in, later batches are queued in the worker
            raise OSError("disk gone")
        real(self, *args, **kw)

    monkeypatch.setattr(Importer, "_load_batch", failing)
    with pytest.raises(OSError):
        Importer(node.store).import_all(files, defer_indexes=False)
    assert len(_state(node.store)) == 1200
    monkeypatch.setattr(Importer, "_load_batch", real)
    rep = Importer(node.store).import_all(files, defer_indexes=False)
    assert rep.skipped_done == 1200 and rep.loaded == 1 and rep.updated == 20
    state = _state(node.store)
    assert state["p0"] == (2, "female") and state["p5"] == (3, "other") and state["p100"] == (1, "male")
