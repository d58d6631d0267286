"""Population registry (全员人口): births, deaths, moves, households, population counts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from tests.registry.builders import (
    address,
    birth_bundle,
    id_number,
    patient,
    person_for,
    registry_org,
)


def setup_region(api: Any) -> dict[str, str]:
    api.put("/fhir/Organization/wjj-a", registry_org("wjj-a", "510104") | {"id": "wjj-a"}, expect=201)
    api.put("/fhir/Organization/wjj-b", registry_org("wjj-b", "510181", body="45087110") | {"id": "wjj-b"},
            expect=201)
    mother = api.create(patient("王芳", "female", "1995-11-08", "510104", "wjj-a",
                                idn=id_number("510104", "1995-11-08", 342)))
    father = api.create(patient("肖凯", "male", "1992-10-09", "510104", "wjj-a",
                                idn=id_number("510104", "1992-10-09", 253)))
    api.create({"resourceType": "Group", "type": "person", "actual": True, "active": True, "name": "肖凯户",
                "identifier": [{"system": "urn:phip:org:wjj-a:household", "value": "0059"}],
                "code": {"coding": [{"system": "urn:phip:cs:household-role", "code": "household"}]},
                "managingEntity": {"reference": "Organization/wjj-a"},
                "member": [{"entity": {"reference": f"Patient/{father['id']}"}, "period": {"start": "2020-01-01"}},
                           {"entity": {"reference": f"Patient/{mother['id']}"}, "period": {"start": "2020-01-01"}}]})
    return {"mother": mother["id"], "father": father["id"]}


def ensure_person(api: Any, pid: str) -> str:
    """The Person of a Patient: the master index's if it runs, else one made here."""
    ids = api.ids(f"Person?link=Patient/{pid}")
    if ids:
        return str(ids[0])
    return str(api.create(person_for(pid))["id"])


def _param(params: dict[str, Any], name: str) -> Any:
    return [p for p in params["parameter"] if p["name"] == name]


# -- birth -----------------------------------------------------------------------------------------------
def test_birth_registration_creates_the_newborn_linked_to_the_mother(api: Any) -> None:
    ids = setup_region(api)
    r = api.post("/fhir/$register-birth", birth_bundle(ids["mother"], sex="male"), expect=201)
    out = r.json()
    nb = _param(out, "patient")[0]["resource"]
    assert nb["name"][0]["text"] == "王芳之子" and nb["name"][0]["use"] == "temp"
    assert not any(i.get("system") == "urn:oid:2.16.156.10011.1.3" for i in nb["identifier"])  # no own ID yet
    assert any(i["value"] == "W25000001" for i in nb["identifier"])
    assert nb["managingOrganization"]["reference"] == "Organization/wjj-a"
    assert nb["address"][0]["extension"][0]["valueCode"] == "510104"  # the mother's home
    assert r.headers["Location"].endswith(f"/fhir/Patient/{nb['id']}")
    assert _param(out, "mother")[0]["valueReference"]["reference"] == f"Patient/{ids['mother']}"
    # the mother, FHIR-idiomatically: RelatedPerson MTH of the newborn carrying her ID number
    rp = api.search(f"RelatedPerson?patient=Patient/{nb['id']}&relationship=MTH")["entry"][0]["resource"]
    mother = api.get(f"/fhir/Patient/{ids['mother']}", expect=200).json()
    assert rp["identifier"][0]["value"] == mother["identifier"][0]["value"]
    assert rp["name"][0]["text"] == "王芳"
    # the certificate and its observations are stored, pointing at the newborn
    comp = api.search(f"Composition?subject=Patient/{nb['id']}")["entry"][0]["resource"]
    assert comp["section"][1]["entry"][0]["reference"] == f"Patient/{ids['mother']}"
    obs_ref = comp["section"][0]["entry"][0]["reference"]
    assert api.get(f"/fhir/{obs_ref}", expect=200).json()["subject"]["reference"] == f"Patient/{nb['id']}"
    # the newborn joins the mother's household
    hh = api.get(f"/fhir/Patient/{nb['id']}/$household", expect=200).json()
    assert {e["resource"]["id"] for e in hh["entry"] if e["search"]["mode"] == "include"} == {
        nb["id"], ids["mother"], ids["father"]}
    # the event is recorded
    prov = api.search(f"Provenance?target=Patient/{nb['id']}")["entry"][0]["resource"]
    assert prov["reason"][0]["coding"][0]["code"] == "birth"
    # resubmitting the same certificate changes nothing
    again = api.post("/fhir/$register-birth", birth_bundle(ids["mother"], sex="male"), expect=200).json()
    assert _param(again, "patient")[0]["resource"]["id"] == nb["id"]
    assert len(api.ids("Patient?identifier=urn:phip:org:test-fybjy:birth-certificate|W25000001")) == 1


