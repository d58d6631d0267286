"""On a small synthetic region with injected defects: the engine finds ≥ 99% of them and flags ≤ 1%
of clean records; ``phip quality report`` prints the scorecard.  The defect kinds that no rule can
see in one record are listed in ``phip.quality.evaluate.OUT_OF_SCOPE`` (the larger run is
``bench/bench_quality.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from phip.importer.loader import Importer, collect
from phip.quality.evaluate import DETECTED_BY, OUT_OF_SCOPE, evaluate


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phip.synth import run

    out = tmp_path_factory.mktemp("quality") / "region"
    run(out, 300, 5, years=2, progress=False)
    return out


def _import(node: Any, region: Path) -> Any:
    imp = Importer(node.store, parallel=False)
    try:
        for f in collect([region]):
            if f.suffix == ".ndjson":
                imp.import_file(f)
        imp.finish()
    finally:
        imp.close()
    return imp.report


def test_finds_injected_defects(node: Any, region: Path) -> None:
    report = _import(node, region)
    assert not report.rejected
    qs = node.ext["quality"]
    ev = evaluate(node.store, region, qs.rules, linked=qs.same_person is not None)
    print("\n".join(ev.lines()))
    assert ev.in_scope > 100 and ev.clean > 5000
    assert ev.recall >= 0.99, ev.missed[:20]
    assert ev.fp_rate <= 0.01, ev.fp_rules.most_common(5)
    # the mapping is explicit: every kind in the truth file is either detected by named rules or out of scope
    kinds = {k.split(" ")[0] for k in ev.by_kind} | {k.split(":")[0] for k in ev.out_of_scope}
    assert kinds <= set(DETECTED_BY) | {k.split(":")[0] for k in OUT_OF_SCOPE}
    # every finding has an institution, and those found at import have Tasks assigned to it
    import sqlalchemy as sa

    from phip.quality.tables import quality_finding as QF

    with node.store.read_conn() as conn:
        n_open, n_task, n_noinst = conn.execute(sa.select(
            sa.func.count(), sa.func.count(QF.c.task),
            sa.func.sum(sa.case((QF.c.institution.is_(None), 1), else_=0))).where(QF.c.dimension != "timeliness")).one()
        late, late_tasks = conn.execute(sa.select(sa.func.count(), sa.func.count(QF.c.task)).where(
            QF.c.dimension == "timeliness")).one()
    # every finding a resubmission can fix has its Task; late uploads (which it cannot) have none
    assert n_open > 0 and n_task == n_open and not n_noinst
    assert late > 0 and late_tasks == 0
    sc = node.ext["quality"].scorecard()
    # every imported resource is counted (other capabilities may have written a few more records)
    received = sc["overall"]["received"]
    assert report.loaded <= received <= report.loaded + 10
    names = {r["institution"] for r in sc["institutions"]}
    assert "510104-rmyy" in names and "unknown" not in names
    # importing the same files again changes nothing (resumable import, no second findings)
    _import(node, region)
    assert node.ext["quality"].scorecard()["overall"]["received"] == received


def test_report_command(node: Any, region: Path) -> None:
    from typer.testing import CliRunner

    from phip.quality.cli import app

    _import(node, region / "510104-rmyy")  # one hospital is enough here
    r = CliRunner().invoke(app, ["report", "--data", str(node.data), "--json"])
    assert r.exit_code == 0, r.output
    sc = orjson.loads(r.stdout)
    assert sc["threshold"] == 0.98 and sc["institutions"]
    r = CliRunner().invoke(app, ["report", "--data", str(node.data)])
    assert r.exit_code == 0 and "Completeness" in r.stdout and "institutions below 98%" in r.output
    r = CliRunner().invoke(app, ["report", "--data", str(node.data), "--from", "2025-13-01x"])
    assert r.exit_code == 2


def test_checks_in_the_import_worker_match_the_serial_path(node: Any, region: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks the importer's worker process makes (all but the value-set checks) give exactly the
    findings and facts of the checks made in the writing process."""
    from phip.importer import loader
    from phip.node.node import init_node
    from phip.quality import engine

    used: list[int] = []
    real = engine.QualityService.on_import_batch

    def spy(self: Any, tx: Any, items: list[Any]) -> None:
        used.append(sum(1 for it in items if it.prepared and it.prepared.get("quality") is not None))
        real(self, tx, items)

    monkeypatch.setattr(engine.QualityService, "on_import_batch", spy)
    ready: list[int] = []  # Tasks stored with the index rows the worker made
    insert_new = loader.Importer._insert_new

    def spy_insert(self: Any, tx: Any, fresh: list[Any], indexes: Any = None, extras: Any = None) -> None:
        if fresh and all(r["resourceType"] == "Task" for _n, r in fresh):
            ready.append(sum(1 for _n, r in fresh if indexes and id(r) in indexes))
        insert_new(self, tx, fresh, indexes, extras)

    monkeypatch.setattr(loader.Importer, "_insert_new", spy_insert)
    monkeypatch.setattr(loader, "PARALLEL_MIN_BYTES", 0)
    _import(node, region)  # serial
    assert sum(used) == 0 and sum(ready) == 0
    other = init_node(tmp_path / "parallel", db=f"sqlite:///{tmp_path / 'parallel.db'}", region="510104",
                      name="parallel")
    try:
        imp = Importer(other.store)
        try:
            imp.import_all([f for f in collect([region]) if f.suffix == ".ndjson"], defer_indexes=False)
        finally:
            imp.close()
        assert sum(used) > 0.9 * imp.report.loaded  # nearly all were checked in the worker

        def rows(n: Any) -> tuple[list[Any], list[Any]]:
            with n.store.engine.connect() as conn:
                f = conn.exec_driver_sql("SELECT rtype, rid, rule, path, message, institution, day, status "
                                         "FROM quality_finding ORDER BY rtype, rid, rule").all()
                r = conn.exec_driver_sql("SELECT * FROM quality_resource ORDER BY rtype, rid").all()
            cols = [c.name for c in engine.quality_resource.columns]
            keyed = {"uid", "idkey", "namekey", "phonekey", "addrkey"}  # blinded with each node's own key
            return [tuple(x) for x in f], [tuple((x[i] is None) if c in keyed else x[i]
                                                 for i, c in enumerate(cols) if c != "seq") for x in r]

        f1, r1 = rows(node)
        f2, r2 = rows(other)
        assert len(f1) > 100 and f1 == f2
        assert r1 == r2

        def tasks(n: Any) -> dict[tuple[str, str, str], Any]:
            repo = n.store.repository()
            with n.store.engine.connect() as conn:
                open_ = conn.exec_driver_sql("SELECT rtype, rid, rule, task, id FROM quality_finding "
                                             "WHERE status = 'open'").all()
            out = {}
            for rtype, rid, rule, task, fid in open_:
                if rule.startswith("timeliness."):
                    assert task is None
                    continue
                assert task == f"qf-{fid}"
                t = repo.read("Task", task).resource()
                out[(rtype, rid, rule)] = (task, t["status"], t["intent"], t["code"], t["description"], t["focus"],
                                           t.get("for"), t.get("owner"))
            return out

        # the Tasks built with their records in the worker are the serial path's, and found by their
        # owner through the index rows made there
        t1, t2 = tasks(node), tasks(other)
        assert {k: v[1:] for k, v in t1.items()} == {k: v[1:] for k, v in t2.items()}
        assert sum(ready) > 0.3 * len(t2)
        owners: dict[str, set[str]] = {}
        for v in t2.values():
            if v[-1] is not None:
                owners.setdefault(v[-1]["reference"], set()).add(v[0])
        repo = other.store.repository()
        for owner, ids in owners.items():
            found = {r.id for r in repo.find("Task", f"owner={owner}&status=requested", limit=10_000)}
            assert found == ids
        # the worker's keyed values are the writing process's (a REST write is compared with them)
        svc = other.ext["quality"]
        with other.store.engine.connect() as conn:
            stored = {rid: (k, n) for rid, k, n in conn.exec_driver_sql(
                "SELECT rid, idkey, namekey FROM quality_resource WHERE rtype = 'Patient' AND idkey IS NOT NULL")}
        repo = other.store.repository()
        for rid, (idkey, namekey) in list(stored.items())[:50]:
            res = repo.read("Patient", rid).resource()
            fx = svc.checker.check("Patient", rid, res, 0)
            assert fx.ref is not None
            assert (svc._key("i", fx.ref[0]), svc._key("n", fx.ref[1])) == (idkey, namekey)
            row, _found, _codes = engine.Prepare(svc)(res) or ((), (), ())  # called in this process, not sent
            assert engine.unshaped(row)["idkey"] == idkey
        assert len(stored) > 20 and other.store.codec is not None
    finally:
        other.close()


