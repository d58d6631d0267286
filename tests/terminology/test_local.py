"""Local codes: an institution's code system and ConceptMap; at ingest the standard coding is added
beside the local one (which is kept); unmapped local codes are reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phip.terminology.loader import load_local
from tests.terminology.conftest import ICD10_CN

LOCAL = "urn:phip:org:hosp1:cs:diagnosis"
TAG = {"system": "urn:phip:cs:terminology-content", "code": "local"}


def register(api: Any) -> None:
    api.put("/fhir/CodeSystem/hosp1-dx", {
        "resourceType": "CodeSystem", "id": "hosp1-dx", "meta": {"tag": [TAG]}, "url": LOCAL, "status": "active",
        "content": "complete", "concept": [{"code": "GXY", "display": "高血压"}, {"code": "TNB", "display": "糖尿病"},
                                           {"code": "QT", "display": "其他"}]}, expect=201)
    api.put("/fhir/ConceptMap/hosp1-dx", {
        "resourceType": "ConceptMap", "id": "hosp1-dx", "meta": {"tag": [TAG]}, "url": f"{LOCAL}:map",
        "status": "active", "group": [{"source": LOCAL, "target": ICD10_CN, "element": [
            {"code": "GXY", "target": [{"code": "I10", "equivalence": "equivalent"}]},
            {"code": "TNB", "target": [{"code": "E11", "equivalence": "equivalent"}]}]}]}, expect=201)


def condition(code: str, display: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": LOCAL, "code": code, "display": display}], "text": display}}


def test_local_code_gains_standard_coding(api: Any) -> None:
    register(api)
    created = api.create(condition("GXY", "高血压"))
    codings = created["code"]["coding"]
    assert codings[0] == {"system": LOCAL, "code": "GXY", "display": "高血压"}  # the original is kept, first
    assert {"system": ICD10_CN, "code": "I10", "display": "Essential (primary) hypertension"} in codings
    # stored that way: found by the standard code
    assert created["id"] in api.ids(f"Condition?code={ICD10_CN}|I10")
    # a coding already present is not duplicated on update
    again = api.put(f"/fhir/Condition/{created['id']}", created, expect=200).json()
    assert len(again["code"]["coding"]) == 2


def test_unmapped_local_codes_are_reported(api: Any) -> None:
    register(api)
    r = api.post("/fhir/Condition", condition("QT", "其他"), expect=201,
                 headers={"Prefer": "return=OperationOutcome"})
    issues = r.json()["issue"]
    assert any(i["details"]["coding"][0]["code"] == "PHIP-6201" and i["severity"] == "warning" for i in issues)
    api.post("/fhir/Condition", condition("QT", "其他"), expect=201)
    api.post("/fhir/Condition", condition("ZZ9", "未登记"), expect=201)  # not even in the local code system
    report = api.get(f"/terminology/unmapped?system={LOCAL}", expect=200).json()
    counts = {c["code"]: c["count"] for c in report["codes"]}
    assert counts == {"QT": 2, "ZZ9": 1}
    assert report["codes"][0]["last_resource"].startswith("Condition/")


def test_mapping_added_later_applies_to_later_writes(api: Any) -> None:
    register(api)
    first = api.create(condition("QT", "其他"))
    assert len(first["code"]["coding"]) == 1
    cm = api.get("/fhir/ConceptMap/hosp1-dx", expect=200).json()
    cm["group"][0]["element"].append({"code": "QT", "target": [{"code": "R69", "equivalence": "wider"}]})
    api.put("/fhir/ConceptMap/hosp1-dx", cm, expect=200)
    second = api.create(condition("QT", "其他"))
    assert {c["code"] for c in second["code"]["coding"]} == {"QT", "R69"}


def test_mapping_in_transaction_and_local_csv(api: Any, node: Any, tmp_path: Path) -> None:
    csv = tmp_path / "local_codes.csv"
    # the columns of a synthetic region's truth/local_codes.csv
    csv.write_text("org_id,domain,local_system,local_code,local_display,standard_system,standard_code\n"
                   "hosp2,sex,urn:phip:org:hosp2:cs:sex,M,男,urn:oid:2.16.156.10011.2.3.3.4,1\n"
                   "hosp2,sex,urn:phip:org:hosp2:cs:sex,F,女,urn:oid:2.16.156.10011.2.3.3.4,2\n", encoding="utf-8")
    report = load_local(node.store, csv)
    assert report.written == 2
    patient = {"resourceType": "Patient", "extension": [{"url": "urn:phip:ext:sex-gbt2261", "valueCodeableConcept": {
        "coding": [{"system": "urn:phip:org:hosp2:cs:sex", "code": "F"}]}}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient, "request": {"method": "POST", "url": "Patient"}}]}
    out = api.post("/fhir", bundle, expect=200).json()
    pid = out["entry"][0]["response"]["location"].split("/")[1]
    stored = api.get(f"/fhir/Patient/{pid}", expect=200).json()
    codings = stored["extension"][0]["valueCodeableConcept"]["coding"]
    assert codings[1] == {"system": "urn:oid:2.16.156.10011.2.3.3.4", "code": "2", "display": "女性"}


def test_bulk_import_maps_and_counts_in_one_batch(node: Any, tmp_path: Path) -> None:
    import json

    from phip.importer.loader import Importer

    api_like = node.store.repository()
    api_like.update("CodeSystem", "hosp1-dx", {
        "resourceType": "CodeSystem", "id": "hosp1-dx", "meta": {"tag": [TAG]}, "url": LOCAL, "status": "active",
        "content": "complete", "concept": [{"code": "GXY"}, {"code": "QT"}]})
    api_like.update("ConceptMap", "hosp1-dx", {
        "resourceType": "ConceptMap", "id": "hosp1-dx", "meta": {"tag": [TAG]}, "url": f"{LOCAL}:map",
        "status": "active", "group": [{"source": LOCAL, "target": ICD10_CN, "element": [
            {"code": "GXY", "target": [{"code": "I10", "equivalence": "equivalent"}]}]}]})
    lines = []
    for i in range(6):
        c = condition("GXY" if i % 2 else "QT", "x")
        c["id"] = f"c{i}"
        lines.append(json.dumps(c, ensure_ascii=False))
    f = tmp_path / "Condition.ndjson"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    Importer(node.store, parallel=False).import_all([f])
    stored = node.store.repository().read("Condition", "c1").resource()
    assert {c["code"] for c in stored["code"]["coding"]} == {"GXY", "I10"}
    rows = node.ext["terminology"].unmapped(LOCAL)
    assert [(r["code"], r["count"]) for r in rows] == [("QT", 3)]
    assert rows[0]["last_resource"] in {"Condition/c0", "Condition/c2", "Condition/c4"}