def test_birth_with_mother_as_related_person_identifier(api: Any) -> None:
    ids = setup_region(api)
    mother = api.get(f"/fhir/Patient/{ids['mother']}", expect=200).json()
    rp = {"resourceType": "RelatedPerson", "patient": {"reference": "urn:uuid:newborn"},
          "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                        "code": "MTH"}]}],
          "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": mother["identifier"][0]["value"]}]}
    out = api.post("/fhir/$register-birth", birth_bundle(None, sex="female", mother_rp=rp, with_obs=False),
                   expect=201).json()
    assert _param(out, "patient")[0]["resource"]["name"][0]["text"] == "王芳之女"
    assert _param(out, "mother")[0]["valueReference"]["reference"] == f"Patient/{ids['mother']}"
    assert len(api.ids("RelatedPerson?relationship=MTH")) == 1


def test_birth_errors_change_nothing(api: Any) -> None:
    ids = setup_region(api)
    b = birth_bundle(ids["mother"])
    b["entry"][0]["resource"]["type"]["coding"][0]["code"] = "EHR-SD-11"
    r = api.post("/fhir/$register-birth", b, expect=422)
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.type"]
    b = birth_bundle("no-such-mother")
    api.post("/fhir/$register-birth", b, expect=422)
    b = birth_bundle(None, with_obs=False)
    r = api.post("/fhir/$register-birth", b, expect=422)  # no mother at all
    assert "PHIP-4643" in r.text
    api.post("/fhir/$register-birth", {"resourceType": "Bundle", "type": "transaction"}, expect=400)
    b = birth_bundle(ids["mother"], born=(date.today() + timedelta(days=3)).isoformat())
    api.post("/fhir/$register-birth", b, expect=422)
    assert len(api.ids("Patient")) == 2  # mother and father only
    assert api.ids("Composition") == []