def test_a_worker_task_takes_its_inherited_owner_with_the_index_row_the_extractor_makes() -> None:
    from phip.fhir.search.extract import index_resource
    from phip.quality import engine
    from phip.quality.rules import load as load_rules

    rules = load_rules()
    made = engine.task_doc(rules, "", "Observation", "o-1", "completeness.Observation.performer",
                           "执行者缺失 (Observation.performer)", "Patient/p-1", None, 1_700_000_000_000_000)
    assert "owner" not in made  # the record names no institution of its own: the worker leaves it out
    pre = (made, index_resource(made))
    # the batch phase's Task: the institution inherited from the encounter, its own id and time
    doc = engine.task_doc(rules, "qf-7", "Observation", "o-1", "completeness.Observation.performer",
                          "执行者缺失 (Observation.performer)", "Patient/p-1", "h-2", 1_700_000_100_000_000)
    got, ix = engine._worker_task(pre, doc)
    assert got == dict(doc, authoredOn=made["authoredOn"])  # (the worker's time, which its index rows hold)
    want = index_resource(got)
    for table in ("strings", "tokens", "dates", "refs", "quantities", "numbers", "uris"):
        assert sorted(getattr(ix, table), key=repr) == sorted(getattr(want, table), key=repr), table
    assert ("owner", 0, "Organization", "h-2", None) not in pre[1].refs  # the worker's rows are not changed
    # another message (the finding changed since): indexed anew by the caller
    assert engine._worker_task(pre, dict(doc, description="x")) == (dict(doc, description="x"), None)
    # the record's own institution, as the worker saw it: taken as made
    own = engine.task_doc(rules, "", "Observation", "o-1", "completeness.Observation.performer",
                          "执行者缺失 (Observation.performer)", "Patient/p-1", "h-2", 1_700_000_000_000_000)
    got, ix = engine._worker_task((own, index_resource(own)), dict(doc))
    assert got == dict(doc, authoredOn=own["authoredOn"]) and ix is not None
