"""The registry's code tables and system URIs, loaded once from ``data/registry.json``."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import orjson


@cache
def table() -> dict[str, Any]:
    raw = resources.files("phip.registry").joinpath("data", "registry.json").read_bytes()
    out: dict[str, Any] = orjson.loads(raw)
    return out


def system(name: str) -> Any:
    return table()["systems"][name]


@cache
def licence_re() -> re.Pattern[str]:
    return re.compile(table()["licence_pattern"])


ID_NUMBER = "urn:oid:2.16.156.10011.1.3"
ID_TYPE = "urn:oid:2.16.156.10011.2.3.1.1"
DIVISION_EXT = "urn:phip:ext:division-code"
BEDS_EXT = "urn:phip:ext:beds"
ORG_TYPE = "urn:phip:cs:org-type"
HOSPITAL_LEVEL = "urn:phip:cs:hospital-level"
QUALIFICATION = "urn:phip:cs:qualification"
LARGE_EQUIPMENT = "urn:phip:cs:large-equipment"
HOUSEHOLD = "urn:phip:cs:household-role"
REGISTRY_EVENT = "urn:phip:cs:registry-event"
DOCUMENT_TYPE = "urn:phip:cs:document-type"
BIRTH_CERTIFICATE = "urn:phip:id:birth-certificate"
HEALTH_CARD = "urn:phip:id:health-card"
V3_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
PROVENANCE_ACTIVITY = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"

#: registry events recorded as Provenance.reason (phip's code system, urn:phip:cs:registry-event)
EVENTS = {
    "birth": "出生登记",
    "death": "死亡登记",
    "address-change": "住址变更",
    "migration": "跨县迁移",
}


def division_code(address: dict[str, Any]) -> str | None:
    """The GB/T 2260 (or finer synthetic) division code carried by an address, if any."""
    for ext in address.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == DIVISION_EXT:
            v = ext.get("valueCode") or ext.get("valueString")
            if isinstance(v, str):
                return v.strip()
    return None


def codes_of(concepts: Any, system_uri: str) -> list[tuple[int, int, str]]:
    """(concept index, coding index, code) of every coding in ``system_uri``."""
    out: list[tuple[int, int, str]] = []
    if isinstance(concepts, dict):
        concepts = [concepts]
    for i, cc in enumerate(concepts or []):
        for j, c in enumerate((cc or {}).get("coding") or []):
            if isinstance(c, dict) and c.get("system") == system_uri and isinstance(c.get("code"), str):
                out.append((i, j, c["code"]))
    return out
