"""The CapabilityStatement, generated from what this server really does.

Every resource type with its interactions and every search parameter the store
indexes (from the spec's SearchParameter table), plus the operations routed here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from phip import __version__
from phip.fhir import definitions as defs

INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                "search-type"]
SUPPORTED_TYPES = {"number", "date", "string", "token", "reference", "composite", "quantity", "uri"}


@cache
def _resources() -> list[dict[str, Any]]:
    out = []
    for rtype in sorted(defs.resource_types()):
        params = [
            {"name": code, "definition": p.url, "type": p.type}
            for code, p in sorted(defs.search_params_for(rtype).items())
            if (p.type in SUPPORTED_TYPES and (p.expression or p.type == "composite") and code != "_lastUpdated"
                and code != "_id") or p.url == "http://hl7.org/fhir/SearchParameter/Location-near"
        ]
        params += [
            {"name": "_id", "type": "token"},
            {"name": "_lastUpdated", "type": "date"},
            {"name": "_content", "type": "string"},
            {"name": "_text", "type": "string"},
        ]
        res: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": c} for c in INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical", "local"],
            "searchInclude": ["*", *sorted(f"{rtype}:{c}" for c, p in defs.search_params_for(rtype).items()
                                           if p.type == "reference")],
            "searchParam": params,
        }
        if rtype == "Patient":
            res["operation"] = [
                {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"},
            ]
        if rtype == "Group":
            res["operation"] = [
                {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}
            ]
        out.append(res)
    return out


def _with_capability_operations(resources: list[dict[str, Any]], node: Any) -> list[dict[str, Any]]:
    """Add the operations the installed capabilities route (``Capability.extras["fhir_operations"]``:
    resource type → ``[{"name", "definition"}]``), without touching the cached list."""
    extra: dict[str, list[dict[str, Any]]] = {}
    for cap in getattr(node, "capabilities", ()):
        for rtype, ops in (cap.extras.get("fhir_operations") or {}).items():
            extra.setdefault(rtype, []).extend(ops)
    if not extra:
        return resources
    return [{**r, "operation": [*r.get("operation", []), *extra[r["type"]]]} if r["type"] in extra else r
            for r in resources]


def capability_statement(base: str, node: Any) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": node.config.created or "2026-01-01",
        "publisher": "phip",
        "kind": "instance",
        "software": {"name": "phip", "version": __version__},
        "implementation": {"description": f"phip node {node.config.name} ({node.config.level}, "
                                          f"region {node.config.region})", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "description": "Bearer tokens (JWT) issued by the node: `phip token`.",
                    "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                             "code": "OAuth"}]}],
                },
                "resource": _with_capability_operations(_resources(), node),
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "search-system"},
                                {"code": "history-system"}],
                "operation": [
                    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
                    {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
                    {"name": "meta", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-meta"},
                    {"name": "meta-add", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-meta-add"},
                    {"name": "meta-delete",
                     "definition": "http://hl7.org/fhir/OperationDefinition/Resource-meta-delete"},
                ],
            }
        ],
    }
