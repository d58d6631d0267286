"""Honest quality thresholds on small labelled samples (full runs: bench/bench_empi.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from empi_eval import febrl4_patients, pairwise, synth_patients, synth_truth


def _link_all(node: Any, pats: list[dict[str, Any]], tmp: Path) -> dict[str, str]:
    import sqlalchemy as sa

    from phip.importer.loader import Importer

    f = tmp / "p.ndjson"
    f.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in pats))
    imp = Importer(node.store, parallel=False)
    imp.import_file(f)
    imp.finish()
    imp.close()
    with node.store.engine.connect() as c:
        return dict(c.execute(sa.text("SELECT patient_id, person_id FROM empi_record")).all())  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_febrl4_sample_default_rules(node: Any, tmp_path: Path) -> None:
    pats, truth = febrl4_patients()
    keep = {t for t in list(dict.fromkeys(truth.values()))[:600]}
    sample = [p for p in pats if truth[p["id"]] in keep]
    m = pairwise(_link_all(node, sample, tmp_path), {p["id"]: truth[p["id"]] for p in sample})
    assert m["precision"] >= 0.995, m
    assert m["f1"] >= 0.95, m


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_synthetic_region_sample(node: Any, tmp_path: Path) -> None:
    out = tmp_path / "region"
    subprocess.run([str(Path(sys.executable).parent / "phip"), "synth", "--out", str(out), "--persons", "400",
                    "--years", "1", "--seed", "5", "--no-progress", "--workers", "1"], check=True,
                   capture_output=True)
    pats = list(synth_patients(out))
    m = pairwise(_link_all(node, pats, tmp_path), synth_truth(out))
    assert m["precision"] >= 0.995, m
    assert m["f1"] >= 0.99, m
