"""$match, IHE PIXm, $merge/$unmerge, review queue and manual link/unlink."""

from __future__ import annotations

from typing import Any

from .builders import P, rid, zhang_san
from .test_linking import person_of

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def _params(resource: dict[str, Any], only: bool = False, count: int = 5) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": resource},
        {"name": "onlyCertainMatches", "valueBoolean": only},
        {"name": "count", "valueInteger": count}]}


def test_match_returns_scored_graded_candidates(api: Any) -> None:
    n = rid("510104", "1980-03-04", 123)
    a = api.create(zhang_san().idno(n).build())
    api.create(P("李娜", family="李", given="娜").born("1999-09-09").sex("female").build())
    b = api.post("/fhir/Patient/$match", _params(P("张三丰", family="张", given="三丰").born("1980-03-04")
                                                 .sex("male").idno(n).build()), expect=200).json()
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset"
    assert [e["resource"]["id"] for e in b["entry"]] == [a["id"]]
    e = b["entry"][0]
    assert 0.99 < e["search"]["score"] <= 1
    assert e["search"]["extension"][0] == {"url": MATCH_GRADE, "valueCode": "certain"}
    # a weaker query: homophone name, birth date only, no ID → not certain
    weak = P("张三峰", family="张", given="三峰").born("1980-03-04").build()
    b2 = api.post("/fhir/Patient/$match", _params(weak), expect=200).json()
    grades = [e["search"]["extension"][0]["valueCode"] for e in b2.get("entry", [])]
    assert grades and "certain" not in grades
    b3 = api.post("/fhir/Patient/$match", _params(weak, only=True), expect=200).json()
    assert b3.get("entry", []) == []
    api.post("/fhir/Patient/$match", {"resourceType": "Parameters"}, expect=400)


def test_pixm_cross_references_identifiers(api: Any) -> None:
    n = rid("510104", "1980-03-04", 123)
    a = api.create(zhang_san().idno(n).mrn("510104-rmyy", "A1").build())
    b = api.create(zhang_san().idno(n).mrn("510104-wsy", "B2").build())
    r = api.get("/fhir/Patient/$ihe-pix?sourceIdentifier=urn:phip:org:510104-rmyy:mrn|A1", expect=200).json()
    vals = {(p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
            for p in r["parameter"] if p["name"] == "targetIdentifier"}
    assert ("urn:phip:org:510104-wsy:mrn", "B2") in vals
    refs = {p["valueReference"]["reference"] for p in r["parameter"] if p["name"] == "targetId"}
    assert refs == {f"Patient/{a['id']}", f"Patient/{b['id']}"}
    r2 = api.get("/fhir/Patient/$ihe-pix?sourceIdentifier=urn:phip:org:510104-rmyy:mrn|A1"
                 "&targetSystem=urn:phip:org:510104-wsy:mrn", expect=200).json()
    assert [p["valueIdentifier"]["value"] for p in r2["parameter"]] == ["B2"]
    api.get("/fhir/Patient/$ihe-pix?sourceIdentifier=urn:x|nobody", expect=404)
    api.get("/fhir/Patient/$ihe-pix?sourceIdentifier=urn:phip:org:510104-rmyy:mrn|A1&targetSystem=urn:none",
            expect=403)


def test_merge_and_unmerge(api: Any) -> None:
    src = api.create(zhang_san().mrn("510104-rmyy", "1").build())
    tgt = api.create(P("李四", family="李", given="四").born("1970-01-01").sex("male").build())
    enc = api.create({"resourceType": "Encounter", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                      "subject": {"reference": f"Patient/{src['id']}"}})
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{src['id']}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{tgt['id']}"}}]}
    out = api.post("/fhir/Patient/$merge", body, expect=200).json()
    assert any(p["name"] == "result" for p in out["parameter"])
    s = api.get(f"/fhir/Patient/{src['id']}", expect=200).json()
    assert s["active"] is False
    assert s["link"] == [{"other": {"reference": f"Patient/{tgt['id']}"}, "type": "replaced-by"}]
    t = api.get(f"/fhir/Patient/{tgt['id']}", expect=200).json()
    assert {"other": {"reference": f"Patient/{src['id']}"}, "type": "replaces"} in t["link"]
    e = api.get(f"/fhir/Encounter/{enc['id']}", expect=200).json()
    assert e["subject"]["reference"] == f"Patient/{tgt['id']}"
    assert person_of(api, src["id"])["id"] == person_of(api, tgt["id"])["id"]
    # undo
    api.post("/fhir/Patient/$unmerge", {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{src['id']}"}},
        {"name": "reason", "valueString": "wrong patient"}]}, expect=200)
    e = api.get(f"/fhir/Encounter/{enc['id']}", expect=200).json()
    assert e["subject"]["reference"] == f"Patient/{src['id']}"
    s = api.get(f"/fhir/Patient/{src['id']}", expect=200).json()
    assert "link" not in s and s.get("active", True) is True
    assert person_of(api, src["id"])["id"] != person_of(api, tgt["id"])["id"]


