"""Institution and staff registries (基础资源): write-time checks, mCSD hierarchy queries, statistics."""

from __future__ import annotations

from typing import Any

from tests.registry.builders import DIV, hospital, registry_org


def _codes(r: Any) -> list[str]:
    return [i["details"]["coding"][0]["code"] for i in r.json()["issue"] if i.get("details")]


def _exprs(r: Any) -> list[str]:
    return [e for i in r.json()["issue"] for e in i.get("expression", [])]


def test_valid_organization_is_stored(api: Any) -> None:
    org = api.create(hospital("h1", "510104"))
    assert org["id"] != ""
    api.put("/fhir/Organization/h2", {**hospital("h2", "510104", body="45047515"), "id": "h2"}, expect=201)


def test_bad_credit_code_is_422_with_the_path(api: Any) -> None:
    org = hospital("h1", "510104")
    good = org["identifier"][0]["value"]
    org["identifier"].insert(0, {"system": "urn:phip:id:org", "value": "x"})
    org["identifier"][1]["value"] = good[:-1] + ("0" if good[-1] != "0" else "1")
    r = api.post("/fhir/Organization", org, expect=422)
    assert "PHIP-4601" in _codes(r)
    assert "Organization.identifier[1].value" in _exprs(r)
    assert api.search("Organization")["total"] == 0  # bad input changes nothing


def test_unknown_region_code_is_422(api: Any) -> None:
    org = hospital("h1", "510104")
    org["address"][0]["extension"][0]["valueCode"] = "519999"
    r = api.post("/fhir/Organization", org, expect=422)
    assert "PHIP-4602" in _codes(r)
    assert _exprs(r) == ["Organization.address[0].extension[0].valueCode"]
    # township and village codes below a known county are accepted
    org["address"][0]["extension"][0]["valueCode"] = "510181101201"
    api.post("/fhir/Organization", org, expect=201)


def test_unknown_type_and_level_codes_are_422(api: Any) -> None:
    org = hospital("h1", "510104", level="7Q", kind="A999")
    r = api.post("/fhir/Organization", org, expect=422)
    assert set(_exprs(r)) == {"Organization.type[0].coding[0].code", "Organization.type[1].coding[0].code"}


def test_negative_bed_count_is_422(api: Any) -> None:
    loc = {"resourceType": "Location", "status": "active", "name": "内科病区",
           "physicalType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                                        "code": "wa"}]},
           "extension": [{"url": "urn:phip:ext:beds", "valueInteger": -3}]}
    r = api.post("/fhir/Location", loc, expect=422)
    assert _exprs(r) == ["Location.extension[0]"]
    loc["extension"][0]["valueInteger"] = 30
    api.post("/fhir/Location", loc, expect=201)


def test_practitioner_licence_and_qualification(api: Any) -> None:
    pr = {"resourceType": "Practitioner", "active": True, "name": [{"text": "测试医生"}],
          "identifier": [{"system": "urn:phip:id:practitioner-licence", "value": "11510104200337"}],
          "qualification": [{"identifier": [{"system": "urn:phip:id:practitioner-licence",
                                             "value": "115101042003374"}],
                             "code": {"coding": [{"system": "urn:phip:cs:qualification", "code": "8"}]}}]}
    r = api.post("/fhir/Practitioner", pr, expect=422)
    assert set(_exprs(r)) == {"Practitioner.identifier[0].value", "Practitioner.qualification[0].code.coding[0].code"}
    pr["identifier"][0]["value"] = "115101042003374"
    pr["qualification"][0]["code"]["coding"][0]["code"] = "1"
    # an ID number failing GB 11643 is a warning, never a rejection
    pr["identifier"].append({"system": "urn:oid:2.16.156.10011.1.3", "value": "510104197801113950"})
    r = api.post("/fhir/Practitioner", pr, expect=201)
    assert r.headers.get("X-Phip-Outcome") == "warnings"


def test_large_equipment_device(api: Any) -> None:
    api.put("/fhir/Organization/h1", hospital("h1", "510104") | {"id": "h1"}, expect=201)
    dev = {"resourceType": "Device", "status": "active", "owner": {"reference": "Organization/h1"},
           "type": {"coding": [{"system": "urn:phip:cs:large-equipment", "code": "MRI"}]}}
    api.post("/fhir/Device", dev, expect=201)
    dev["type"]["coding"][0]["code"] = "XRAY-TOY"
    r = api.post("/fhir/Device", dev, expect=422)
    assert _exprs(r) == ["Device.type.coding[0].code"]


