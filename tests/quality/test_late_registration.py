"""A registration (Patient) has no event time of its own: it is late when it came in the same upload
as a late record of its patient at the same institution — in the import's batch phase and on the
REST path (a transaction Bundle); a resubmission keeps the finding; the scorecard counts it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from .test_counters import _counters, _recount
from .test_flow import _encounter, _now, _org, _patient
from .test_registry_check import ID_A, ID_B, import_findings

CST = timezone(timedelta(hours=8))


def _at(days: float) -> str:
    return (datetime.now(CST) - timedelta(days=days)).isoformat(timespec="seconds")


def _open(api: Any, pid: str) -> set[str]:
    body = api.get(f"/quality/findings?resource=Patient/{pid}&status=open", expect=200).json()
    return {f["rule"] for f in body["findings"] if f["dimension"] == "timeliness"}


def _tx(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}


def test_rest_transaction_with_a_late_visit(api: Any, node: Any) -> None:
    _org(api)
    _org(api, "h2")
    # the first visit, 10 days ago, uploaded now together with the registration
    api.post("/fhir", _tx(_patient("p-late", ID_A), _encounter("e-late", "p-late", _at(10))), expect=200)
    assert _open(api, "p-late") == {"timeliness.Patient"}
    f = api.get("/quality/findings?resource=Patient/p-late&rule=timeliness.Patient", expect=200).json()["findings"][0]
    assert "Encounter/e-late" in f["message"] and f["path"] == "Patient.meta.lastUpdated" and f["institution"] == "h1"
    # a late upload cannot be undone by resubmitting: listed and counted, but no Task is assigned
    assert f["task"] is None
    late = api.get("/quality/findings?resource=Encounter/e-late&rule=timeliness.Encounter", expect=200).json()
    assert [x["task"] for x in late["findings"]] == [None]
    for focus in ("Patient/p-late", "Encounter/e-late"):
        assert api.get(f"/fhir/Task?focus={focus}&_summary=count", expect=200).json()["total"] == 0
    # a visit sent as it happens: the registration is on time
    api.post("/fhir", _tx(_patient("p-ok", ID_B), _encounter("e-ok", "p-ok", _now(-1))), expect=200)
    assert _open(api, "p-ok") == set()
    # a late visit at another institution says nothing of this registration
    api.put("/fhir/Patient/p-h2", _patient("p-h2", ID_B, org="h2"), expect=201)
    api.put("/fhir/Encounter/e-h1", _encounter("e-h1", "p-h2", _at(9)), expect=201)
    assert _open(api, "p-h2") == set()
    # a corrected resubmission of the registration does not undo its late upload
    api.put("/fhir/Patient/p-late", _patient("p-late", ID_A, gender="male"), expect=200)
    assert _open(api, "p-late") == {"timeliness.Patient"}
    assert _counters(node) == _recount(node)  # the day's counter still counts it late
    api.put("/fhir/Patient/p-late", _patient("p-late", ID_A, gender="male", address=[{"text": "四川省成都市青羊区"}]),
            expect=200)
    assert _counters(node) == _recount(node)
    card = api.get("/quality/scorecard?institution=h1", expect=200).json()
    assert "timeliness" in str(card)


def test_late_uploads_get_tasks_when_the_rules_assign_them(api: Any, node: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The Task policy is the rules' (``tasks.dimensions``): an operator who wants late uploads
    assigned too gets a Task for each."""
    svc = node.ext["quality"]
    monkeypatch.setattr(svc.rules, "task_dimensions", svc.rules.task_dimensions | {"timeliness"})
    _org(api)
    api.put("/fhir/Patient/p-late", _patient("p-late", ID_A), expect=201)
    api.put("/fhir/Encounter/e-late", _encounter("e-late", "p-late", _at(10)), expect=201)
    f = api.get("/quality/findings?resource=Encounter/e-late&rule=timeliness.Encounter", expect=200).json()
    task = api.get(f"/fhir/{f['findings'][0]['task']}", expect=200).json()
    assert task["focus"] == {"reference": "Encounter/e-late"} and task["status"] == "requested"
    # the policy back to the shipped one: a recheck withdraws the Task, the finding stays open
    monkeypatch.setattr(svc.rules, "task_dimensions", svc.rules.task_dimensions - {"timeliness"})
    svc.recheck(["Encounter"])
    g = api.get("/quality/findings?resource=Encounter/e-late&rule=timeliness.Encounter", expect=200).json()
    assert g["findings"][0]["status"] == "open" and g["findings"][0]["task"] is None
    assert api.get(f"/fhir/Task/{task['id']}", expect=200).json()["status"] == "cancelled"


