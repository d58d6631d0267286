"""Synthetic FHIR test data for the registry tests (no real people: generated names and numbers)."""

from __future__ import annotations

from datetime import date
from typing import Any

from phip.cn import gb11643, gb32100

ID = "urn:oid:2.16.156.10011.1.3"
DIV = "urn:phip:ext:division-code"
ORG_TYPE = "urn:phip:cs:org-type"


def uscc(area: str, body: str) -> str:
    return gb32100.generate("12", area, body)


def id_number(area: str, born: str, seq: int) -> str:
    return gb11643.generate(area, date.fromisoformat(born), seq)


def address(county: str, line: str, start: str = "2020-01-01", **extra: Any) -> dict[str, Any]:
    a: dict[str, Any] = {"extension": [{"url": DIV, "valueCode": county}], "use": "home", "text": line,
                         "line": [line], "country": "CN", "period": {"start": start}}
    a.update(extra)
    return a


def registry_org(oid: str, county: str, body: str = "45087109") -> dict[str, Any]:
    return {"resourceType": "Organization", "id": oid, "active": True,
            "identifier": [{"system": "urn:phip:id:uscc", "value": uscc(county, body)}],
            "type": [{"coding": [{"system": ORG_TYPE, "code": "Z200", "display": "卫生健康行政部门"}]}],
            "name": f"{county}卫生健康局",
            "address": [{"use": "work", "text": "测试路1号", "extension": [{"url": DIV, "valueCode": county}]}]}


def hospital(oid: str, county: str, body: str = "45047514", level: str = "2A", part_of: str | None = None,
             kind: str = "A100", beds: int | None = 100) -> dict[str, Any]:
    org: dict[str, Any] = {
        "resourceType": "Organization", "id": oid, "active": True,
        "identifier": [{"system": "urn:phip:id:uscc", "value": uscc(county, body)}],
        "type": [{"coding": [{"system": ORG_TYPE, "code": kind}]}],
        "name": f"测试医院{oid}",
        "address": [{"use": "work", "text": "测试路2号", "extension": [{"url": DIV, "valueCode": county}]}]}
    if level:
        org["type"].append({"coding": [{"system": "urn:phip:cs:hospital-level", "code": level}]})
    if part_of:
        org["partOf"] = {"reference": f"Organization/{part_of}"}
    if beds is not None:
        org["extension"] = [{"url": "urn:phip:ext:beds", "valueInteger": beds}]
    return org


def patient(name: str, sex: str, born: str, county: str, org: str | None, *, idn: str | None = None,
            pid: str | None = None, line: str = "测试街道测试社区1号", start: str = "2020-01-01") -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "active": True,
                         "name": [{"use": "official", "text": name, "family": name[0], "given": [name[1:]]}],
                         "gender": sex, "birthDate": born, "address": [address(county, line, start)]}
    if pid:
        p["id"] = pid
    if idn:
        p["identifier"] = [{"use": "official", "system": ID, "value": idn}]
    if org:
        p["managingOrganization"] = {"reference": f"Organization/{org}"}
    return p


def person_for(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Person", "active": True,
            "link": [{"target": {"reference": f"Patient/{patient_id}"}, "assurance": "level3"}]}


def birth_bundle(mother_id: str | None, *, sex: str = "female", born: str = "2025-02-17", cert: str = "W25000001",
                 name: str | None = None, mother_rp: dict[str, Any] | None = None,
                 with_obs: bool = True) -> dict[str, Any]:
    nb: dict[str, Any] = {"resourceType": "Patient", "gender": sex, "birthDate": born}
    if name:
        nb["name"] = [{"use": "official", "text": name}]
    obs = [{"reference": "urn:uuid:obs-1"}] if with_obs else []
    sections: list[dict[str, Any]] = [{"title": "新生儿", "entry": obs}]
    if mother_id:
        sections.append({"title": "母亲", "code": {"coding": [{"system": "urn:phip:cs:birth-section",
                                                              "code": "mother"}]},
                         "entry": [{"reference": f"Patient/{mother_id}"}]})
    for s in sections:
        if not s["entry"]:
            s.pop("entry")
        s["text"] = {"status": "generated", "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">{s['title']}</div>"}
    comp = {"resourceType": "Composition", "status": "final",
            "identifier": {"system": "urn:phip:org:test-fybjy:birth-certificate", "value": cert},
            "type": {"coding": [{"system": "urn:phip:cs:document-type", "code": "EHR-SD-2",
                                 "display": "出生医学证明"}]},
            "subject": {"reference": "urn:uuid:newborn"}, "date": f"{born}T10:00:00+08:00",
            "author": [{"display": "测试妇幼保健院"}], "title": "出生医学证明", "section": sections}
    entries = [{"fullUrl": "urn:uuid:comp", "resource": comp},
               {"fullUrl": "urn:uuid:newborn", "resource": nb}]
    if with_obs:
        entries.append({"fullUrl": "urn:uuid:obs-1", "resource": {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8339-4", "display": "Birth weight"}]},
            "subject": {"reference": "urn:uuid:newborn"},
            "valueQuantity": {"value": 3200, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"}}})
    if mother_rp:
        entries.append({"fullUrl": "urn:uuid:mother-rp", "resource": mother_rp})
    return {"resourceType": "Bundle", "type": "document", "identifier": {"system": "urn:ietf:rfc:3986",
                                                                         "value": f"urn:uuid:doc-{cert}"},
            "timestamp": f"{born}T10:00:00+08:00", "entry": entries}
