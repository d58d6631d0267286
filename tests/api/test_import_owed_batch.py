"""An import cut off after its data was committed but before the capabilities' batch phase (master
index, quality, registries, security labels) leaves that phase owed: the next ``phip import`` run does
it, even though it finds every line already loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from phip.core.hooks import Point
from phip.importer.loader import OWED_JOB, Importer
from phip.store import schema as S


def _persons(store: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(S.resources).where(
            S.resources.c.type == "Person", S.resources.c.deleted == sa.false())).scalar_one())


def test_the_next_run_does_the_batch_phase_a_cut_off_run_owed(node: Any, tmp_path: Path) -> None:
    f = tmp_path / "patients.ndjson"
    f.write_bytes(b"".join(orjson.dumps({
        "resourceType": "Patient", "id": f"owed{i}", "gender": "female", "birthDate": f"19{50 + i}-03-0{1 + i % 9}",
        "name": [{"text": f"测试{'甲乙丙丁戊己庚辛壬癸'[i]}"}],
    }) + b"\n" for i in range(10)))
    calls: list[dict[str, int]] = []
    node.store.hooks.register(Point.AFTER_IMPORT, lambda _store, loaded: calls.append(dict(loaded)))

    first = Importer(node.store)
    first.import_file(f)  # the data is committed …
    first.close()         # … and the run ends before its batch phase (killed, or the machine went down)
    assert first.report.loaded == 10 and calls == []
    assert _persons(node.store) == 0  # the master index had not linked them yet

    second = Importer(node.store)
    report = second.import_all([f])
    assert report.loaded == 0 and report.skipped_done == 10  # nothing is loaded twice …
    assert calls == [{"Patient": 10}]  # … but the batch phase sees what the first run loaded
    assert _persons(node.store) == 10  # every resident has a master Person now
    with node.store.engine.connect() as conn:
        assert conn.execute(sa.select(S.jobs.c.id).where(S.jobs.c.id == OWED_JOB)).first() is None

    Importer(node.store).import_all([f])  # nothing is owed any more
    assert calls[-1] == {}
