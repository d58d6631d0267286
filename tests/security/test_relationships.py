"""Each relationship rule, on reads, searches, totals, includes, $everything and history."""

from __future__ import annotations

from typing import Any

from tests.security.conftest import CANARY, World, ids

CLIN = {"org": "Organization/hospA"}


def test_clinician_sees_treated_patients_only(world: World) -> None:
    doc = world.api("clinician", "dr", **CLIN)
    # an encounter at the clinician's organization within the window, managed there, appointment, referral
    for pid in ("pA", "pAppt", "pRef"):
        doc.get(f"/fhir/Patient/{pid}", expect=200)
    # the same resident's record at another hospital, linked through the master patient index
    doc.get("/fhir/Patient/pA2", expect=200)
    doc.get("/fhir/Observation/oA2", expect=200)
    # no relationship / encounter outside the window
    for pid in ("pB", "pOld", "pF"):
        r = doc.get(f"/fhir/Patient/{pid}", expect=403)
        assert r.headers["x-phip-rule"] == "clinician-treating-relationship"
        assert "clinician-treating-relationship" in r.json()["issue"][0]["diagnostics"]
    r = doc.get("/fhir/Observation/oB", expect=403)
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "PHIP-3403"


def test_search_is_filtered_in_sql_with_right_totals_and_paging(world: World) -> None:
    doc = world.api("clinician", "dr", **CLIN)
    b = doc.search("Patient?_total=accurate&_count=2")
    assert b["total"] == 4
    seen = ids(b)
    nxt = next((link["url"] for link in b["link"] if link["relation"] == "next"), None)
    while nxt:
        page = doc.get(nxt.replace("http://testserver", ""), expect=200).json()
        seen |= ids(page)
        nxt = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen == {"pA", "pA2", "pAppt", "pRef"}
    assert "pB" not in seen and CANARY not in str(b)
    obs = ids(doc.search("Observation"))
    assert obs == {"oA", "oA2"}
    assert doc.search("Observation?_summary=count")["total"] == 2


def test_includes_and_revincludes_do_not_leak(world: World) -> None:
    doc = world.api("clinician", "dr", **CLIN)
    b = doc.search("Encounter?_include=Encounter:subject&_revinclude=Observation:subject")
    everything = str(b)
    assert CANARY not in everything and "pB" not in {e["resource"]["id"] for e in b.get("entry", [])}
    b = doc.search("Patient?_revinclude=Encounter:subject&_revinclude=Observation:subject&_count=100")
    got = {e["resource"]["id"] for e in b.get("entry", [])}
    assert {"eA", "oA", "oA2"} <= got and not {"eB", "oB", "pB"} & got
    b = doc.search("Encounter?_include=Encounter:service-provider")
    assert {"hospA", "eA"} <= {e["resource"]["id"] for e in b.get("entry", [])}


def test_everything_history_and_compartment(world: World) -> None:
    doc = world.api("clinician", "dr", **CLIN)
    doc.get("/fhir/Patient/pB/$everything", expect=403)
    b = doc.get("/fhir/Patient/pA/$everything", expect=200).json()
    assert CANARY not in str(b)
    assert {"pA", "eA", "oA"} <= {e["resource"]["id"] for e in b["entry"]}
    doc.get("/fhir/Patient/pB/_history", expect=403)
    doc.get("/fhir/Observation/oB/_history/1", expect=403)
    h = doc.get("/fhir/_history?_count=500", expect=200).json()
    assert CANARY not in str(h)
    h = doc.get("/fhir/Observation/_history", expect=200).json()
    assert {e["resource"]["id"] for e in h["entry"]} == {"oA", "oA2"}
    doc.get("/fhir/Patient/pB/Observation", expect=403)
    assert ids(doc.search("Patient/pA/Observation")) == {"oA"}
    assert CANARY not in str(doc.search("?_type=Patient,Observation"))


def test_change_feed_and_export_are_for_nodes(world: World) -> None:
    doc = world.api("clinician", "dr", **CLIN)
    r = doc.get("/fhir/$changes", expect=403)
    assert r.headers["x-phip-rule"] == "change-feed-nodes-only"
    doc.get("/fhir/$export", expect=403)
    world.api("node", "county-2").get("/fhir/$changes", expect=200)


