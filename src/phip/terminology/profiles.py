"""Chinese profiles (StructureDefinitions shipped as data) and the checks they imply on write.

A profile is compiled from its ``differential`` into a few rules (not a full FHIR validator — the
core validator already checks structure, cardinality and datatypes against the base spec):

- a ``binding`` on an element: every coding of that element in a system of the bound value set
  must be a member of it; a ``required`` binding also needs at least one such coding;
- ``min`` ≥ 1 on an element: the element must be present;
- a constraint carrying the extension ``urn:phip:ext:profile-check`` names a check in code run on
  the values its ``expression`` selects (``gb11643``: a valid resident ID number).

A profile applies to a resource that claims it in ``meta.profile``, or to every resource of a type
the node's ``[terminology.profiles]`` configuration names.  What happens to the defects found is
the node's strictness: ``reject`` (422, nothing stored), ``warn`` (stored, the defects returned as
warnings: ``X-Phip-Issues`` and ``Prefer: return=OperationOutcome`` on a single write,
``Bundle.entry.response.outcome`` in a transaction), or ``off``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Any

from phip.fhir.errors import Issue

Json = dict[str, Any]
CHECK_EXT = "urn:phip:ext:profile-check"
PROFILES = ("cn-patient", "cn-condition", "cn-encounter", "cn-observation", "cn-immunization")


def shipped_profiles() -> list[Json]:
    from phip.terminology.content import _meta

    out = []
    for name in PROFILES:
        raw = resources.files("phip.terminology").joinpath("data", "profiles", f"{name}.json").read_text("utf-8")
        doc = json.loads(raw)
        doc["meta"] = _meta()
        out.append(doc)
    return out


@dataclass(slots=True, frozen=True)
class Rule:
    kind: str  # binding | min | check
    expression: str  # FHIRPath selecting the values
    where: str  # the element id, for the issue's expression
    valueset: str | None = None
    strength: str | None = None
    minimum: int = 0
    check: str | None = None
    human: str | None = None


@dataclass(slots=True, frozen=True)
class Profile:
    url: str
    type: str
    name: str | None
    rules: tuple[Rule, ...]


def _fhirpath(el: Json, rtype: str) -> str:
    path: str = el.get("path", "")
    parts = path.split(".")
    out = [parts[0]]
    for p in parts[1:]:
        if p.endswith("[x]"):
            out.append(p[:-3])
            continue
        out.append(p)
    expr = ".".join(out)
    # Observation.valueQuantity → Observation.value.ofType(Quantity)
    for choice in ("value", "effective", "onset", "occurrence", "deceased", "multipleBirth"):
        for t in ("Quantity", "CodeableConcept", "Coding", "String", "DateTime", "Period", "Boolean", "Integer"):
            seg = f".{choice}{t}"
            if expr.endswith(seg) or f"{seg}." in expr:
                expr = expr.replace(seg, f".{choice}.ofType({t})")
    if el.get("sliceName") and parts[-1] == "extension":
        url = next((pr for t in el.get("type") or [] for pr in t.get("profile") or []), None)
        if url:
            expr = f"{expr}('{url}').value"
    return expr


def compile_profile(doc: Json) -> Profile:
    rtype = doc.get("type", "")
    rules: list[Rule] = []
    for el in (doc.get("differential") or {}).get("element") or []:
        where = el.get("id") or el.get("path", "")
        path = el.get("path", "")
        if "." in path:
            expr = _fhirpath(el, rtype)
            b = el.get("binding") or {}
            if b.get("valueSet") and b.get("strength") in ("required", "extensible", "preferred"):
                rules.append(Rule("binding", expr, where, valueset=b["valueSet"].split("|")[0],
                                  strength=b["strength"], human=el.get("short")))
            if int(el.get("min") or 0) >= 1:
                rules.append(Rule("min", expr, where, minimum=int(el["min"]), human=el.get("short")))
        for con in el.get("constraint") or []:
            check = next((e.get("valueCode") for e in con.get("extension") or [] if e.get("url") == CHECK_EXT), None)
            if check and con.get("expression"):
                expr = con["expression"] if "." not in path else f"{_fhirpath(el, rtype)}.{con['expression']}"
                if "." not in path and not expr.startswith(rtype):
                    expr = f"{rtype}.{expr}"
                rules.append(Rule("check", expr, con.get("key") or where, check=check, human=con.get("human")))
    return Profile(doc.get("url", ""), rtype, doc.get("name"), tuple(rules))


def _codings(node: Any) -> list[tuple[str | None, str]]:
    v, t = node.value, node.type
    if t == "CodeableConcept" and isinstance(v, dict):
        return [(c.get("system"), c["code"]) for c in v.get("coding") or [] if isinstance(c, dict) and c.get("code")]
    if t == "Coding" and isinstance(v, dict):
        return [(v.get("system"), v["code"])] if v.get("code") else []
    if t == "Quantity" and isinstance(v, dict):
        return [(v.get("system"), v["code"])] if v.get("code") else []
    if isinstance(v, str):
        return [(None, v)]
    return []


def check_profile(svc: Any, profile: Profile, resource: Json, today: date | None = None) -> list[Issue]:
    """The defects of ``resource`` against ``profile`` (severity error for violations, warning for
    ``preferred`` bindings)."""
    from phip.fhir import fhirpath

    issues: list[Issue] = []
    label = profile.name or profile.url
    for rule in profile.rules:
        try:
            nodes = fhirpath.evaluate(resource, rule.expression)
        except Exception:  # an expression the FHIRPath subset cannot run: the profile is not checkable here
            issues.append(Issue("warning", "not-supported", f"{label}: cannot evaluate {rule.expression!r}",
                                rule.where, "PHIP-6190"))
            continue
        if rule.kind == "min":
            if len(nodes) < rule.minimum:
                issues.append(Issue("error", "required", f"{label}: {rule.where} is required"
                                    + (f" ({rule.human})" if rule.human else ""), rule.where, "PHIP-6110"))
        elif rule.kind == "binding":
            issues += _check_binding(svc, label, rule, nodes)
        elif rule.kind == "check" and rule.check == "gb11643":
            from phip.cn import gb11643

            for n in nodes:
                if not isinstance(n.value, str):
                    continue
                res = gb11643.validate(n.value, today=today, known_area=svc.division_known)
                if not res.valid:
                    issues.append(Issue("error", "value",
                                        f"{label}: the resident ID number is not valid ({', '.join(res.errors)})"
                                        + (f": {rule.human}" if rule.human else ""), rule.where, "PHIP-6120"))
    return issues


def _check_binding(svc: Any, label: str, rule: Rule, nodes: list[Any]) -> list[Issue]:
    vs = svc.valueset(rule.valueset)
    if vs is None:
        return []  # bound to a value set this node does not hold: nothing to check against
    systems = {svc.canonical(s) for s in vs.systems}
    single = next(iter(systems)) if len(systems) == 1 else None
    bad = "error" if rule.strength in ("required", "extensible") else "warning"
    out: list[Issue] = []
    for n in nodes:
        codings = _codings(n)
        relevant = [(s or single, c) for s, c in codings
                    if (s is None and single) or (s and svc.canonical(s) in systems)]
        for system, code in relevant:
            chk = svc.check(system, code, valueset=vs)
            if not chk.result:
                out.append(Issue(bad, "code-invalid", f"{label}: {rule.where}: {chk.message}", rule.where, "PHIP-6101"))
        if rule.strength == "required" and not relevant and codings:
            out.append(Issue("error", "code-invalid",
                             f"{label}: {rule.where} must have a code from {vs.title or vs.url}", rule.where,
                             "PHIP-6102"))
    return out


def profiles_for(svc: Any, rtype: str, resource: Json, configured: dict[str, list[str]]) -> list[Profile]:
    """The profiles that apply to a resource: the known ones it claims, and those configured for its type."""
    urls = [u.split("|")[0] for u in (resource.get("meta") or {}).get("profile") or [] if isinstance(u, str)]
    urls += [u for u in configured.get(rtype, []) if u not in urls]
    out = []
    for u in urls:
        p = svc.profile(u)
        if isinstance(p, Profile) and p.type == rtype and p.rules:
            out.append(p)
    return out
