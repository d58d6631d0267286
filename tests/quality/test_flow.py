"""Findings at ingest through the REST API, the Task flow, and the scorecard (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from phip.cn import gb11643

CST = timezone(timedelta(hours=8))
ID_SYS = "urn:oid:2.16.156.10011.1.3"
GOOD_ID = gb11643.generate("510104", date(1980, 5, 17), 123)  # odd sequence: male
BAD_ID = GOOD_ID[:17] + ("0" if GOOD_ID[17] != "0" else "1")


def _org(api: Any, oid: str = "h1") -> None:
    api.put(f"/fhir/Organization/{oid}", {"resourceType": "Organization", "id": oid, "name": f"医院{oid}"},
            expect=201)


def _patient(pid: str, id_number: str, org: str = "h1", **kw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": ID_SYS, "value": id_number}],
        "name": [{"text": "王小明", "family": "王", "given": ["小明"]}],
        "gender": "male", "birthDate": "1980-05-17",
        "telecom": [{"system": "phone", "value": "13800001111"}],
        "address": [{"text": "四川省成都市锦江区"}],
        "managingOrganization": {"reference": f"Organization/{org}"},
    }
    p.update(kw)
    return p


def _now(hours: float = 0) -> str:
    """An instant ``hours`` from now, China time (events sent as they happen are on time)."""
    return (datetime.now(CST) + timedelta(hours=hours)).isoformat(timespec="seconds")


def _encounter(eid: str, pid: str, start: str | None = None) -> dict[str, Any]:
    start = start or _now(-1)
    return {"resourceType": "Encounter", "id": eid, "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
            "participant": [{"individual": {"reference": "Practitioner/d1"}}],
            "serviceType": {"text": "内科"}, "period": {"start": start},
            "serviceProvider": {"reference": "Organization/h1"}}


def test_finding_task_and_fix_by_resubmission(api: Any) -> None:
    _org(api)
    api.put("/fhir/Patient/p1", _patient("p1", BAD_ID), expect=201)
    body = api.get("/quality/findings?subject=Patient/p1", expect=200).json()
    rules = {f["rule"]: f for f in body["findings"]}
    f = rules["conformance.Patient.id-number"]
    assert f["dimension"] == "conformance" and f["path"] == "Patient.identifier" and f["status"] == "open"
    assert f["institution"] == "h1" and f["resource"] == "Patient/p1"
    task = api.get(f"/fhir/{f['task']}", expect=200).json()
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["owner"] == {"reference": "Organization/h1"}
    assert task["focus"] == {"reference": "Patient/p1"} and task["for"] == {"reference": "Patient/p1"}
    assert task["code"]["coding"][0]["code"] == "conformance.Patient.id-number"
    # the institution sends a corrected record: re-checked and closed
    api.put("/fhir/Patient/p1", _patient("p1", GOOD_ID), expect=200)
    after = api.get("/quality/findings?subject=Patient/p1&rule=conformance.Patient.id-number", expect=200).json()
    assert [x["status"] for x in after["findings"]] == ["resolved"]
    assert api.get(f"/fhir/{f['task']}", expect=200).json()["status"] == "completed"
    assert api.get("/quality/findings?subject=Patient/p1&status=open", expect=200).json()["total"] == 0
    # the Task can be found by its owner
    assert api.ids("Task?owner=Organization/h1&status=completed") == [task["id"]]
    # the defect comes back: the finding reopens, and so does its Task
    api.put("/fhir/Patient/p1", _patient("p1", BAD_ID), expect=200)
    again = api.get("/quality/findings?subject=Patient/p1&status=open", expect=200).json()
    assert [x["rule"] for x in again["findings"]] == ["conformance.Patient.id-number"]
    assert api.get(f"/fhir/{f['task']}", expect=200).json()["status"] == "requested"


def test_cross_record_rules(api: Any) -> None:
    _org(api)
    api.put("/fhir/Patient/p2", _patient("p2", GOOD_ID), expect=201)
    # the same encounter twice: the second is the duplicate
    start = _now(-1)  # one start for both (two calls of _now may fall in different seconds)
    api.put("/fhir/Encounter/e1", _encounter("e1", "p2", start), expect=201)
    api.put("/fhir/Encounter/e2", _encounter("e2", "p2", start), expect=201)
    dup = api.get("/quality/findings?rule=uniqueness.Encounter", expect=200).json()["findings"]
    assert [(x["resource"], x["status"]) for x in dup] == [("Encounter/e2", "open")]
    assert dup[0]["institution"] == "h1" and dup[0]["subject"] == "Patient/p2"
    # a pregnancy diagnosis for a man
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p2"},
            "encounter": {"reference": "Encounter/e1"},
            "code": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "O80"}]},
            "onsetDateTime": _now(-2)[:10], "recordedDate": _now(-0.5),
            "recorder": {"reference": "Practitioner/d1"}}
    api.put("/fhir/Condition/c1", cond, expect=201)
    got = api.get("/quality/findings?resource=Condition/c1", expect=200).json()["findings"]
    assert [x["rule"] for x in got] == ["consistency.Condition.pregnancy-male"]
    assert got[0]["institution"] == "h1"  # from its encounter
    # an event before the subject's birth
    cond2 = dict(cond, id="c2", code={"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "J06.9"}]},
                 onsetDateTime="1970-01-02", recordedDate=_now(-0.5))
    api.put("/fhir/Condition/c2", cond2, expect=201)
    got = {x["rule"] for x in api.get("/quality/findings?resource=Condition/c2", expect=200).json()["findings"]}
    assert got == {"consistency.Condition.event-in-life"}
    # deleting the duplicate withdraws its finding
    api.delete("/fhir/Encounter/e2", expect=204)
    dup = api.get("/quality/findings?rule=uniqueness.Encounter", expect=200).json()["findings"]
    assert [x["status"] for x in dup] == ["cancelled"]


def test_scorecard_and_filters(api: Any) -> None:
    _org(api, "h1")
    _org(api, "h2")
    for i in range(10):  # ten different men at each institution; one bad ID number at h1
        nid = gb11643.generate("510104", date(1980, 5, 17), 101 + 2 * i)
        name = [{"text": f"王{'一二三四五六七八九十'[i]}明"}]
        api.put(f"/fhir/Patient/a{i}", _patient(f"a{i}", nid if i else BAD_ID, org="h1", name=name), expect=201)
        api.put(f"/fhir/Patient/b{i}", _patient(f"b{i}", nid, org="h2", name=name), expect=201)
    sc = api.get("/quality/scorecard", expect=200).json()
    assert sc["threshold"] == 0.98
    rows = {r["institution"]: r for r in sc["institutions"]}
    # each institution's own Organization record counts too: 11 records, one failing conformance
    assert rows["h1"]["received"] == 11 and rows["h1"]["failing"]["conformance"] == 1
    assert abs(rows["h1"]["rates"]["conformance"] - 10 / 11) < 1e-9
    assert rows["h2"]["rates"]["conformance"] == 1.0
    assert sc["below"] == ["h1"] and rows["h1"]["below"] == ["conformance"]
    assert api.get("/quality/scorecard?threshold=0.85", expect=200).json()["below"] == []
    assert [r["institution"] for r in api.get("/quality/scorecard?institution=h2", expect=200).json()["institutions"]
            ] == ["h2"]
    f = api.get("/quality/findings?institution=h1&dimension=conformance", expect=200).json()
    assert f["total"] == 1 and f["findings"][0]["resource"] == "Patient/a0"
    assert api.get("/quality/findings?institution=h2", expect=200).json()["total"] == 0
    page = api.get("/quality/findings?_count=1", expect=200).json()
    assert page["count"] == 1
    # bad input: a 400 OperationOutcome naming the parameter; no token: 401
    r = api.get("/quality/findings?colour=red", expect=400).json()
    assert r["resourceType"] == "OperationOutcome" and r["issue"][0]["expression"] == ["colour"]
    api.get("/quality/findings?date=yesterday", expect=400)
    api.get("/quality/scorecard?threshold=2", expect=400)
    assert api.c.get("/quality/scorecard").status_code == 401


def test_institution_token_sees_only_its_own(api: Any, node: Any) -> None:
    _org(api, "h1")
    _org(api, "h2")
    api.put("/fhir/Patient/x1", _patient("x1", BAD_ID, org="h1"), expect=201)
    api.put("/fhir/Patient/x2", _patient("x2", BAD_ID, org="h2"), expect=201)
    tok = node.tokens.issue("clinician", "dr-li", org="Organization/h2")
    r = api.c.get("/quality/findings", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200 and {f["institution"] for f in r.json()["findings"]} == {"h2"}
    r = api.c.get("/quality/findings?institution=h1", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 403


def test_recheck_is_idempotent(api: Any, node: Any) -> None:
    _org(api)
    api.put("/fhir/Patient/r1", _patient("r1", BAD_ID), expect=201)
    api.put("/fhir/Patient/r2", _patient("r2", GOOD_ID, name=[{"text": "李四"}]), expect=201)
    svc = node.ext["quality"]
    before = svc.scorecard()
    open_before = api.get("/quality/findings?status=open", expect=200).json()["findings"]
    assert svc.recheck() >= 3
    after = svc.scorecard()
    assert after["institutions"] == before["institutions"]
    open_after = api.get("/quality/findings?status=open", expect=200).json()["findings"]
    assert [(f["resource"], f["rule"], f["task"]) for f in open_after] == \
        [(f["resource"], f["rule"], f["task"]) for f in open_before]
