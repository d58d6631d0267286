"""Aggregate statistics: counts by dimensions, cells under 5 suppressed (with a secondary
suppression so a lone hidden cell cannot be recovered), never individual rows."""

from __future__ import annotations

from typing import Any


def _load(node: Any) -> None:
    repo = node.store.repository()
    n = 0
    for county, gender, count in (("510104", "male", 7), ("510104", "female", 6), ("510129", "female", 2)):
        for _ in range(count):
            n += 1
            repo.update("Patient", f"p{n}", {
                "resourceType": "Patient", "id": f"p{n}", "gender": gender, "birthDate": "1960-06-01",
                "address": [{"extension": [{"url": "urn:phip:ext:division-code", "valueCode": county}]}]})
            repo.update("Condition", f"c{n}", {
                "resourceType": "Condition", "id": f"c{n}", "subject": {"reference": f"Patient/p{n}"},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]},
                "recordedDate": "2025-04-02"})


def test_counts_with_small_cells_suppressed(api: Any, node: Any) -> None:
    _load(node)
    mgr = node.tokens.issue("manager", "mgr-1")
    h = {"Authorization": f"Bearer {mgr}"}
    r = api.c.get("/stats/count?type=Condition&by=sex,county", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    cells = {(c["sex"], c["county"]): c.get("count") for c in body["cells"]}
    # female/510129 (2) is small; it is the only one, so the next smallest (female/510104, 6) goes too
    assert cells == {("female", "510104"): None, ("female", "510129"): None, ("male", "510104"): 7}
    assert body["suppressed_cells"] == 2 and body["total_shown"] == 7
    assert "entry" not in body and "id" not in str(body["cells"])
    r = api.c.get("/stats/count?type=Patient&by=county&unit=patients", headers=h).json()
    # two cells, one small: both hidden (else the total without `by` would give the small one away)
    assert {c["county"]: c.get("count") for c in r["cells"]} == {"510104": None, "510129": None}
    r = api.c.get("/stats/count?type=Condition&by=code,month,age_band&code=I1*&county=5101", headers=h).json()
    assert r["cells"] == [{"code": "I10", "month": "2025-04", "age_band": r["cells"][0]["age_band"], "count": 15}]


def test_statistics_access_and_errors(api: Any, node: Any) -> None:
    assert api.c.get("/stats/count?type=Condition").status_code == 401
    clin = node.tokens.issue("clinician", "dr", org="Organization/h1")
    r = api.c.get("/stats/count?type=Condition", headers={"Authorization": f"Bearer {clin}"})
    assert r.status_code == 403
    for bad in ("type=Nope", "type=Condition&by=name", "type=Condition&from=2025"):
        r = api.get(f"/stats/count?{bad}")
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