def test_resources_without_chinese_systems_are_untouched(api: Any) -> None:
    org = {"resourceType": "Organization", "name": "Acme",
           "identifier": [{"system": "http://example.org", "value": "1"}],
           "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                 "code": "prov"}]}],
           "address": [{"city": "Somewhere", "extension": [{"url": "http://example.org/ext", "valueCode": "999999"}]}]}
    api.post("/fhir/Organization", org, expect=201)


def _tree(api: Any) -> None:
    api.put("/fhir/Organization/wjj", registry_org("wjj", "510181") | {"id": "wjj"}, expect=201)
    api.put("/fhir/Organization/wsy", hospital("wsy", "510181", body="45158380", level="1", kind="C210",
                                              part_of="wjj") | {"id": "wsy"}, expect=201)
    for k, body in (("a", "45158381"), ("b", "45158382")):
        api.put(f"/fhir/Organization/wss-{k}", hospital(f"wss-{k}", "510181", body=body, level="", kind="D600",
                                                        part_of="wsy", beds=None) | {"id": f"wss-{k}"}, expect=201)
    api.put("/fhir/Organization/other", hospital("other", "510104", body="45047519") | {"id": "other"}, expect=201)
    for oid in ("wsy", "wss-a", "other"):
        pr = api.create({"resourceType": "Practitioner", "name": [{"text": f"医生{oid}"}]})
        api.create({"resourceType": "PractitionerRole", "active": True,
                    "practitioner": {"reference": f"Practitioner/{pr['id']}"},
                    "organization": {"reference": f"Organization/{oid}"}})


def test_partof_below_walks_the_hierarchy(api: Any) -> None:
    _tree(api)
    assert sorted(api.ids("Organization?partof:below=Organization/wjj")) == ["wss-a", "wss-b", "wsy"]
    assert sorted(api.ids("Organization?partof:below=wsy")) == ["wss-a", "wss-b"]
    assert api.ids("Organization?partof:below=Organization/wjj&type=urn:phip:cs:org-type|C210") == ["wsy"]
    # the plain parameter is still the core's: one level only
    assert api.ids("Organization?partof=Organization/wjj") == ["wsy"]
    # staff of an institution and every unit under it, with their practitioners (mCSD)
    b = api.search("PractitionerRole?organization:below=Organization/wsy&_include=PractitionerRole:practitioner")
    roles = [e for e in b["entry"] if e["search"]["mode"] == "match"]
    assert len(roles) == 2
    assert len([e for e in b["entry"] if e["search"]["mode"] == "include"]) == 2
    # paging keeps the modifier
    b = api.search("Organization?partof:below=Organization/wjj&_count=2")
    nxt = next(link["url"] for link in b["link"] if link["relation"] == "next")
    assert "partof%3Abelow" in nxt or "partof:below" in nxt
    rest = api.get(nxt[nxt.index("/fhir/"):], expect=200).json()
    assert len(rest["entry"]) == 1
    # the core's _revinclude and _has still work for mCSD
    b = api.search("Organization?_id=wsy&_revinclude=PractitionerRole:organization")
    assert len(b["entry"]) == 2
    assert sorted(api.ids("Organization?_has:PractitionerRole:organization:active=true&partof:below=wjj")) == [
        "wss-a", "wsy"]


def test_below_on_a_non_hierarchy_target_is_400(api: Any) -> None:
    r = api.get("/fhir/PractitionerRole?practitioner:below=Practitioner/x", expect=400)
    assert "PHIP-4680" in _codes(r)


def test_resource_statistics(api: Any) -> None:
    _tree(api)
    api.create({"resourceType": "Location", "status": "active", "name": "病区",
                "managingOrganization": {"reference": "Organization/wss-a"},
                "extension": [{"url": "urn:phip:ext:beds", "valueInteger": 4}]})
    api.create({"resourceType": "Device", "status": "active", "owner": {"reference": "Organization/wsy"},
                "type": {"coding": [{"system": "urn:phip:cs:large-equipment", "code": "CT"}]}})
    s = api.get("/registry/resources?region=510181", expect=200).json()
    assert s["institutions"] == 4
    assert s["staff"] == 2
    assert s["beds"] == 100 + 4  # the township centre's own count + the clinic's ward
    assert s["largeEquipment"] == [{"code": "CT", "class": "乙类", "display": "X线电子计算机断层扫描装置", "count": 1}]
    assert {t["code"]: t["count"] for t in s["byType"]} == {"C210": 1, "D600": 2, "Z200": 1}
    assert DIV  # the builders' extension URL is the one the registry reads
    api.get("/registry/resources", headers={"Authorization": "Bearer nope"}, expect=401)