# -- death --------------------------------------------------------------------------------------------------
def test_death_registration(api: Any) -> None:
    ids = setup_region(api)
    pid = ids["father"]
    person = ensure_person(api, pid)
    cp = api.create({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                     "subject": {"reference": f"Patient/{pid}"}})
    done = api.create({"resourceType": "CarePlan", "status": "completed", "intent": "plan",
                       "subject": {"reference": f"Patient/{pid}"}})
    sr = api.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                     "code": {"text": "随访"}, "subject": {"reference": f"Patient/{pid}"}})
    cr = api.create({"resourceType": "CommunicationRequest", "status": "active",
                     "subject": {"reference": f"Patient/{pid}"}, "payload": [{"contentString": "该随访了"}]})
    other = api.create({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                        "subject": {"reference": f"Patient/{ids['mother']}"}})
    visit = api.create({"resourceType": "Task", "status": "requested", "intent": "order",
                        "description": "上门随访", "for": {"reference": f"Patient/{pid}"}})
    about = api.create({"resourceType": "Task", "status": "requested", "intent": "order", "description": "补录地址",
                        "focus": {"reference": f"Patient/{pid}"}, "for": {"reference": f"Patient/{pid}"}})
    body = {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": "2025-01-14"}]}
    out = api.post(f"/fhir/Patient/{pid}/$register-death", body, expect=200).json()
    pat = _param(out, "patient")[0]["resource"]
    assert pat["deceasedDateTime"] == "2025-01-14" and pat["active"] is False
    assert pat["address"][0]["use"] == "old" and pat["address"][0]["period"]["end"] == "2025-01-14"
    stopped = {p["valueReference"]["reference"] for p in _param(out, "stopped")}
    mine = {f"CarePlan/{cp['id']}", f"ServiceRequest/{sr['id']}", f"CommunicationRequest/{cr['id']}",
            f"Task/{visit['id']}"}
    assert stopped == mine
    assert api.get(f"/fhir/Task/{visit['id']}").json()["status"] == "cancelled"
    assert api.get(f"/fhir/Task/{about['id']}").json()["status"] == "requested"  # work about the record
    assert api.get(f"/fhir/CarePlan/{cp['id']}").json()["status"] == "revoked"
    assert api.get(f"/fhir/CarePlan/{done['id']}").json()["status"] == "completed"
    assert api.get(f"/fhir/CarePlan/{other['id']}").json()["status"] == "active"
    assert api.get(f"/fhir/ServiceRequest/{sr['id']}").json()["status"] == "revoked"
    assert api.get(f"/fhir/Person/{person}").json()["active"] is False
    # household membership ends
    g = api.search("Group?code=urn:phip:cs:household-role|household")["entry"][0]["resource"]
    m = next(m for m in g["member"] if m["entity"]["reference"] == f"Patient/{pid}")
    assert m["inactive"] is True and m["period"]["end"] == "2025-01-14"
    prov = api.search(f"Provenance?target=Patient/{pid}")["entry"][0]["resource"]
    assert prov["reason"][0]["coding"][0]["code"] == "death"
    # again: nothing changes
    out = api.post(f"/fhir/Patient/{pid}/$register-death", body, expect=200).json()
    assert _param(out, "unchanged")[0]["valueBoolean"] is True


def test_death_errors(api: Any) -> None:
    ids = setup_region(api)
    pid = ids["father"]
    future = (date.today() + timedelta(days=2)).isoformat()
    for value, status in ((future, 422), ("1980-01-01", 422), ("not a date", 422)):
        api.post(f"/fhir/Patient/{pid}/$register-death",
                 {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": value}]}, expect=status)
    api.post(f"/fhir/Patient/{pid}/$register-death", {"resourceType": "Parameters", "parameter": []}, expect=422)
    api.post("/fhir/Patient/nobody/$register-death",
             {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": "2025-01-01"}]}, expect=404)
    assert "deceasedDateTime" not in api.get(f"/fhir/Patient/{pid}").json()


# -- moves ---------------------------------------------------------------------------------------------------
def _move(county: str, day: str, **more: Any) -> dict[str, Any]:
    params = [{"name": "address", "valueAddress": address(county, "新家路8号")}, {"name": "date", "valueDate": day}]
    for k, v in more.items():
        params.append({"name": k, **v})
    return {"resourceType": "Parameters", "parameter": params}


def test_address_change_within_the_county(api: Any) -> None:
    ids = setup_region(api)
    out = api.post(f"/fhir/Patient/{ids['mother']}/$change-address", _move("510104", "2025-03-01"),
                   expect=200).json()
    pat = _param(out, "patient")[0]["resource"]
    assert _param(out, "migration")[0]["valueBoolean"] is False
    old, new = pat["address"]
    assert old["use"] == "old" and old["period"] == {"start": "2020-01-01", "end": "2025-03-01"}
    assert new["use"] == "home" and new["period"] == {"start": "2025-03-01"} and new["text"] == "新家路8号"
    assert pat["managingOrganization"]["reference"] == "Organization/wjj-a"
    prov = api.search(f"Provenance?target=Patient/{ids['mother']}")["entry"][0]["resource"]
    assert prov["reason"][0]["coding"][0]["code"] == "address-change"
    assert prov["entity"][0]["what"]["reference"] == f"Patient/{ids['mother']}/_history/1"


def test_migration_between_counties_moves_the_household(api: Any) -> None:
    ids = setup_region(api)
    before = api.get("/registry/population?region=510181", expect=200).json()["total"]
    out = api.post(f"/fhir/Patient/{ids['father']}/$change-address",
                   _move("510181", "2025-04-01", withHousehold={"valueBoolean": True},
                         reason={"valueString": "工作调动"}), expect=200).json()
    assert _param(out, "migration")[0]["valueBoolean"] is True
    assert {p["valueReference"]["reference"] for p in _param(out, "moved")} == {
        f"Patient/{ids['father']}", f"Patient/{ids['mother']}"}
    for pid in (ids["father"], ids["mother"]):
        pat = api.get(f"/fhir/Patient/{pid}").json()
        assert pat["managingOrganization"]["reference"] == "Organization/wjj-b"
    g = api.search("Group?code=urn:phip:cs:household-role|household")["entry"][0]["resource"]
    assert g["managingEntity"]["reference"] == "Organization/wjj-b"
    assert api.get("/registry/population?region=510181", expect=200).json()["total"] == before + 2
    assert api.get("/registry/population?region=510104", expect=200).json()["total"] == 0
    prov = api.search(f"Provenance?target=Patient/{ids['father']}")["entry"][0]["resource"]
    assert prov["reason"][0]["coding"][0]["code"] == "migration"
    assert prov["reason"][1]["text"] == "工作调动"


def test_move_errors(api: Any) -> None:
    ids = setup_region(api)
    pid = ids["mother"]
    r = api.post(f"/fhir/Patient/{pid}/$change-address", _move("519999", "2025-04-01"), expect=422)
    assert "PHIP-4661" in r.text
    api.post(f"/fhir/Patient/{pid}/$change-address", _move("510104", "2019-01-01"), expect=422)  # before
    r = api.post(f"/fhir/Patient/{pid}/$change-address", _move("510105", "2025-04-01"), expect=422)  # no registry
    assert "PHIP-4664" in r.text
    assert len(api.get(f"/fhir/Patient/{pid}").json()["address"]) == 1


# -- households and population -------------------------------------------------------------------------
def test_group_members(api: Any) -> None:
    ids = setup_region(api)
    gid = api.ids("Group")[0]
    b = api.get(f"/fhir/Group/{gid}/$members", expect=200).json()
    assert {e["resource"]["id"] for e in b["entry"][1:]} == {ids["mother"], ids["father"]}
    api.get(f"/fhir/Patient/{ids['mother']}/$household", expect=200)
    lone = api.create(patient("李明", "male", "1970-01-01", "510104", "wjj-a"))
    api.get(f"/fhir/Patient/{lone['id']}/$household", expect=404)


def test_population_counts(api: Any) -> None:
    setup_region(api)
    for k in range(6):
        api.create(patient(f"张{k}", "male" if k % 2 else "female", f"{2020 - k * 15}-06-01", "510181", "wjj-b"))
    # a hospital's copy of a resident is not counted
    api.put("/fhir/Organization/h1", {"resourceType": "Organization", "id": "h1", "name": "医院"}, expect=201)
    api.create(patient("张0", "female", "2020-06-01", "510181", "h1"))
    api.create(patient("无机构", "female", "2020-06-01", "510181", None))
    r = api.get("/registry/population?region=5101&by=sex&asOf=2025-12-31", expect=200).json()
    assert r["total"] == 8 and r["regionName"] == "四川省成都市"
    assert {c["sex"]: c["count"] for c in r["cells"]} == {"female": 4, "male": 4}
    r = api.get("/registry/population?region=510181&by=sex,age&bands=0,15,65&asOf=2025-12-31", expect=200).json()
    assert r["ageBands"] == ["0-14", "15-64", "65+"]
    cells = {(c["sex"], c["age"]): c["count"] for c in r["cells"]}
    # born 2020 (5), 2005 (20), 1990 (35), 1975 (50), 1960 (65), 1945 (80)
    assert cells == {("female", "0-14"): 1, ("male", "15-64"): 2, ("female", "15-64"): 1, ("female", "65+"): 1,
                     ("male", "65+"): 1}
    r = api.get("/registry/population?region=51&by=county", expect=200).json()
    assert {c["county"]: c["count"] for c in r["cells"]} == {"510104": 2, "510181": 6}
    assert r["cells"][0]["countyName"] == "四川省成都市锦江区"
    # the birthday counts: 65 on the day
    r = api.get("/registry/population?region=510181&by=age&bands=0,65&asOf=2025-06-01", expect=200).json()
    assert {c["age"]: c["count"] for c in r["cells"]} == {"0-64": 4, "65+": 2}
    r = api.get("/registry/population?region=510181&by=age&bands=0,65&asOf=2025-05-31", expect=200).json()
    assert {c["age"]: c["count"] for c in r["cells"]} == {"0-64": 5, "65+": 1}


def test_population_query_errors_and_access(api: Any, node: Any) -> None:
    for q in ("region=51x", "by=colour", "bands=a,b", "asOf=tomorrow", "by=sex,sex"):
        api.get(f"/registry/population?{q}", expect=400)
    api.c.get("/registry/population")  # no token
    assert api.c.get("/registry/population").status_code == 401
    doc = node.tokens.issue("clinician", "dr", org="Organization/h1")
    assert api.c.get("/registry/population", headers={"Authorization": f"Bearer {doc}"}).status_code == 403
    mgr = node.tokens.issue("manager", "m", region="510104")
    h = {"Authorization": f"Bearer {mgr}"}
    assert api.c.get("/registry/population?region=510181", headers=h).status_code == 403
    r = api.c.get("/registry/population", headers=h)
    assert r.status_code == 200 and r.json()["region"] == "510104"


def test_index_follows_updates_deletes_and_rebuild(api: Any, node: Any) -> None:
    setup_region(api)
    p = api.create(patient("赵一", "male", "1980-01-01", "510181", "wjj-b"))
    assert api.get("/registry/population?region=510181").json()["total"] == 1
    p["active"] = False
    api.put(f"/fhir/Patient/{p['id']}", p, expect=200)
    assert api.get("/registry/population?region=510181").json()["total"] == 0
    p["active"] = True
    api.put(f"/fhir/Patient/{p['id']}", p, expect=200)
    api.delete(f"/fhir/Patient/{p['id']}", expect=204)
    assert api.get("/registry/population?region=510181").json()["total"] == 0
    before = api.get("/registry/population").json()["total"]
    assert node.ext["registry"].index.rebuild() == before
    assert api.get("/registry/population").json()["total"] == before == 2


def test_registry_desk_roles(api: Any, node: Any) -> None:
    ids = setup_region(api)
    desk = {"Authorization": f"Bearer {node.tokens.issue('clinician', 'desk', org='Organization/wjj-a')}"}
    resident = {"Authorization": f"Bearer {node.tokens.issue('resident', 'r', person='Person/x')}"}
    body = birth_bundle(ids["mother"], sex="male")
    assert api.c.post("/fhir/$register-birth", json=body, headers=resident).status_code == 403
    r = api.c.post("/fhir/$register-birth", json=body, headers=desk)
    assert r.status_code == 201, r.text
    death = {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": "2025-01-14"}]}
    assert api.c.post(f"/fhir/Patient/{ids['father']}/$register-death", json=death,
                      headers=resident).status_code == 403


def test_import_fills_the_index_and_checks_registry_resources(node: Any, tmp_path: Any, caplog: Any) -> None:
    import logging

    import orjson

    from phip.importer.loader import Importer

    bad = registry_org("bad", "510104")
    bad["identifier"][0]["value"] = "12510104450871090X"  # wrong check characters
    lines = [registry_org("wjj-a", "510104") | {"id": "wjj-a"}, bad | {"id": "bad"}]
    lines += [patient(f"李{k}", "female" if k % 2 else "male", "1980-05-05", "510104", "wjj-a", pid=f"p{k}")
              for k in range(5)]
    lines.append(patient("院内", "male", "1980-05-05", "510104", "h-elsewhere", pid="h0"))
    f = tmp_path / "registry.ndjson"
    f.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    with caplog.at_level(logging.WARNING, logger="phip.registry"):
        Importer(node.store, parallel=False).import_all([f])
    from phip.registry.population import parse_query, population

    assert population(node.store, parse_query("510104", None, None, None))["total"] == 5
    assert any("Organization/bad" in r.getMessage() for r in caplog.records)
