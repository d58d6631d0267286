"""The FHIR terminology operations, type and instance level, GET and POST, on both backends."""

from __future__ import annotations

from typing import Any

from phip.terminology import content as C
from tests.terminology.conftest import ETHNICITY, ICD10_CN, SEX, params


def test_lookup(api: Any) -> None:
    p = params(api.get(f"/fhir/CodeSystem/$lookup?system={ETHNICITY}&code=01", expect=200).json())
    assert p["display"] == "汉族" and p["version"] == "1991"
    assert {"code": "alpha", "value": "HA"} in p["property"]
    # instance level, and POST with a Parameters body carrying a coding
    p = params(api.get("/fhir/CodeSystem/gbt2260/$lookup?code=510104", expect=200).json())
    assert p["display"] == "锦江区"
    assert {"code": "parent", "value": "510100"} in p["property"]
    body = {"resourceType": "Parameters",
            "parameter": [{"name": "coding", "valueCoding": {"system": SEX, "code": "9"}}]}
    assert params(api.post("/fhir/CodeSystem/$lookup", body, expect=200).json())["display"] == "未说明的性别"
    # ICD-10 (served from the WHO content): children are listed as properties
    p = params(api.get(f"/fhir/CodeSystem/$lookup?system={ICD10_CN}&code=A00", expect=200).json())
    assert {"code": "child", "value": "A00.1"} in p["property"]


def test_lookup_errors(api: Any) -> None:
    r = api.get(f"/fhir/CodeSystem/$lookup?system={SEX}&code=7", expect=404)
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "PHIP-6002"
    api.get("/fhir/CodeSystem/$lookup?system=urn:example:nothing&code=1", expect=404)
    api.get("/fhir/CodeSystem/$lookup?code=1", expect=400)
    api.get("/fhir/CodeSystem/no-such-id/$lookup?code=1", expect=404)


def test_validate_code_codesystem(api: Any) -> None:
    p = params(api.get(f"/fhir/CodeSystem/$validate-code?url={SEX}&code=1", expect=200).json())
    assert p["result"] is True and p["display"] == "男性"
    p = params(api.get(f"/fhir/CodeSystem/$validate-code?url={SEX}&code=3", expect=200).json())
    assert p["result"] is False and "not a code" in p["message"]
    p = params(api.get("/fhir/CodeSystem/gb3304/$validate-code?code=01&display=回族", expect=200).json())
    assert p["result"] is True and "display" in p["message"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "codeableConcept", "valueCodeableConcept": {
        "coding": [{"system": "urn:example:local", "code": "x"}, {"system": ICD10_CN, "code": "I10"}]}}]}
    assert params(api.post("/fhir/CodeSystem/$validate-code", body, expect=200).json())["result"] is True


def test_validate_code_valueset(api: Any) -> None:
    p = params(api.get(f"/fhir/ValueSet/$validate-code?url=urn:phip:vs:gbt2261-1&system={SEX}&code=0").json())
    assert p["result"] is True
    p = params(api.get(f"/fhir/ValueSet/gbt2261-1/$validate-code?system={SEX}&code=5", expect=200).json())
    assert p["result"] is False
    # a filtered value set: the class A notifiable diseases
    url = "urn:phip:vs:notifiable-disease-class-a"
    ok = params(api.get(f"/fhir/ValueSet/$validate-code?url={url}&system={C.NOTIFIABLE}&code=cholera").json())
    no = params(api.get(f"/fhir/ValueSet/$validate-code?url={url}&system={C.NOTIFIABLE}&code=measles").json())
    assert ok["result"] is True and no["result"] is False
    # the value set in the body
    vs = {"resourceType": "ValueSet", "status": "active", "url": "urn:example:vs",
          "compose": {"include": [{"system": SEX, "concept": [{"code": "1"}, {"code": "2"}]}]}}
    body = {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": vs},
                                                         {"name": "code", "valueCode": "9"},
                                                         {"name": "system", "valueUri": SEX}]}
    assert params(api.post("/fhir/ValueSet/$validate-code", body, expect=200).json())["result"] is False
    api.get("/fhir/ValueSet/$validate-code?url=urn:example:unknown&code=1", expect=404)


