"""`phip empi train` (Splink) writes a valid next rules version; rebuild applies it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .test_quality import _link_all, febrl4_patients, pairwise


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_train_then_rebuild(node: Any, tmp_path: Path) -> None:
    import logging

    from typer.testing import CliRunner

    from phip.cli.main import app
    from phip.empi.batch import rebuild
    from phip.empi.service import active_rules_path, rules_dir
    from phip.empi.train import train, write_rules
    from phip.node.node import Node

    logging.getLogger("splink").setLevel(logging.ERROR)
    pats, truth = febrl4_patients()
    keep = set(list(dict.fromkeys(truth.values()))[:400])
    sample = [p for p in pats if truth[p["id"]] in keep]
    _link_all(node, sample, tmp_path)
    with node.store.engine.connect() as conn:
        raw, model = train(conn, node.ext["empi"].rules, max_pairs=5e4, log=lambda *_a: None, codec=node.store.codec)
    assert raw["comparisons"]["name"]["levels"]["exact"]["m"] != 0.92  # estimated, not the default
    path = write_rules(rules_dir(node.data), raw, model, "test")
    assert path.name == "rules-v1.json" and path.with_suffix(".splink.json").exists()
    node.close()
    node2 = Node.open(node.data)
    try:
        assert active_rules_path(node.data) == path and node2.ext["empi"].rules.version == "1"
        rep = rebuild(node2.ext["empi"])
        assert rep.records == len(sample)
        import sqlalchemy as sa

        with node2.store.engine.connect() as c:
            pred = dict(c.execute(sa.text("SELECT patient_id, person_id FROM empi_record")).all())
        m = pairwise(pred, {p["id"]: truth[p["id"]] for p in sample})
        assert m["precision"] >= 0.995 and m["f1"] >= 0.97, m
        r = CliRunner().invoke(app, ["empi", "rebuild", "--data", str(node.data)])
        assert r.exit_code == 0 and "records" in r.output, r.output
    finally:
        node2.close()


def test_train_needs_records(node: Any) -> None:
    from typer.testing import CliRunner

    from phip.cli.main import app

    r = CliRunner().invoke(app, ["empi", "train", "--data", str(node.data)])
    assert r.exit_code == 1 and "at least 100" in r.output
