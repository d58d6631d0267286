"""Write-time checks of the institution and staff registries (基础资源, WS/T 790.7–.8).

A BEFORE_WRITE hook for Organization, Location, Practitioner, PractitionerRole and Device.  It
checks only what carries the Chinese registry conventions, so any other FHIR resource (the R4
examples, a foreign system's data) is stored untouched:

- an identifier in a unified-social-credit-code system (``urn:phip:id:uscc``) must pass the GB 32100
  check characters → else 422;
- an address ``urn:phip:ext:division-code`` must be a GB/T 2260 code of this edition (6 digits), or a
  finer synthetic township/village code (9/12 digits) whose first six digits are one → else 422;
- codings in phip's own code systems (``urn:phip:cs:org-type``, ``…:hospital-level``,
  ``…:qualification``, ``…:large-equipment``) must be in the tables of ``data/registry.json`` → else 422;
- a practice licence number (``urn:phip:id:practitioner-licence``) must match the configured pattern
  (15 digits by default) → else 422;
- ``urn:phip:ext:beds`` must be a non-negative integer → else 422;
- a resident ID number (``urn:oid:2.16.156.10011.1.3``) on a Practitioner that fails GB 11643 is a
  warning, never a rejection (as for Patients).

Every issue names the element path in ``expression``; codes PHIP-46xx.
"""

from __future__ import annotations

from typing import Any

from phip.cn import gb11643, gb32100, regions
from phip.fhir.errors import FhirError, Issue
from phip.registry import codes as C

TYPES = frozenset({"Organization", "Location", "Practitioner", "PractitionerRole", "Device"})


def valid_division(code: str) -> bool:
    """A 6-digit GB/T 2260 code of this edition, or a 9/12-digit code below one."""
    if not code.isdigit() or len(code) not in (6, 9, 12):
        return False
    return regions.is_known(code[:6])


def check(rtype: str, res: dict[str, Any]) -> list[Issue]:
    """Every issue of one resource (errors and warnings)."""
    if rtype not in TYPES:
        return []
    issues: list[Issue] = []
    _identifiers(rtype, res.get("identifier"), rtype + ".identifier", issues)
    addrs = res.get("address")
    if isinstance(addrs, dict):
        _address(addrs, f"{rtype}.address", issues)
    elif isinstance(addrs, list):
        for i, a in enumerate(addrs):
            if isinstance(a, dict):
                _address(a, f"{rtype}.address[{i}]", issues)
    _beds(res.get("extension"), f"{rtype}.extension", issues)
    t = C.table()
    if rtype == "Organization":
        _codes(res.get("type"), C.ORG_TYPE, t["org_types"], f"{rtype}.type", "institution type", issues)
        _codes(res.get("type"), C.HOSPITAL_LEVEL, t["hospital_levels"], f"{rtype}.type", "hospital level", issues)
    elif rtype == "Practitioner":
        for i, q in enumerate(res.get("qualification") or []):
            if not isinstance(q, dict):
                continue
            base = f"Practitioner.qualification[{i}]"
            _identifiers(rtype, q.get("identifier"), base + ".identifier", issues)
            _codes(q.get("code"), C.QUALIFICATION, t["qualifications"], base + ".code", "qualification", issues)
    elif rtype == "Device":
        _codes(res.get("type"), C.LARGE_EQUIPMENT, t["large_equipment"], "Device.type", "large equipment category",
               issues)
    elif rtype == "Location":
        pt = res.get("physicalType") or {}
        is_bed = any(c.get("code") == "bd" for c in pt.get("coding") or [] if isinstance(c, dict))
        if is_bed and not res.get("partOf"):
            issues.append(Issue("warning", "incomplete", "A bed (physicalType bd) should be partOf its ward or room",
                                "Location.partOf", "PHIP-4610"))
    return issues


