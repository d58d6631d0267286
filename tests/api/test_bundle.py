"""Transaction and batch Bundles: atomicity, urn:uuid rewriting, conditional references, order."""

from __future__ import annotations

from typing import Any


def _patient(ident: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:phip:test:mrn", "value": ident}],
            "name": [{"family": "样例", "given": ["乙"]}]}


def _obs(subject: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": subject}, "valueQuantity": {"value": 60, "unit": "kg"}}


def test_transaction_rewrites_urn_uuid(api: Any) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b0f0f0e-0000-4000-8000-000000000002", "resource": _obs(
            "urn:uuid:0b0f0f0e-0000-4000-8000-000000000001"), "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:0b0f0f0e-0000-4000-8000-000000000001", "resource": _patient("m1"),
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    out = api.post("/fhir", bundle, expect=200).json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "201 Created"]
    pid = out["entry"][1]["resource"]["id"]
    assert out["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert api.ids(f"Observation?subject=Patient/{pid}") == [out["entry"][0]["resource"]["id"]]


def test_transaction_is_all_or_nothing(api: Any) -> None:
    api.put("/fhir/Patient/keep", {**_patient("k"), "id": "keep"}, expect=201)
    before = api.get("/fhir/$changes?since=0&_count=1000").json()["entry"]  # the PUT, its master Person…
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _patient("m2"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": "Patient/keep"}},
        {"resource": {"resourceType": "Patient", "gender": "bad"}, "request": {"method": "POST", "url": "Patient"}},
    ]}
    r = api.post("/fhir", bundle, expect=422).json()
    assert r["issue"][0]["expression"][0].startswith("Bundle.entry[2]")
    assert api.ids("Patient?identifier=m2") == []
    api.get("/fhir/Patient/keep", expect=200)  # the delete was rolled back too
    changes = api.get("/fhir/$changes?since=0&_count=1000").json()
    assert changes["entry"] == before  # nothing of the bundle reached the change feed


def test_conditional_reference_and_if_none_exist(api: Any) -> None:
    api.create(_patient("m3"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _obs("Patient?identifier=urn:phip:test:mrn|m3"),
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:0b0f0f0e-0000-4000-8000-000000000003", "resource": _patient("m3"),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:phip:test:mrn|m3"}},
        {"resource": _obs("urn:uuid:0b0f0f0e-0000-4000-8000-000000000003"),
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    out = api.post("/fhir", bundle, expect=200).json()
    pid = api.ids("Patient?identifier=m3")
    assert len(pid) == 1
    assert out["entry"][1]["response"]["status"] == "200 OK"
    subjects = {e["resource"]["subject"]["reference"] for e in (out["entry"][0], out["entry"][2])}
    assert subjects == {f"Patient/{pid[0]}"}
    bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _obs("Patient?identifier=nobody"), "request": {"method": "POST", "url": "Observation"}}]}
    assert api.post("/fhir", bad, expect=412).json()["resourceType"] == "OperationOutcome"


def test_batch_reports_each_entry(api: Any) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _patient("b1"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "bad"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient?identifier=b1"}},
        {"request": {"method": "GET", "url": "Patient/none"}},
    ]}
    out = api.post("/fhir", bundle, expect=200).json()
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses[0] == "201 Created" and statuses[1] == "422" and statuses[3] == "404"
    assert out["entry"][2]["resource"]["total"] == 1


def test_transaction_order_and_duplicates(api: Any) -> None:
    api.put("/fhir/Patient/x1", {**_patient("x"), "id": "x1"}, expect=201)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient?_id=x1"}},
        {"resource": {**_patient("x"), "id": "x1", "active": True}, "request": {"method": "PUT", "url": "Patient/x1"}},
        {"request": {"method": "DELETE", "url": "Patient/x1"}},
    ]}
    api.post("/fhir", bundle, expect=400)  # one resource changed twice
    bad = [{"not": "a bundle"}, {"resourceType": "Bundle", "type": "document"},
           {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "FOO", "url": "x"}}]}]
    for b in bad:
        assert api.post("/fhir", b).status_code == 400


def test_transaction_and_batch_responses_follow_prefer_return(api: Any) -> None:
    """``Prefer: return=…`` shapes each write entry's response: the stored resource (the default,
    byte for byte what a read returns), only its location and version, or an OperationOutcome."""
    def tx(kind: str, ident: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": kind, "entry": [
            {"fullUrl": f"urn:uuid:0b0f0f0e-0000-4000-8000-0000000000{ident}", "resource": _patient(f"r{ident}"),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": _obs(f"urn:uuid:0b0f0f0e-0000-4000-8000-0000000000{ident}"),
             "request": {"method": "POST", "url": "Observation"}}]}

    full = api.post("/fhir", tx("transaction", "11"), expect=200).json()
    for e in full["entry"]:
        loc = e["response"]["location"]
        assert e["resource"] == api.get(f"/fhir/{loc}", expect=200).json()
        assert loc.endswith("/_history/1") and e["response"]["etag"] == 'W/"1"'
    for kind in ("transaction", "batch"):
        minimal = api.post("/fhir", tx(kind, "12" if kind == "transaction" else "13"),
                           headers={"Prefer": "return=minimal"}, expect=200).json()
        assert [sorted(e) for e in minimal["entry"]] == [["fullUrl", "response"]] * 2
        assert all(e["response"]["status"] == "201 Created" and "outcome" not in e["response"]
                   for e in minimal["entry"])
        pid = minimal["entry"][0]["response"]["location"].split("/")[1]
        assert api.get(f"/fhir/Patient/{pid}", expect=200).json()["identifier"][0]["value"].startswith("r1")
    oo = api.post("/fhir", tx("transaction", "14"), headers={"Prefer": "return=OperationOutcome"}, expect=200).json()
    for e in oo["entry"]:
        assert "resource" not in e and e["response"]["outcome"]["resourceType"] == "OperationOutcome"