def test_review_queue_and_decisions(api: Any) -> None:
    # same name and birth date, different county and no other evidence: a potential match
    a = api.create(P("刘洋", family="刘", given="洋").born("1988-08-08").sex("female")
                   .addr("510104", "新华路1号").build())
    b = api.create(P("刘洋", family="刘", given="洋").born("1988-08-08").sex("female")
                   .addr("510129", "东岭镇玉水村").build())
    items = api.get("/fhir/empi/review", expect=200).json()["items"]
    assert items, "a potential match should be queued"
    it = items[0]
    assert {it["patient"], it["candidate"]} == {f"Patient/{a['id']}", f"Patient/{b['id']}"}
    assert it["fields"]["name"]["level"] == "exact" and "weight" in it["fields"]["birth"]
    assert person_of(api, a["id"])["id"] != person_of(api, b["id"])["id"]
    r = api.post(f"/fhir/empi/review/{it['id']}", {"decision": "link", "reason": "same person, moved"},
                 expect=200).json()
    assert r["status"] == "linked"
    pa = person_of(api, a["id"])
    assert pa["id"] == person_of(api, b["id"])["id"]
    assert {lk["assurance"] for lk in pa["link"]} == {"level4"}
    api.post(f"/fhir/empi/review/{it['id']}", {"decision": "link"}, expect=409)
    # unlink: two people again, and a later update does not re-link them
    api.post("/fhir/empi/unlink", {"patient": f"Patient/{b['id']}", "reason": "twins"}, expect=200)
    assert person_of(api, a["id"])["id"] != person_of(api, b["id"])["id"]
    doc = api.get(f"/fhir/Patient/{b['id']}", expect=200).json()
    doc["telecom"] = [{"system": "phone", "value": "15400009999"}]
    api.put(f"/fhir/Patient/{b['id']}", doc, expect=200)
    assert person_of(api, a["id"])["id"] != person_of(api, b["id"])["id"]


def test_steward_operations_need_a_steward_role(api: Any, node: Any) -> None:
    tok = node.tokens.issue("clinician", "dr-x")
    r = api.c.get("/fhir/empi/review", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 403
    r = api.c.get("/fhir/empi/review")
    assert r.status_code == 401


def test_pinyin_name_search(api: Any) -> None:
    a = api.create(P("张伟", family="张", given="伟").born("1980-01-05").sex("male").build())
    b = api.create(P("張偉", family="張", given="偉").born("1990-02-02").sex("male").build())
    c = api.create(P("章维", family="章", given="维").born("1980-07-07").sex("male").build())
    api.create(P("李娜", family="李", given="娜").born("1980-01-05").sex("female").build())
    got = {e["resource"]["id"] for e in api.get("/fhir/empi/pinyin?name=zhangwei", expect=200).json()["entry"]}
    assert got == {a["id"], b["id"], c["id"]}
    got = {e["resource"]["id"] for e in api.get("/fhir/empi/pinyin?name=张维&birthyear=1980", expect=200)
           .json()["entry"]}
    assert got == {a["id"], c["id"]}
    api.get("/fhir/empi/pinyin?name=123", expect=400)