def _identifiers(rtype: str, idents: Any, base: str, issues: list[Issue]) -> None:
    uscc = set(C.system("uscc"))
    licence = set(C.system("licence"))
    for i, ident in enumerate(idents or []):
        if not isinstance(ident, dict):
            continue
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(value, str):
            continue
        path = f"{base}[{i}].value"
        if system in uscc and not gb32100.validate(value):
            issues.append(Issue("error", "invalid", f"{value!r} is not a valid unified social credit code (GB 32100: "
                                "18 characters, area code, both check characters)", path, "PHIP-4601"))
        elif system in licence and not C.licence_re().match(value.strip()):
            issues.append(Issue("error", "invalid", f"{value!r} is not a valid practice licence number (expected "
                                f"{C.table()['licence_pattern']})", path, "PHIP-4604"))
        elif system == C.ID_NUMBER and rtype in ("Practitioner", "PractitionerRole"):
            chk = gb11643.validate(value, known_area=regions.is_plausible)
            if not chk.valid:
                issues.append(Issue("warning", "invalid", f"The ID number fails GB 11643 ({', '.join(chk.errors)}); "
                                    "stored, but not trusted as a key", path, "PHIP-4608"))


def _address(addr: dict[str, Any], base: str, issues: list[Issue]) -> None:
    for j, ext in enumerate(addr.get("extension") or []):
        if not isinstance(ext, dict) or ext.get("url") != C.DIVISION_EXT:
            continue
        key = "valueCode" if "valueCode" in ext else "valueString"
        code = ext.get(key)
        if not isinstance(code, str) or not valid_division(code.strip()):
            issues.append(Issue("error", "code-invalid", f"{code!r} is not a GB/T 2260 division code of this edition "
                                "(6 digits, or a 9/12-digit township/village code below a known county)",
                                f"{base}.extension[{j}].{key}", "PHIP-4602"))


def _beds(exts: Any, base: str, issues: list[Issue]) -> None:
    for j, ext in enumerate(exts or []):
        if isinstance(ext, dict) and ext.get("url") == C.BEDS_EXT:
            v = ext.get("valueInteger")
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                issues.append(Issue("error", "invalid", "The bed count (urn:phip:ext:beds) must be a valueInteger ≥ 0",
                                    f"{base}[{j}]", "PHIP-4605"))


def _codes(concepts: Any, system_uri: str, known: dict[str, Any], base: str, what: str, issues: list[Issue]) -> None:
    single = isinstance(concepts, dict)
    for i, j, code in C.codes_of(concepts, system_uri):
        if code not in known:
            path = f"{base}.coding[{j}].code" if single else f"{base}[{i}].coding[{j}].code"
            issues.append(Issue("error", "code-invalid", f"{code!r} is not a known {what} code of {system_uri}", path,
                                "PHIP-4603"))


def before_write(_tx: Any, rtype: str, resource: dict[str, Any], method: str) -> list[Issue] | None:
    """The BEFORE_WRITE hook: raise 422 on errors, return warnings."""
    if rtype not in TYPES or method == "DELETE":
        return None
    issues = check(rtype, resource)
    if not issues:
        return None
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise FhirError(422, errors[0].diagnostics, issues=errors + [i for i in issues if i.severity != "error"])
    return issues


def report_stored(store: Any, types: list[str], limit: int = 20) -> int:
    """Check stored registry resources (after ``phip import``) and log what fails; returns the count."""
    import logging

    import orjson
    import sqlalchemy as sa

    from phip.store import schema as S

    log = logging.getLogger("phip.registry")
    R = S.resources
    bad = 0
    with store.read_conn() as conn:
        for rtype in types:
            q = sa.select(R.c.id, R.c.content).where(R.c.type == rtype, R.c.deleted == sa.false())
            for rec in conn.execute(q):
                doc = rec.content if isinstance(rec.content, dict) else orjson.loads(rec.content)
                errors = [i for i in check(rtype, doc) if i.severity == "error"]
                if errors:
                    bad += 1
                    if bad <= limit:
                        log.warning("%s/%s: %s (%s)", rtype, rec.id, errors[0].diagnostics, errors[0].expression)
    if bad:
        log.warning("%d imported registry resource(s) fail the registry checks", bad)
    return bad
