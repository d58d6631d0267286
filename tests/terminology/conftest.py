"""Helpers for the terminology tests."""

from __future__ import annotations

from typing import Any

import pytest

SEX = "urn:oid:2.16.156.10011.2.3.3.4"
ETHNICITY = "urn:oid:2.16.156.10011.2.3.3.3"
ID_DOC = "urn:oid:2.16.156.10011.2.3.1.1"
ICD10_CN = "urn:oid:2.16.156.10011.2.3.3.11"
ID_NUMBER = "urn:oid:2.16.156.10011.1.3"
CN_PATIENT = "urn:phip:sd:cn-patient"


def params(body: dict[str, Any]) -> dict[str, Any]:
    """A Parameters resource as {name: value} (parts as lists of dicts)."""
    out: dict[str, Any] = {}
    for p in body.get("parameter", []):
        val = next((v for k, v in p.items() if k.startswith("value")), None)
        if "part" in p:
            val = {q["name"]: next((v for k, v in q.items() if k.startswith("value")), None) for q in p["part"]}
            out.setdefault(p["name"], []).append(val)
        else:
            out[p["name"]] = val
    return out


def cn_patient(id_number: str = "11010519491231002X", **extra: Any) -> dict[str, Any]:
    """A synthetic patient claiming the CN Patient profile (the ID number is a GB 11643 test vector)."""
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {"profile": [CN_PATIENT]},
        "extension": [
            {"url": "urn:phip:ext:sex-gbt2261", "valueCodeableConcept": {"coding": [{"system": SEX, "code": "2"}]}},
            {"url": "urn:phip:ext:ethnicity", "valueCodeableConcept": {"coding": [{"system": ETHNICITY,
                                                                                    "code": "01"}]}},
        ],
        "identifier": [{"type": {"coding": [{"system": ID_DOC, "code": "01", "display": "居民身份证"}]},
                        "system": ID_NUMBER, "value": id_number}],
        "name": [{"text": "测试甲"}],
        "gender": "female",
        "birthDate": "1949-12-31",
    }
    res.update(extra)
    return res


@pytest.fixture
def loaded(node: Any) -> Any:
    """The node with the shipped tables in its store (a no-op when ``phip init`` loaded them; the
    suite may create nodes with PHIP_TERMINOLOGY_ON_INIT=0)."""
    from phip.terminology.loader import load_shipped

    load_shipped(node.store)
    node.ext["terminology"].invalidate()
    return node