def test_expand_filter_paging_hierarchy(api: Any) -> None:
    e = api.get("/fhir/ValueSet/$expand?url=urn:phip:vs:gb3304", expect=200).json()["expansion"]
    assert e["total"] == 58 and e["contains"][0]["code"] == "01"
    page = api.get("/fhir/ValueSet/gb3304/$expand?offset=10&count=5", expect=200).json()["expansion"]
    assert page["total"] == 58 and page["offset"] == 10 and [c["code"] for c in page["contains"]] == [
        "11", "12", "13", "14", "15"]
    f = api.get("/fhir/ValueSet/$expand?url=urn:phip:vs:gb3304&filter=蒙古", expect=200).json()["expansion"]
    assert f["total"] == 1 and f["contains"][0]["display"] == "蒙古族"
    # hierarchy: nested contains when excludeNested=false
    nested = api.get("/fhir/ValueSet/gbt4658/$expand?excludeNested=false", expect=200).json()["expansion"]
    top = {c["code"]: c for c in nested["contains"]}
    assert "10" in top and {c["code"] for c in top["10"]["contains"]} >= {"11", "14"}
    flat = api.get("/fhir/ValueSet/gbt4658/$expand", expect=200).json()["expansion"]
    assert all("contains" not in c for c in flat["contains"]) and flat["total"] == 40
    # big code systems page; asking for all of ICD-10 at once is refused
    icd = api.get("/fhir/ValueSet/$expand?url=urn:phip:vs:icd10-cn&filter=cholera&count=2").json()["expansion"]
    assert icd["total"] >= 3 and len(icd["contains"]) == 2
    api.get("/fhir/ValueSet/$expand?url=urn:phip:vs:icd10-cn", expect=422)
    # POST with the filter in Parameters
    body = {"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": "urn:phip:vs:gbt2261-1"},
                                                         {"name": "filter", "valueString": "女"}]}
    assert [c["code"] for c in api.post("/fhir/ValueSet/$expand", body, expect=200).json()["expansion"]["contains"]] \
        == ["2"]


def test_subsumes(api: Any) -> None:
    q = f"/fhir/CodeSystem/$subsumes?system={ICD10_CN}"
    assert params(api.get(f"{q}&codeA=A00&codeB=A00.1").json())["outcome"] == "subsumes"
    assert params(api.get(f"{q}&codeA=A00.1&codeB=A00").json())["outcome"] == "subsumed-by"
    assert params(api.get(f"{q}&codeA=A00&codeB=A00").json())["outcome"] == "equivalent"
    assert params(api.get(f"{q}&codeA=A00&codeB=B01").json())["outcome"] == "not-subsumed"
    p = params(api.get("/fhir/CodeSystem/gbt2260/$subsumes?codeA=510100&codeB=510104", expect=200).json())
    assert p["outcome"] == "subsumes"
    api.get(f"{q}&codeA=A00&codeB=ZZZ", expect=400)


def test_translate(api: Any) -> None:
    p = params(api.get(f"/fhir/ConceptMap/$translate?system={C.DIVISION}&code=510122", expect=200).json())
    assert p["result"] is True and p["match"][0]["concept"]["code"] == "510116"
    p = params(api.get(f"/fhir/ConceptMap/$translate?system={SEX}&code=1&targetsystem={C.ADMIN_GENDER}").json())
    assert p["match"][0]["concept"]["code"] == "male"
    # instance level, and reverse (ICD-10 → notifiable disease)
    p = params(api.get(f"/fhir/ConceptMap/notifiable-disease-icd10/$translate?system={ICD10_CN}&code=B08.4"
                       "&reverse=true", expect=200).json())
    assert p["result"] is True and p["match"][0]["concept"]["code"] == "hfmd"
    p = params(api.get(f"/fhir/ConceptMap/$translate?system={SEX}&code=7").json())
    assert p["result"] is False and "No mapping" in p["message"]
    api.get("/fhir/ConceptMap/$translate?code=1", expect=400)


def test_terminology_written_through_fhir_is_served_at_once(api: Any) -> None:
    """A CodeSystem/ValueSet posted through the API is answered by the operations right away
    (the AFTER_WRITE hook invalidates the cache), and a deleted one is gone."""
    cs = {"resourceType": "CodeSystem", "id": "region-extra", "url": "urn:example:cs:region", "status": "active",
          "content": "complete", "concept": [{"code": "109", "display": "深圳市居民健康卡"}]}
    api.put("/fhir/CodeSystem/region-extra", cs, expect=201)
    p = params(api.get("/fhir/CodeSystem/$validate-code?url=urn:example:cs:region&code=109").json())
    assert p["result"] is True and p["display"] == "深圳市居民健康卡"
    cs["concept"].append({"code": "110", "display": "健康档案"})
    api.put("/fhir/CodeSystem/region-extra", cs, expect=200)
    assert params(api.get("/fhir/CodeSystem/$lookup?system=urn:example:cs:region&code=110").json())[
        "display"] == "健康档案"
    api.delete("/fhir/CodeSystem/region-extra")
    api.get("/fhir/CodeSystem/$lookup?system=urn:example:cs:region&code=110", expect=404)


def test_operator_correction_wins_over_shipped_copy(loaded: Any, api: Any) -> None:
    cs = api.get("/fhir/CodeSystem/gb3304", expect=200).json()
    cs["concept"][0]["display"] = "汉族(校正)"
    api.put("/fhir/CodeSystem/gb3304", cs, expect=200)
    assert params(api.get(f"/fhir/CodeSystem/$lookup?system={ETHNICITY}&code=01").json())["display"] == "汉族(校正)"


def test_capability_statement_lists_the_operations(api: Any) -> None:
    cs = api.get("/fhir/metadata", expect=200).json()
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert {o["name"] for o in by_type["CodeSystem"]["operation"]} == {"lookup", "validate-code", "subsumes"}
    assert {o["name"] for o in by_type["ValueSet"]["operation"]} == {"expand", "validate-code"}
    assert [o["name"] for o in by_type["ConceptMap"]["operation"]] == ["translate"]
    assert {o["name"] for o in by_type["Patient"]["operation"]} >= {"everything", "export"}