def test_import_batch_phase(node: Any, tmp_path: Path) -> None:
    from phip.quality.tables import quality_counter as QC

    up = "2025-03-20T10:00:00+08:00"
    late_visit = dict(_encounter("e1", "p1", "2025-03-01T09:00:00+08:00"), meta={"lastUpdated": up})
    docs = [
        {"resourceType": "Organization", "id": "h1", "name": "医院"},
        dict(_patient("p1", ID_A), meta={"lastUpdated": up}),  # registered with the late visit
        # registered on time long before; its late visit came in another upload
        dict(_patient("p2", ID_B), meta={"lastUpdated": "2025-01-05T10:00:00+08:00"}),
        late_visit,
        dict(_encounter("e2", "p2", "2025-03-01T09:00:00+08:00"), meta={"lastUpdated": up}),
    ]
    got = import_findings(node, docs, tmp_path, "timeliness.%")
    with node.store.engine.connect() as conn:
        pat = conn.execute(sa.select(sa.func.sum(QC.c.f_timeliness)).where(QC.c.rtype == "Patient")).scalar()
    assert got == {("p1", "timeliness.Patient"), ("e1", "timeliness.Encounter"), ("e2", "timeliness.Encounter")}
    assert pat == 1


def test_a_file_without_upload_times_is_not_judged_late(node: Any, tmp_path: Path) -> None:
    """Old records loaded without their sender's upload time (a migration of a hospital's history):
    when the source received them is unknown, so the load's own time does not make them late; the
    same visit with an upload time a month after it is late."""
    old_visit = _encounter("e-old", "p1", "2019-06-01T09:00:00+08:00")
    stamped = dict(_encounter("e-stamped", "p1", "2019-06-01T09:00:00+08:00"),
                   meta={"lastUpdated": "2019-07-01T09:00:00+08:00"})
    docs = [{"resourceType": "Organization", "id": "h1", "name": "医院"}, _patient("p1", ID_A), old_visit, stamped]
    assert import_findings(node, docs, tmp_path, "timeliness.%") == {("e-stamped", "timeliness.Encounter")}
    # the records are still counted, on the day they were loaded
    from phip.quality.tables import quality_counter as QC
    with node.store.engine.connect() as conn:
        received = conn.execute(sa.select(sa.func.sum(QC.c.received)).where(QC.c.rtype == "Encounter")).scalar()
    assert received == 2


