"""A small synthetic world for access tests: two hospitals in two counties, an insurer, and
patients related to them in each of the ways the rules know (treating, region, contract,
own/dependant, coverage), plus a canary record nobody but admin may see."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.conftest import Api

DIV = "urn:phip:ext:division-code"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
CANARY = "CANARYZZ"


def _iso(days_ago: int) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def patient(pid: str, org: str, county: str, family: str = "测试", *, idno: str | None = None,
            phone: str | None = None) -> dict[str, Any]:
    n = sum(ord(ch) * (i + 1) for i, ch in enumerate(pid)) % 10000
    idno = idno or f"{county}1990{n % 12 + 1:02d}{n % 28 + 1:02d}{n:04d}"
    phone = phone or f"1380000{n:04d}"
    return {
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": ID_SYSTEM, "value": idno}],
        "name": [{"family": family, "given": [pid]}], "gender": "female" if n % 2 else "male",
        "birthDate": f"19{n % 90 + 10}-0{n % 9 + 1}-1{n % 9}",
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"extension": [{"url": DIV, "valueCode": county}], "use": "home",
                     "text": f"四川省成都市{county}某街1号", "line": ["某街1号"], "city": "成都市",
                     "district": "锦江区", "state": "四川省"}],
        "managingOrganization": {"reference": f"Organization/{org}"},
    }


def encounter(eid: str, pid: str, org: str, days_ago: int = 10) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"}, "serviceProvider": {"reference": f"Organization/{org}"},
            "period": {"start": _iso(days_ago), "end": _iso(days_ago)}}


def observation(oid: str, pid: str, note: str = "ok") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{pid}"}, "valueString": note}


def condition(cid: str, pid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "code": {"coding": [{"system": ICD10, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}}


@dataclass
class World:
    node: Any
    client: Any
    ids: dict[str, str] = field(default_factory=dict)

    def api(self, role: str, sub: str = "t", **claims: Any) -> Api:
        return Api(self.client, self.node.tokens.issue(role, sub, **claims))

    def anon(self) -> Any:
        return self.client


def build(repo: Any) -> None:
    put = lambda res: repo.update(res["resourceType"], res["id"], res)  # noqa: E731
    for oid, county in (("hospA", "510104"), ("hospB", "510105"), ("ins1", "510104")):
        put({"resourceType": "Organization", "id": oid, "name": oid,
             "address": [{"extension": [{"url": DIV, "valueCode": county}], "text": "x"}]})
    put({"resourceType": "Practitioner", "id": "doc1", "name": [{"family": "医生"}]})
    put(patient("pA", "hospA", "510104"))
    put(encounter("eA", "pA", "hospA"))
    put(observation("oA", "pA"))
    put(patient("pB", "hospB", "510105", family=CANARY))
    put(encounter("eB", "pB", "hospB"))
    put(observation("oB", "pB", CANARY))
    put(condition("cB", "pB", "B20"))
    # the same resident as pA, recorded at hospital B; linked by the master patient index
    put(patient("pA2", "hospB", "510105"))
    put(observation("oA2", "pA2"))
    put({"resourceType": "Person", "id": "perA", "link": [{"target": {"reference": "Patient/pA"}},
                                                          {"target": {"reference": "Patient/pA2"}}]})
    put(patient("pOld", "hospB", "510105"))
    put(encounter("eOld", "pOld", "hospA", days_ago=3 * 365))
    put({"resourceType": "Location", "id": "locA", "name": "门诊",
         "managingOrganization": {"reference": "Organization/hospA"}})
    put(patient("pAppt", "hospB", "510105"))
    put({"resourceType": "Appointment", "id": "ap1", "status": "booked", "start": _iso(-2), "end": _iso(-2),
         "participant": [{"actor": {"reference": "Patient/pAppt"}, "status": "accepted"},
                         {"actor": {"reference": "Location/locA"}, "status": "accepted"}]})
    put(patient("pRef", "hospB", "510105"))
    put({"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/pRef"}, "performer": [{"reference": "Organization/hospA"}],
         "authoredOn": _iso(5)})
    # a resident with a dependant child
    put(patient("pR", "hospB", "510105", idno="510105198001011111"))
    put(patient("pChild", "hospB", "510105", idno="510105201501012222"))
    put(observation("oChild", "pChild"))
    put({"resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/pChild"},
         "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                       "code": "MTH"}]}]})
    put({"resourceType": "Person", "id": "res1", "link": [{"target": {"reference": "Patient/pR"}},
                                                          {"target": {"reference": "RelatedPerson/rp1"}}]})
    # a family-doctor contract
    put(patient("pF", "hospB", "510105"))
    put({"resourceType": "CareTeam", "id": "ct1", "status": "active",
         "category": [{"coding": [{"system": "urn:phip:careteam-category", "code": "family-doctor-contract"}]}],
         "subject": {"reference": "Patient/pF"}, "participant": [{"member": {"reference": "Practitioner/doc1"}}]})
    # insured by ins1
    put(patient("pI", "hospB", "510105"))
    put({"resourceType": "Coverage", "id": "cov1", "status": "active", "beneficiary": {"reference": "Patient/pI"},
         "payor": [{"reference": "Organization/ins1"}]})


@pytest.fixture
def world(node: Any) -> Iterator[World]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient

    from phip.api.app import create_app

    build(node.store.repository())
    with TestClient(create_app(node)) as client:
        yield World(node, client)


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"}
