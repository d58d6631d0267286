"""AuditEvents in the shape of IHE Basic Audit Log Patterns (BALP) on FHIR R4 AuditEvent.

What is captured at the moment of access is a small :class:`Pending` tuple (cheap on the hot
path); the FHIR AuditEvent JSON is built when the buffer is written to the chain.

BALP (https://profiles.ihe.net/ITI/BALP/): ``type`` rest (or DICOM 110114 User Authentication),
``subtype`` the RESTful interaction, ``action`` C/R/U/D/E, ``outcome`` 0/4/8/12, agents for the
user (requestor, role, organization, purpose of use), the client (source role with its network
address) and this server, the patient entity (``entity.what`` Patient, role 1) and the data or
query entity.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from phip.fhir.datetimes import to_instant

AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SECURITY_SOURCE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ROLE_SYSTEM = "urn:phip:role"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

#: interaction (``kind``) → (action, BALP profile)
KINDS: dict[str, tuple[str, str]] = {
    "read": ("R", "IHE.BasicAudit.PatientRead"),
    "vread": ("R", "IHE.BasicAudit.PatientRead"),
    "search-type": ("E", "IHE.BasicAudit.PatientQuery"),
    "history": ("E", "IHE.BasicAudit.PatientQuery"),
    "operation": ("E", "IHE.BasicAudit.PatientQuery"),
    "create": ("C", "IHE.BasicAudit.PatientCreate"),
    "update": ("U", "IHE.BasicAudit.PatientUpdate"),
    "patch": ("U", "IHE.BasicAudit.PatientUpdate"),
    "delete": ("D", "IHE.BasicAudit.PatientDelete"),
    "merge": ("U", "IHE.BasicAudit.PatientUpdate"),
    "export": ("E", "IHE.BasicAudit.PatientQuery"),
    "login": ("E", "IHE.BasicAudit.Auth"),
    "auth-failure": ("E", "IHE.BasicAudit.Auth"),
    "break-glass": ("R", "IHE.BasicAudit.PatientRead"),
    "submitted": ("C", "IHE.BasicAudit.Create"),
    "import": ("C", "IHE.BasicAudit.Create"),
}
OUTCOME_TEXT = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}


@dataclass(slots=True)
class Pending:
    """An access as captured on the hot path (before it has a place in the chain)."""

    recorded: int  # µs
    kind: str  # a key of KINDS
    outcome: int
    patient: str | None  # Patient id
    what: str | None  # Type/id of the resource touched (None for a query or a login)
    query: str | None  # the query string of a search, the operation name
    who: str | None
    role: str | None
    org: str | None
    person: str | None
    purpose: str | None
    reason: str | None  # break-glass or other stated reason
    source: str | None  # client address
    detail: str | None = None  # outcome description (the error), login client id…


def action_of(kind: str) -> str:
    return KINDS.get(kind, ("E", ""))[0]


def to_fhir(seq: int, p: Pending, node_name: str) -> dict[str, Any]:
    """The AuditEvent (BALP shape) for a pending access; ``id`` is its place in the chain."""
    ev = dict(_frame(p.kind, p.outcome, p.detail))
    ev["id"] = str(seq)
    ev["recorded"] = _instant(p.recorded)
    ev["agent"] = _agents(p.who, p.role, p.org, p.person, p.purpose, p.reason, p.source, node_name)
    ev["source"] = _source(node_name)
    entities = _entities(p.patient, p.what, p.query)
    if entities:
        ev["entity"] = entities
    return ev


def _instant(us: int) -> str:
    """µs since the epoch → FHIR instant (``to_instant``'s format, without strftime's cost)."""
    secs, frac = divmod(us, 1_000_000)
    return f"{_second(secs)}.{frac:06d}Z"


@lru_cache(maxsize=4096)
def _second(secs: int) -> str:
    return to_instant(secs * 1_000_000)[:19]


@lru_cache(maxsize=256)
def _frame(kind: str, outcome: int, detail: str | None) -> dict[str, Any]:
    full = _to_fhir(0, Pending(0, kind, outcome, None, None, None, None, None, None, None, None, None, None, detail),
                    "")
    return {k: v for k, v in full.items() if k not in ("id", "recorded", "agent", "source", "entity")}


@lru_cache(maxsize=4096)
def _agents(who: str | None, role: str | None, org: str | None, person: str | None, purpose: str | None,
            reason: str | None, source: str | None, node_name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = _to_fhir(0, Pending(0, "read", 0, None, None, None, who, role, org, person, purpose,
                                                    reason, source), node_name)["agent"]
    return out


@lru_cache(maxsize=16)
def _source(node_name: str) -> dict[str, Any]:
    return {"observer": {"display": node_name},
            "type": [{"system": SECURITY_SOURCE, "code": "4", "display": "Application Server"}]}


def _entities(patient: str | None, what: str | None, query: str | None) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if patient:
        entities.append({"what": {"reference": f"Patient/{patient}"}, "type": _PERSON, "role": _PATIENT_ROLE})
    if what and what != f"Patient/{patient}":
        entities.append({"what": {"reference": what}, "type": _OBJECT, "role": _DOMAIN_ROLE})
    if query:
        entities.append({"type": _OBJECT, "role": _QUERY_ROLE,
                         "query": base64.b64encode(mask_query(query).encode()).decode()})
    return entities


# the trail records what was searched, not the ID or phone numbers searched for (they are sealed
# at rest in the resources; the audit table must not hold them in clear either)
_ID_NO = re.compile(r"(?<![0-9])([0-9]{6})[0-9]{8}([0-9]{3}[0-9Xx])(?![0-9])")
_MOBILE = re.compile(r"(?<![0-9])(1[3-9][0-9])[0-9]{4}([0-9]{4})(?![0-9])")


def mask_query(query: str) -> str:
    """``Patient?identifier=51010419800102001X`` → ``…=510104********001X``; mobiles → ``138****1234``."""
    return _MOBILE.sub(r"\1****\2", _ID_NO.sub(r"\1********\2", query))


_PERSON = {"system": ENTITY_TYPE, "code": "1", "display": "Person"}
_OBJECT = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
_PATIENT_ROLE = {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}
_DOMAIN_ROLE = {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}
_QUERY_ROLE = {"system": OBJECT_ROLE, "code": "24", "display": "Query"}


def _to_fhir(seq: int, p: Pending, node_name: str) -> dict[str, Any]:
    """The AuditEvent (BALP shape) for a pending access; ``id`` is its place in the chain."""
    action, profile = KINDS.get(p.kind, ("E", "IHE.BasicAudit.Read"))
    auth = p.kind in ("login", "auth-failure")
    ev: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(seq),
        "meta": {"profile": [BALP + profile]},
        "type": ({"system": DCM, "code": "110114", "display": "User Authentication"} if auth
                 else {"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"}),
        "subtype": [({"system": DCM, "code": "110122", "display": "Login"} if auth
                     else {"system": RESTFUL, "code": _subtype(p.kind)})],
        "action": action,
        "recorded": to_instant(p.recorded),
        "outcome": str(p.outcome),
    }
    if p.outcome or p.detail:
        ev["outcomeDesc"] = p.detail or OUTCOME_TEXT.get(p.outcome, "")
    purpose = [{"coding": [{"system": ACT_REASON, "code": p.purpose}]}] if p.purpose else None
    user: dict[str, Any] = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                             "code": "humanuser", "display": "human user"}]},
        "who": ({"identifier": {"system": "urn:phip:subject", "value": p.who}} if p.who
                else {"display": "anonymous (not authenticated)"}),
        "requestor": True,
    }
    if p.role:
        user["role"] = [{"coding": [{"system": ROLE_SYSTEM, "code": p.role}]}]
    if p.person:
        user["altId"] = p.person
    if purpose:
        user["purposeOfUse"] = purpose
    if p.reason:
        user["policy"] = [f"urn:phip:reason:{p.reason}"]
    client: dict[str, Any] = {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"display": p.who or "anonymous"},
        "requestor": False,
    }
    if p.source:
        client["network"] = {"address": p.source, "type": "2"}
    server = {
        "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": node_name},
        "requestor": False,
    }
    ev["agent"] = [user, client, server]
    if p.org:  # the user's organization (IUA subject-organization), as an agent of its own
        ev["agent"].insert(1, {"type": {"coding": [{"system": ROLE_CLASS, "code": "PROV",
                                                     "display": "healthcare provider"}]},
                               "who": {"reference": p.org} if "/" in p.org else {"display": p.org},
                               "requestor": False})
    ev["source"] = {"observer": {"display": node_name},
                    "type": [{"system": SECURITY_SOURCE, "code": "4", "display": "Application Server"}]}
    entities: list[dict[str, Any]] = []
    if p.patient:
        entities.append({"what": {"reference": f"Patient/{p.patient}"},
                         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    if p.what and p.what != f"Patient/{p.patient}":
        entities.append({"what": {"reference": p.what},
                         "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}})
    if p.query:
        entities.append({"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                         "query": base64.b64encode(p.query.encode()).decode()})
    if entities:
        ev["entity"] = entities
    return ev


def _subtype(kind: str) -> str:
    return {"search-type": "search-type", "history": "history-instance", "merge": "update", "export": "operation",
            "break-glass": "read", "submitted": "create",
            "import": "create"}.get(kind, kind)


def columns(ev: dict[str, Any]) -> dict[str, Any]:
    """The searchable columns of an AuditEvent, derived from its JSON (verify recomputes them)."""
    patient = None
    for e in ev.get("entity") or ():
        ref = (e.get("what") or {}).get("reference") or ""
        if (e.get("role") or {}).get("code") == "1" and ref.startswith("Patient/"):
            patient = ref[len("Patient/"):]
            break
    user: dict[str, Any] = next((a for a in ev.get("agent") or () if a.get("requestor")), {})
    who = ((user.get("who") or {}).get("identifier") or {}).get("value")
    role = next((c.get("code") for r in user.get("role") or () for c in r.get("coding") or ()), None)
    org_agent = next((a for a in ev.get("agent") or ()
                      if any(c.get("system") == ROLE_CLASS for c in (a.get("type") or {}).get("coding") or ())), None)
    org = None
    if org_agent is not None:
        org = org_agent["who"].get("reference") or org_agent["who"].get("display")
    purpose = next((c.get("code") for r in user.get("purposeOfUse") or () for c in r.get("coding") or ()), None)
    client = next((a for a in ev.get("agent") or () if (a.get("network") or {}).get("address")), None)
    source = client["network"]["address"] if client else None
    sub = (ev.get("subtype") or [{}])[0].get("code")
    return {"action": ev.get("action"), "outcome": int(ev.get("outcome", "0")), "patient": patient, "who": who,
            "role": role, "org": org, "purpose": purpose, "source": source, "subtype": sub}