def test_import_tasks_made_before_the_index_rebuild_are_searchable(node: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A large load rebuilds the search indexes at the end; the Tasks written for its findings
    before that (IMPORT_LOADED) are found by owner and status afterwards, one per assigned finding;
    the late uploads of the load are findings without a Task."""
    from phip.importer.loader import Importer
    from phip.quality.tables import quality_finding as QF
    from phip.store import schema as S

    # what the store holds when the rebuild starts: the Tasks made at IMPORT_LOADED (a small file is
    # loaded in this process, so no Task was made with its record in the importer's worker)
    at_rebuild: list[tuple[set[str], set[str]]] = []
    rebuild = node.store.ensure_indexes

    def spy(*a: Any, **k: Any) -> Any:
        with node.store.engine.connect() as conn:
            at_rebuild.append((
                {r[0] for r in conn.execute(sa.select(S.resources.c.id).where(S.resources.c.type == "Task"))},
                {r[0] for r in conn.execute(sa.select(QF.c.task).where(QF.c.status == "open",
                                                                       QF.c.task.isnot(None)))}))
        return rebuild(*a, **k)

    monkeypatch.setattr(node.store, "ensure_indexes", spy)

    up = "2025-03-20T10:00:00+08:00"
    start = "2025-03-01T09:00:00+08:00"
    visit = {k: v for k, v in _encounter("e1", "p1", start).items() if k != "serviceType"}  # incomplete
    docs = [{"resourceType": "Organization", "id": "h1", "name": "医院"},
            dict(_patient("p1", ID_A), meta={"lastUpdated": up}),
            dict(visit, meta={"lastUpdated": up}),
            # the same visit again: a duplicate, found by the batch phase's cross-record checks
            dict(_encounter("e2", "p1", start), meta={"lastUpdated": up})]
    f = tmp_path / "all.ndjson"
    f.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    imp = Importer(node.store)
    imp.import_all([f], defer_indexes=True)
    with node.store.engine.connect() as conn:
        rows = conn.execute(sa.select(QF.c.rid, QF.c.rule, QF.c.task).where(QF.c.status == "open")).all()
    by_rule = {(r.rid, r.rule): r.task for r in rows}
    # late: the two visits and the registration that came with them — no Task for any
    assert {k for k in by_rule if k[1].startswith("timeliness.")} == {
        ("e1", "timeliness.Encounter"), ("e2", "timeliness.Encounter"), ("p1", "timeliness.Patient")}
    assert all(by_rule[k] is None for k in by_rule if k[1].startswith("timeliness."))
    incomplete = by_rule[("e1", "completeness.Encounter.serviceType")]
    duplicate = by_rule[("e2", "uniqueness.Encounter")]
    tasks = {t for t in by_rule.values() if t is not None}
    assert tasks == {incomplete, duplicate} and None not in (incomplete, duplicate)
    found = node.store.repository().find("Task", "owner=Organization/h1&status=requested")
    assert {r.id for r in found} == tasks
    # the incomplete visit was found per batch: its Task was written before the rebuild; the duplicate
    # (found in the batch phase, AFTER_IMPORT) after it
    assert len(at_rebuild) == 1
    before, assigned = at_rebuild[0]
    assert before == assigned == {incomplete}


def test_the_import_worker_checks_a_record_without_upload_time_as_the_writer_would(node: Any) -> None:
    """A file's record without its sender's upload time is checked in the importer's worker (not left
    to the writing process): received when the worker read it, the same findings as the writer's own
    check at that time, and never a timeliness finding for its old visit."""
    import time

    from phip.quality import engine

    svc = node.ext["quality"]
    old = {k: v for k, v in _encounter("e-old", "p1", "2019-06-01T09:00:00+08:00").items() if k != "serviceType"}
    t0 = time.time_ns() // 1000
    got = engine.Prepare(svc)(old)
    t1 = time.time_ns() // 1000
    assert got is not None
    row, found, _codes = got
    cols = engine.unshaped(row)
    assert t0 <= cols["received"] <= t1
    writer = svc.checker.check("Encounter", "e-old", old, cols["received"], codes=False, timely=False)
    assert [(f[0], f[2], f[3]) for f in found] == [(f.rule, f.path, f.message) for f in writer.findings]
    assert {f[0] for f in found} == {"completeness.Encounter.serviceType"}
    # with its sender's upload time a month after the visit, the same record is late
    stamped = dict(old, meta={"lastUpdated": "2019-07-01T09:00:00+08:00"})
    late = engine.Prepare(svc)(stamped)
    assert late is not None and "timeliness.Encounter" in {f[0] for f in late[1]}
