"""Small builders for FHIR R4 JSON and the code systems and identifiers the node relies on.

Resources are plain dicts (insertion-ordered, so serialisation is deterministic) built with these
helpers; nothing here knows about the simulation.  The conventions come from the issue:

- the resident identity number is ``Patient.identifier`` with system ``urn:oid:2.16.156.10011.1.3``,
  typed with CV02.01.101 code ``01`` 居民身份证;
- each institution's record numbers use ``urn:phip:org:<org-id>:<kind>``;
- Chinese code systems are their WS 364 OIDs as ``urn:oid:`` URIs, next to the FHIR codings;
- phip's own code systems are ``urn:phip:cs:<name>`` and its extensions ``urn:phip:ext:<name>``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

Json = dict[str, Any]

# Identifier systems
ID_NUMBER = "urn:oid:2.16.156.10011.1.3"
"""居民身份证号码 (GB 11643)."""

# Chinese code systems (WS 364 value sets)
CS_SEX = "urn:oid:2.16.156.10011.2.3.3.4"  # GB/T 2261.1
CS_ETHNICITY = "urn:oid:2.16.156.10011.2.3.3.3"  # GB 3304
CS_ID_TYPE = "urn:oid:2.16.156.10011.2.3.1.1"  # CV02.01.101
CS_ICD10_CN = "urn:oid:2.16.156.10011.2.3.3.11"  # ICD-10 (national clinical version)
CS_DIVISION = "urn:phip:cs:gbt2260"  # GB/T 2260 division codes, as phip's URI

# International code systems
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
CVX = "http://hl7.org/fhir/sid/cvx"
SNOMED = "http://snomed.info/sct"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CAT = "http://terminology.hl7.org/CodeSystem/condition-category"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PROC_PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
PRACT_ROLE = "http://terminology.hl7.org/CodeSystem/practitioner-role"
LOC_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
V3_SITE = "http://terminology.hl7.org/CodeSystem/v3-ActSite"
IMM_FUNCTION = "http://terminology.hl7.org/CodeSystem/v2-0443"
DISCHARGE = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
SUBSCRIBER_REL = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"

# phip's own code systems
CS_ORG_TYPE = "urn:phip:cs:org-type"  # WS 218 categories as used by phip
CS_HOSPITAL_LEVEL = "urn:phip:cs:hospital-level"
CS_DEPARTMENT = "urn:phip:cs:department"  # 诊疗科目
CS_ENCOUNTER_TYPE = "urn:phip:cs:encounter-type"
CS_DOCUMENT = "urn:phip:cs:document-type"  # WS/T 483 shared documents
CS_DRUG = "urn:phip:cs:essential-drug"
CS_VACCINE = "urn:phip:cs:nip-vaccine"
CS_NOTIFIABLE = "urn:phip:cs:notifiable-disease"
CS_FOLLOWUP = "urn:phip:cs:followup-result"
CS_REFERRAL = "urn:phip:cs:referral"
CS_INSURANCE = "urn:phip:cs:insurance-scheme"
CS_FEE_ITEM = "urn:phip:cs:fee-item"
CS_QUALIFICATION = "urn:phip:cs:qualification"
CS_TITLE = "urn:phip:cs:professional-title"
CS_HOUSEHOLD_ROLE = "urn:phip:cs:household-role"

# phip's extensions
EXT_SEX = "urn:phip:ext:sex-gbt2261"
EXT_ETHNICITY = "urn:phip:ext:ethnicity"
EXT_DIVISION = "urn:phip:ext:division-code"
EXT_BEDS = "urn:phip:ext:beds"
EXT_DEPARTMENT = "urn:phip:ext:department"

TZ = "+08:00"


def org_system(org_id: str, kind: str) -> str:
    """The identifier system of one institution's own numbers (``kind``: mrn, visit, rx, ...)."""
    return f"urn:phip:org:{org_id}:{kind}"


def org_codes(org_id: str, domain: str) -> str:
    """The system of one institution's local code list for ``domain`` (diagnosis, lab, drug, ...)."""
    return f"urn:phip:org:{org_id}:cs:{domain}"


def coding(system: str, code: str, display: str | None = None) -> Json:
    c: Json = {"system": system, "code": code}
    if display is not None:
        c["display"] = display
    return c


def concept(*codings: Json, text: str | None = None) -> Json:
    cc: Json = {"coding": list(codings)}
    if text is not None:
        cc["text"] = text
    return cc


def ref(rtype: str, rid: str) -> Json:
    return {"reference": f"{rtype}/{rid}"}


def quantity(value: float | int, unit: str | None) -> Json:
    """A UCUM quantity (``unit`` None gives a bare number)."""
    if unit is None:
        return {"value": value}
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def money(value: float) -> Json:
    return {"value": round(value, 2), "currency": "CNY"}


_ISO: dict[date, str] = {}
_HHMM = tuple(f"{h:02d}:{m:02d}" for h in range(24) for m in range(60))


def iso(d: date) -> str:
    """``d.isoformat()``, memoised (dates repeat a lot and formatting is a hot spot)."""
    s = _ISO.get(d)
    if s is None:
        s = _ISO[d] = d.isoformat()
    return s


def dt(d: date, minute: int = 0) -> str:
    """A FHIR dateTime in China Standard Time: ``d`` at ``minute`` minutes after midnight."""
    return f"{iso(d)}T{_HHMM[minute]}:00{TZ}"


def instant(moment: datetime) -> str:
    """A FHIR instant (seconds, +08:00) for a naive local datetime."""
    return f"{iso(moment.date())}T{_HHMM[moment.hour * 60 + moment.minute]}:{moment.second:02d}{TZ}"


def at(d: date, minute: int) -> datetime:
    return datetime(d.year, d.month, d.day, minute // 60, minute % 60)


def period(start: str, end: str | None = None) -> Json:
    p: Json = {"start": start}
    if end is not None:
        p["end"] = end
    return p