def test_public_health_sees_its_region(world: World) -> None:
    cdc = world.api("public-health", "cdc1", region="510105")
    got = ids(cdc.search("Patient?_count=100"))
    assert "pB" in got and "pA" not in got
    cdc.get("/fhir/Observation/oB", expect=200)
    r = cdc.get("/fhir/Observation/oA", expect=403)
    assert r.headers["x-phip-rule"] == "public-health-region"
    # the prefix of a prefecture covers its counties
    pref = world.api("public-health", "cdc2", region="510100")
    assert {"pA", "pB"} <= ids(pref.search("Patient?_count=100"))
    # the region of a Patient without an address comes from its managing organization
    world.node.store.repository().update("Patient", "pN", {"resourceType": "Patient", "id": "pN",
                                                           "managingOrganization": {"reference": "Organization/hospB"}})
    cdc.get("/fhir/Patient/pN", expect=200)


def test_family_doctor_sees_signed_residents(world: World) -> None:
    fd = world.api("family-doctor", "doc", org="Organization/hospB", practitioner="Practitioner/doc1")
    assert ids(fd.search("Patient")) == {"pF"}
    r = fd.get("/fhir/Patient/pB", expect=403)
    assert r.headers["x-phip-rule"] == "family-doctor-signed-residents"


def test_resident_sees_own_and_dependants(world: World) -> None:
    me = world.api("resident", "res1", person="Person/res1")
    assert ids(me.search("Patient")) == {"pR", "pChild"}
    me.get("/fhir/Observation/oChild", expect=200)
    me.get("/fhir/Person/res1", expect=200)
    r = me.get("/fhir/Patient/pA", expect=403)
    assert r.headers["x-phip-rule"] == "resident-own-record"
    me.get("/fhir/Organization/hospA", expect=200)


def test_insurer_sees_its_insured_and_financial_records(world: World) -> None:
    ins = world.api("insurer", "ins", org="Organization/ins1")
    assert ids(ins.search("Patient")) == {"pI"}
    ins.get("/fhir/Coverage/cov1", expect=200)
    r = ins.get("/fhir/Observation/oA", expect=403)
    assert r.headers["x-phip-rule"] == "insurer-coverage"


def test_manager_and_auditor_see_no_records(world: World) -> None:
    for api, rule in ((world.api("manager", "m"), "manager-aggregates-only"),
                      (world.api("auditor", "a"), "auditor-audit-trail-only")):
        r = api.get("/fhir/Patient/pA", expect=403)
        assert r.headers["x-phip-rule"] == rule
        api.get("/fhir/Patient", expect=403)
        assert CANARY not in str(api.get("/fhir", expect=200).json())
    world.api("manager", "m").get("/fhir/Organization/hospA", expect=200)
    world.api("auditor", "a").get("/fhir/Organization/hospA", expect=403)


def test_writes(world: World) -> None:
    doc = world.api("clinician", "dr", **CLIN)
    body: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                            "subject": {"reference": "Patient/pA"}}
    doc.post("/fhir/Observation", body, expect=201)
    # updating or deleting a record the clinician may not see
    ob = world.node.store.repository().read("Observation", "oB").resource()
    doc.put("/fhir/Observation/oB", ob, expect=403)
    doc.delete("/fhir/Observation/oB", expect=403)
    doc.post("/fhir/Organization", {"resourceType": "Organization", "name": "x"}, expect=403)
    world.api("manager", "m").post("/fhir/Observation", body, expect=403)
    # a resident records a Consent about their own record, not someone else's
    me = world.api("resident", "res1", person="Person/res1")
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": "Patient/pR"}, "provision": {"type": "deny"}}
    me.post("/fhir/Consent", consent, expect=201)
    me.post("/fhir/Consent", {**consent, "patient": {"reference": "Patient/pA"}}, expect=403)
    me.post("/fhir/Observation", body, expect=403)
    # a transaction is checked entry by entry (all or nothing)
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": body, "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "DELETE", "url": "Observation/oB"}}]}
    doc.post("/fhir", tx, expect=403)
