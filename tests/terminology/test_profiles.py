"""CN profiles checked on write with the node's strictness, and $validate against a named profile."""

from __future__ import annotations

from typing import Any

import pytest

from tests.terminology.conftest import CN_PATIENT, ETHNICITY, cn_patient

BAD_ID = "130402198207290622"  # GB 11643 test vector with a wrong check character


def codes(issues: list[dict[str, Any]]) -> set[str]:
    """The terminology capability's issue codes (other capabilities, e.g. the EMPI, add their own)."""
    found = {i["details"]["coding"][0]["code"] for i in issues if "details" in i}
    return {c for c in found if c.startswith("PHIP-6")}


@pytest.fixture
def term(node: Any) -> Any:
    svc = node.ext["terminology"]
    yield svc
    svc.settings.strictness = "warn"
    svc.settings.profiles = {}


def test_valid_cn_patient_has_no_issues(api: Any) -> None:
    r = api.post("/fhir/Patient", cn_patient(), expect=201, headers={"Prefer": "return=OperationOutcome"})
    assert r.json()["issue"][0]["severity"] == "information"  # All OK


def test_warn_is_the_default_nothing_lost(api: Any, term: Any) -> None:
    assert term.settings.strictness == "warn"
    bad = cn_patient(BAD_ID)
    bad["extension"][1]["valueCodeableConcept"]["coding"][0]["code"] = "77"
    r = api.post("/fhir/Patient", bad, expect=201, headers={"Prefer": "return=OperationOutcome"})
    issues = r.json()["issue"]
    assert codes(issues) == {"PHIP-6120", "PHIP-6101"}
    assert all(i["severity"] == "warning" for i in issues)
    r = api.post("/fhir/Patient", bad, expect=201)
    assert int(r.headers["X-Phip-Issues"]) >= 2
    stored = api.get("/fhir" + r.headers["Location"].split("/fhir")[1].split("/_history")[0], expect=200).json()
    assert stored["identifier"][0]["value"] == BAD_ID  # kept as sent


def test_warnings_in_transaction_entry_outcome(api: Any) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": cn_patient(BAD_ID), "request": {"method": "POST", "url": "Patient"}},
        {"resource": cn_patient(), "request": {"method": "POST", "url": "Patient"}}]}
    out = api.post("/fhir", bundle, expect=200).json()
    first, second = out["entry"][0]["response"], out["entry"][1]["response"]
    assert first["status"].startswith("201") and codes(first["outcome"]["issue"]) == {"PHIP-6120"}
    assert "outcome" not in second


def test_reject_mode(api: Any, term: Any) -> None:
    term.settings.strictness = "reject"
    r = api.post("/fhir/Patient", cn_patient(BAD_ID), expect=422)
    assert codes(r.json()["issue"]) == {"PHIP-6120"}
    assert api.search("Patient")["total"] == 0  # nothing stored
    api.post("/fhir/Patient", cn_patient(), expect=201)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": cn_patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": cn_patient(BAD_ID), "request": {"method": "POST", "url": "Patient"}}]}
    api.post("/fhir", bundle, expect=422)
    assert api.search("Patient")["total"] == 1  # the transaction changed nothing


def test_off_mode(api: Any, term: Any) -> None:
    term.settings.strictness = "off"
    r = api.post("/fhir/Patient", cn_patient(BAD_ID), expect=201, headers={"Prefer": "return=OperationOutcome"})
    assert codes(r.json()["issue"]) == set()


def test_profiles_apply_only_when_claimed_or_configured(api: Any, term: Any) -> None:
    plain = cn_patient(BAD_ID)
    del plain["meta"]
    term.settings.strictness = "reject"
    api.post("/fhir/Patient", plain, expect=201)  # claims no profile: not checked
    term.settings.profiles = {"Patient": [CN_PATIENT]}  # [terminology.profiles] Patient = [...]
    api.post("/fhir/Patient", plain, expect=422)
    # an unknown profile claimed by a resource is ignored (the R4 examples claim many)
    other = cn_patient(BAD_ID, meta={"profile": ["http://example.org/StructureDefinition/x"]})
    term.settings.profiles = {}
    api.post("/fhir/Patient", other, expect=201)


def test_required_binding_and_other_profiles(api: Any, term: Any) -> None:
    term.settings.strictness = "reject"
    cond = {"resourceType": "Condition", "meta": {"profile": ["urn:phip:sd:cn-condition"]},
            "subject": {"reference": "Patient/x"},
            "code": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "I10"}]}}
    api.post("/fhir/Condition", cond, expect=201)
    cond["code"]["coding"][0]["code"] = "I99.99"
    r = api.post("/fhir/Condition", cond, expect=422)
    assert codes(r.json()["issue"]) == {"PHIP-6101"}
    del cond["code"]
    assert codes(api.post("/fhir/Condition", cond, expect=422).json()["issue"]) == {"PHIP-6110"}
    obs = {"resourceType": "Observation", "meta": {"profile": ["urn:phip:sd:cn-observation"]}, "status": "final",
           "code": {"text": "血糖"},
           "valueQuantity": {"value": 6.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}}
    api.post("/fhir/Observation", obs, expect=201)
    obs["valueQuantity"]["code"] = "mmol//L"
    api.post("/fhir/Observation", obs, expect=422)


def test_validate_with_named_profile(api: Any) -> None:
    plain = cn_patient(BAD_ID)
    del plain["meta"]
    r = api.post(f"/fhir/Patient/$validate?profile={CN_PATIENT}", plain, expect=200).json()
    assert codes(r["issue"]) == {"PHIP-6120"} and r["issue"][0]["severity"] == "error"
    ok = api.post(f"/fhir/Patient/$validate?profile={CN_PATIENT}", cn_patient(), expect=200).json()
    assert ok["issue"][0]["severity"] == "information"
    # the Parameters form
    bad_eth = cn_patient()
    bad_eth["extension"][1]["valueCodeableConcept"]["coding"] = [{"system": ETHNICITY, "code": "00"}]
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad_eth},
                                                         {"name": "profile", "valueUri": CN_PATIENT}]}
    assert codes(api.post("/fhir/Patient/$validate", body, expect=200).json()["issue"]) == {"PHIP-6101"}
    # without a profile: the plain structural validation only
    assert api.post("/fhir/Patient/$validate", plain, expect=200).json()["issue"][0]["severity"] == "information"
    api.post("/fhir/Patient/$validate?profile=urn:example:none", plain, expect=404)
    api.post("/fhir/Condition/$validate?profile=" + CN_PATIENT, {"resourceType": "Condition",
                                                                  "subject": {"reference": "Patient/x"}}, expect=400)
