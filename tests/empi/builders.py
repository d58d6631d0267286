"""A small fluent builder for synthetic Patients (after HAPI's ITestDataBuilder)."""

from __future__ import annotations

from datetime import date
from typing import Any

from phip.cn import gb11643
from phip.empi.normalize import ID_TYPE_SYSTEM, RESIDENT_ID_SYSTEM


def rid(area: str, born: str, seq: int) -> str:
    return gb11643.generate(area, date.fromisoformat(born), seq)


class P:
    def __init__(self, name: str | None = None, *, family: str | None = None, given: str | None = None) -> None:
        self.doc: dict[str, Any] = {"resourceType": "Patient"}
        if name is not None:
            n: dict[str, Any] = {"use": "official", "text": name}
            if family:
                n["family"] = family
            if given:
                n["given"] = [given]
            self.doc["name"] = [n]

    def id(self, pid: str) -> P:
        self.doc["id"] = pid
        return self

    def born(self, d: str) -> P:
        self.doc["birthDate"] = d
        return self

    def sex(self, g: str) -> P:
        self.doc["gender"] = g
        return self

    def idno(self, number: str) -> P:
        self.doc.setdefault("identifier", []).append({
            "type": {"coding": [{"system": ID_TYPE_SYSTEM, "code": "01"}]},
            "system": RESIDENT_ID_SYSTEM, "value": number})
        return self

    def passport(self, number: str) -> P:
        self.doc.setdefault("identifier", []).append({
            "type": {"coding": [{"system": ID_TYPE_SYSTEM, "code": "03"}]},
            "system": "urn:oid:2.16.156.10011.1.3.03", "value": number})
        return self

    def mrn(self, org: str, value: str) -> P:
        self.doc.setdefault("identifier", []).append({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": f"urn:phip:org:{org}:mrn", "value": value})
        return self

    def phone(self, v: str) -> P:
        self.doc.setdefault("telecom", []).append({"system": "phone", "value": v})
        return self

    def addr(self, county: str, text: str) -> P:
        self.doc["address"] = [{"extension": [{"url": "urn:phip:ext:division-code", "valueCode": county}],
                                "use": "home", "line": [text], "text": text}]
        return self

    def build(self) -> dict[str, Any]:
        return dict(self.doc)


def zhang_san(**kw: Any) -> P:
    return (P("张三丰", family="张", given="三丰").born("1980-03-04").sex("male")
            .phone("15400001111").addr("510104", "建设街道安源社区新华路1号"))
