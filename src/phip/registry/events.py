"""Population registry events: birth, death, address change and migration, households.

Each event is one database transaction through the repository (validation, history, change feed
and every other capability's hooks — the master patient index links the newborn's Patient to a
Person in the same transaction) and leaves a ``Provenance`` that records it: ``reason`` coded in
``urn:phip:cs:registry-event`` (birth, death, address-change, migration), ``target`` the versions
written, ``entity`` the source (the birth or death certificate, the Patient's previous version).
"""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

from phip.core.ids import uuid7
from phip.fhir.datetimes import now_us, to_instant
from phip.fhir.errors import FhirError, Issue
from phip.registry import codes as C
from phip.registry.population import PopulationIndex, current_address
from phip.registry.validate import valid_division
from phip.store.repository import Repository, Row


def unprocessable(msg: str, expression: str | None, msg_id: str, code: str = "invalid") -> FhirError:
    return FhirError(422, msg, code=code, expression=expression, msg_id=msg_id)


# -- small helpers ------------------------------------------------------------------------------------
def search_all(repo: Repository, rtype: str, params: list[tuple[str, str]], limit: int = 100_000) -> list[Row]:
    req = repo.parser().parse(rtype, params)
    req.count = repo.settings.max_count
    out: list[Row] = []
    while True:
        res = repo.search(req)
        out.extend(res.rows)
        if not res.next_cursor or len(out) >= limit:
            return out
        req.cursor = res.next_cursor


def person_of(repo: Repository, patient_id: str) -> Row | None:
    """The master Person linked to a Patient (``Person?link=Patient/{id}``), if the index made one."""
    rows = search_all(repo, "Person", [("link", f"Patient/{patient_id}")], limit=2)
    return rows[0] if rows else None


def _ref(rtype: str, rid: str, version: int | None = None) -> dict[str, str]:
    return {"reference": f"{rtype}/{rid}" + (f"/_history/{version}" if version else "")}


def _name_text(p: dict[str, Any]) -> str:
    for n in p.get("name") or []:
        if isinstance(n, dict):
            if n.get("text"):
                return str(n["text"])
            fam, giv = n.get("family") or "", "".join(n.get("given") or [])
            if fam or giv:
                return f"{fam}{giv}"
    return ""


def _has_name(p: dict[str, Any]) -> bool:
    return bool(_name_text(p))


def agent_of(principal: Any) -> dict[str, Any]:
    """Provenance.agent for the caller: its organisation if the token names one."""
    agent: dict[str, Any] = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                                  "code": "author"}]}}
    if principal is not None and getattr(principal, "org", None):
        agent["who"] = {"reference": principal.org}
    else:
        agent["who"] = {"display": getattr(principal, "sub", None) or "phip"}
    return agent


def provenance(event: str, targets: list[dict[str, str]], occurred: str, principal: Any,
               entities: list[tuple[str, dict[str, str]]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": targets,
        "occurredDateTime": occurred,
        "recorded": to_instant(now_us()),
        "reason": [{"coding": [{"system": C.REGISTRY_EVENT, "code": event, "display": C.EVENTS[event]}]}],
        "activity": {"coding": [{"system": C.PROVENANCE_ACTIVITY, "code": "CREATE" if event == "birth" else "UPDATE"}]},
        "agent": [agent_of(principal)],
    }
    if entities:
        out["entity"] = [{"role": role, "what": what} for role, what in entities]
    return out


def _parse_day(value: Any, expression: str, msg_id: str) -> date:
    if not isinstance(value, str) or len(value) < 10:
        raise unprocessable(f"{expression} must be a full date (YYYY-MM-DD…), not {value!r}", expression, msg_id)
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise unprocessable(f"{expression} is not a valid date: {value!r}", expression, msg_id) from None


def params_get(body: Any, name: str) -> tuple[int, dict[str, Any]] | None:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "This operation takes a Parameters resource", code="invalid", msg_id="PHIP-4630")
    for i, p in enumerate(body.get("parameter") or []):
        if isinstance(p, dict) and p.get("name") == name:
            return i, p
    return None


def _value(p: dict[str, Any], *kinds: str) -> Any:
    for k in kinds:
        if k in p:
            return p[k]
    return None


class Registry:
    """The population registry's operations over one store."""

    def __init__(self, store: Any, index: PopulationIndex, cards: Any = None) -> None:
        self.store = store
        self.index = index
        self.cards = cards

    # -- registry authorities ---------------------------------------------------------------------
    def registry_org_for(self, repo: Repository, county: str) -> str | None:
        """The registry authority (Organization id) of a county, by its address division code."""
        with self.store.read_conn() as conn:
            for org in self.index.registry_org_ids(conn):
                is_reg, region = self.index.org_info(conn, org)
                if is_reg and region[:6] == county[:6]:
                    return org
        return None

    def is_registry_org(self, org_id: str) -> bool:
        with self.store.read_conn() as conn:
            return self.index.org_info(conn, org_id)[0]

    def household_of(self, repo: Repository, patient_id: str) -> Row | None:
        rows = search_all(repo, "Group", [("member", f"Patient/{patient_id}"), ("code", f"{C.HOUSEHOLD}|household")],
                          limit=50)
        for g in rows:
            doc = g.resource()
            if doc.get("active") is False:
                continue
            for m in doc.get("member") or []:
                if (m.get("entity") or {}).get("reference") == f"Patient/{patient_id}" and _member_current(m):
                    return g
        return None

    # -- birth ----------------------------------------------------------------------------------------
    def register_birth(self, repo: Repository, bundle: Any, principal: Any) -> tuple[int, dict[str, Any]]:
        comp, entries, newborn_i = _check_birth_bundle(bundle)
        cert = comp.get("identifier") if isinstance(comp.get("identifier"), dict) else None
        warnings: list[Issue] = []
        with repo.transaction():
            if cert and cert.get("system") and cert.get("value"):
                found = search_all(repo, "Patient", [("identifier", f"{cert['system']}|{cert['value']}")], limit=5)
                for row in found:
                    doc = row.resource()
                    org = (doc.get("managingOrganization") or {}).get("reference", "").partition("/")[2]
                    if org and self.is_registry_org(org):
                        return 200, _birth_result(doc, None, None, None, None, [Issue(
                            "information", "duplicate", f"Birth certificate {cert['value']} was already registered "
                            f"as Patient/{doc['id']}; nothing changed", None, "PHIP-4640")])
            newborn = copy.deepcopy(entries[newborn_i]["resource"])
            newborn.pop("id", None)
            mother, mother_rp = self._mother(repo, comp, entries, newborn_i, warnings)
            birth_day = _parse_day(newborn.get("birthDate"), f"Bundle.entry[{newborn_i}].resource.birthDate",
                                   "PHIP-4641")
            if birth_day > date.today():
                raise unprocessable("The birth date is in the future", f"Bundle.entry[{newborn_i}].resource.birthDate",
                                    "PHIP-4641")
            # the newborn's record
            if not _has_name(newborn):
                mname = _name_text(mother) if mother else _name_text(mother_rp or {})
                if not mname:
                    raise unprocessable("The newborn has no name and the mother's name is not known, so no "
                                        "「某某之子/之女」 name can be given",
                                        f"Bundle.entry[{newborn_i}].resource.name", "PHIP-4642")
                suffix = {"male": "之子", "female": "之女"}.get(newborn.get("gender", ""), "之子女")
                newborn["name"] = [{"use": "temp", "text": f"{mname}{suffix}"}]
            idents = [i for i in newborn.get("identifier") or [] if isinstance(i, dict)]
            if cert and cert.get("value") and not any(i.get("value") == cert["value"] for i in idents):
                idents.append({"use": "secondary", "system": cert.get("system") or C.BIRTH_CERTIFICATE,
                               "value": cert["value"],
                               "type": {"text": "出生医学证明编号"}})
            if idents:
                newborn["identifier"] = idents
            if not current_address(newborn) and mother is not None:
                cur = current_address(mother)
                if cur is not None:
                    addr = copy.deepcopy(cur[1])
                    addr["use"] = "home"
                    addr["period"] = {"start": birth_day.isoformat()}
                    newborn["address"] = [*(newborn.get("address") or []), addr]
            newborn.setdefault("active", True)
            org = self._birth_registry(repo, newborn, mother, newborn_i)
            newborn["managingOrganization"] = _ref("Organization", org)
            # ids for every entry; references between entries rewritten
            mapping: dict[str, str] = {}
            assigned: dict[int, str] = {}
            for i, e in enumerate(entries):
                res = e.get("resource")
                if not isinstance(res, dict):
                    continue
                if res is mother_rp or e.get("_mother"):
                    continue
                new_id = uuid7()
                assigned[i] = new_id
                if isinstance(e.get("fullUrl"), str):
                    mapping[e["fullUrl"]] = f"{res.get('resourceType')}/{new_id}"
            if mother is not None:
                for e in entries:
                    if e.get("_mother") and isinstance(e.get("fullUrl"), str):
                        mapping[e["fullUrl"]] = f"Patient/{mother['id']}"
            nb_id = assigned[newborn_i]
            created: dict[str, Row] = {}
            pat = repo.create("Patient", _rewrite(newborn, mapping), rid=nb_id)
            warnings += pat.issues
            created["Patient"] = pat.row
            for i, e in enumerate(entries):
                if i == newborn_i or i not in assigned:
                    continue
                res = _rewrite(e["resource"], mapping)
                res.pop("id", None)
                wr = repo.create(res["resourceType"], res, rid=assigned[i])
                warnings += wr.issues
                if res["resourceType"] == "Composition" and "Composition" not in created:
                    created["Composition"] = wr.row
            # the mother, FHIR-idiomatically: a RelatedPerson of the newborn with relationship MTH
            rp = self._mother_related_person(nb_id, mother, mother_rp, mapping)
            rp_row = repo.create("RelatedPerson", rp).row
            household = None
            if mother is not None:
                hh = self.household_of(repo, mother["id"])
                if hh is not None:
                    g = hh.resource()
                    g["member"] = [*(g.get("member") or []),
                                   {"entity": _ref("Patient", nb_id), "period": {"start": birth_day.isoformat()},
                                    "inactive": False}]
                    if isinstance(g.get("quantity"), int):
                        g["quantity"] = sum(1 for m in g["member"] if _member_current(m))
                    household = repo.update("Group", hh.id, g).row
            comp_row = created.get("Composition")
            prov = provenance("birth", [_ref("Patient", nb_id, 1)], birth_day.isoformat(), principal,
                              [("source", _ref("Composition", comp_row.id))] if comp_row else None)
            prov_row = repo.create("Provenance", prov).row
        return 201, _birth_result(pat.row.resource(), mother, rp_row, household, prov_row, warnings,
                                  comp_row)

    def _mother(self, repo: Repository, comp: dict[str, Any], entries: list[dict[str, Any]], newborn_i: int,
                warnings: list[Issue]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The mother's registry Patient (if on this node) and the RelatedPerson the document carried."""
        nb_url = entries[newborn_i].get("fullUrl")
        rp: dict[str, Any] | None = None
        candidates: list[str] = []  # Patient ids
        ident_keys: list[tuple[str, str]] = []
        for e in entries:
            res = e.get("resource") or {}
            if res.get("resourceType") == "RelatedPerson" and any(
                c.get("code") in ("MTH", "NMTH", "BIOMTH", "GESTM")
                for cc in res.get("relationship") or [] for c in cc.get("coding") or []
            ):
                rp = res
                ident_keys += [(i["system"], i["value"]) for i in res.get("identifier") or []
                               if isinstance(i, dict) and i.get("system") and i.get("value")]
        for sec in comp.get("section") or []:
            if not _is_mother_section(sec):
                continue
            for ref in sec.get("entry") or []:
                r = (ref or {}).get("reference", "")
                if r.startswith("Patient/"):
                    candidates.append(r.split("/")[1])
                else:
                    for e in entries:
                        if e.get("fullUrl") == r and (e.get("resource") or {}).get("resourceType") == "Patient" \
                                and r != nb_url:
                            e["_mother"] = True
                            ident_keys += [(i["system"], i["value"]) for i in e["resource"].get("identifier") or []
                                           if isinstance(i, dict) and i.get("system") and i.get("value")]
                            rp = rp or _patient_as_related(e["resource"])
        mother: dict[str, Any] | None = None
        for pid in candidates:
            try:
                mother = repo.read("Patient", pid).resource()
                break
            except FhirError:
                raise unprocessable(f"The mother Patient/{pid} named in the certificate is not on this node",
                                    "Bundle.entry[0].resource.section", "PHIP-4643", "not-found") from None
        if mother is None and ident_keys:
            best: dict[str, Any] | None = None
            for system, value in ident_keys:
                for row in search_all(repo, "Patient", [("identifier", f"{system}|{value}")], limit=20):
                    doc = row.resource()
                    org = (doc.get("managingOrganization") or {}).get("reference", "").partition("/")[2]
                    if org and self.is_registry_org(org) and doc.get("active") is not False:
                        best = doc
                        break
                    best = best or doc
                if best is not None and best.get("managingOrganization"):
                    break
            mother = best
        if mother is None and rp is None:
            raise unprocessable("The birth certificate names no mother: add a section 母亲 (code mother) with a "
                                "reference to her Patient, or a RelatedPerson (relationship MTH) with her ID number",
                                "Bundle.entry[0].resource.section", "PHIP-4643", "required")
        if mother is None:
            warnings.append(Issue("warning", "not-found", "The mother is not registered on this node; she is recorded "
                                  "as a RelatedPerson only", "Bundle.entry", "PHIP-4644"))
        return mother, rp

    def _birth_registry(self, repo: Repository, newborn: dict[str, Any], mother: dict[str, Any] | None,
                        newborn_i: int) -> str:
        org = (newborn.get("managingOrganization") or {}).get("reference", "").partition("/")[2]
        if org and self.is_registry_org(org):
            return org
        for p in (newborn, mother):
            cur = current_address(p) if p else None
            code = C.division_code(cur[1]) if cur else None
            if code:
                found = self.registry_org_for(repo, code)
                if found:
                    return found
        if mother is not None:
            morg = (mother.get("managingOrganization") or {}).get("reference", "").partition("/")[2]
            if morg and self.is_registry_org(morg):
                return morg
        raise unprocessable("No registry authority (an Organization of type urn:phip:cs:org-type|Z200 with the "
                            "county's division code) is known for the newborn's or the mother's address",
                            f"Bundle.entry[{newborn_i}].resource.address", "PHIP-4645", "not-found")

    def _mother_related_person(self, nb_id: str, mother: dict[str, Any] | None, carried: dict[str, Any] | None,
                               mapping: dict[str, str]) -> dict[str, Any]:
        rp: dict[str, Any] = copy.deepcopy(_rewrite(carried, mapping)) if carried else {}
        rp.pop("id", None)
        rp["resourceType"] = "RelatedPerson"
        rp["patient"] = _ref("Patient", nb_id)
        rp["active"] = True
        rels = rp.get("relationship") or []
        if not any(c.get("code") == "MTH" for cc in rels for c in cc.get("coding") or []):
            rels = [*rels, {"coding": [{"system": C.V3_ROLE, "code": "MTH", "display": "mother"}]}]
        rp["relationship"] = rels
        if mother is not None:
            idents = [i for i in rp.get("identifier") or []]
            keys = {(i.get("system"), i.get("value")) for i in idents}
            for i in mother.get("identifier") or []:
                if i.get("system") == C.ID_NUMBER and (i.get("system"), i.get("value")) not in keys:
                    idents.append({k: v for k, v in i.items() if k in ("type", "system", "value")})
            if idents:
                rp["identifier"] = idents
            for k in ("name", "telecom", "birthDate"):
                if k not in rp and mother.get(k):
                    rp[k] = copy.deepcopy(mother[k])
            rp.setdefault("gender", "female")
        return rp

    # -- death --------------------------------------------------------------------------------------
    def register_death(self, repo: Repository, patient_id: str, body: Any, principal: Any) -> dict[str, Any]:
        found = params_get(body, "date")
        if found is None:
            raise unprocessable("$register-death needs a 'date' parameter (valueDate or valueDateTime)",
                                "Parameters.parameter", "PHIP-4650", "required")
        i, p = found
        when = _value(p, "valueDateTime", "valueDate")
        day = _parse_day(when, f"Parameters.parameter[{i}].value", "PHIP-4650")
        if day > date.today():
            raise unprocessable("The date of death is in the future", f"Parameters.parameter[{i}].value", "PHIP-4650")
        cert = params_get(body, "certificate")
        cert_ref = _value(cert[1], "valueReference") if cert else None
        with repo.transaction():
            pat_row = repo.read("Patient", patient_id)
            pat = pat_row.resource()
            born = pat.get("birthDate")
            if isinstance(born, str) and len(born) >= 10 and born[:10] > day.isoformat():
                raise unprocessable(f"The date of death {day} is before the birth date {born}",
                                    f"Parameters.parameter[{i}].value", "PHIP-4651")
            if pat.get("deceasedDateTime") and str(pat["deceasedDateTime"])[:10] == day.isoformat():
                return {"patient": pat, "person": None, "stopped": [], "cards": [], "provenance": None,
                        "unchanged": True}
            patients = [patient_id]
            person = person_of(repo, patient_id)
            person_row = None
            if person is not None:
                pdoc = person.resource()
                for link in pdoc.get("link") or []:
                    ref = (link.get("target") or {}).get("reference", "")
                    if ref.startswith("Patient/") and ref[8:] not in patients:
                        patients.append(ref[8:])
                if pdoc.get("active") is not False:
                    pdoc["active"] = False
                    person_row = repo.update("Person", person.id, pdoc).row
            written: list[dict[str, str]] = []
            # the Patient named, and the other registry records of the same person
            for pid in patients:
                if pid != patient_id and not self._in_registry(pid):
                    continue
                try:
                    doc = pat if pid == patient_id else repo.read("Patient", pid).resource()
                except FhirError:
                    continue
                doc.pop("deceasedBoolean", None)
                doc["deceasedDateTime"] = when if isinstance(when, str) else day.isoformat()
                doc["active"] = False
                cur = current_address(doc)
                if cur is not None:
                    a = doc["address"][cur[0]]
                    a["use"] = "old"
                    a["period"] = {**(a.get("period") or {}), "end": day.isoformat()}
                row = repo.update("Patient", pid, doc).row
                written.append(_ref("Patient", pid, row.version))
                hh = self.household_of(repo, pid)
                if hh is not None:
                    g = hh.resource()
                    for m in g.get("member") or []:
                        if (m.get("entity") or {}).get("reference") == f"Patient/{pid}" and _member_current(m):
                            m["inactive"] = True
                            m["period"] = {**(m.get("period") or {}), "end": day.isoformat()}
                    if isinstance(g.get("quantity"), int):
                        g["quantity"] = sum(1 for m in g["member"] if _member_current(m))
                    repo.update("Group", hh.id, g)
            stopped = self._stop_reminders(repo, patients)
            cards: list[str] = []
            if self.cards is not None and person is not None:
                cards = self.cards.revoke_person(person.id, "deceased", getattr(principal, "sub", "phip"))
            if person_row is not None:
                written.append(_ref("Person", person.id, person_row.version))  # type: ignore[union-attr]
            ents = [("source", cert_ref)] if isinstance(cert_ref, dict) else None
            prov_row = repo.create("Provenance", provenance("death", written, day.isoformat(), principal, ents)).row
            final = repo.read("Patient", patient_id).resource()
        return {"patient": final, "person": person.id if person else None, "stopped": stopped, "cards": cards,
                "provenance": prov_row.id, "unchanged": False}

    def _in_registry(self, pid: str) -> bool:
        import sqlalchemy as sa

        from phip.registry.schema import resident

        with self.store.read_conn() as conn:
            return conn.execute(sa.select(resident.c.patient_id).where(resident.c.patient_id == pid)).first() \
                is not None

    def _stop_reminders(self, repo: Repository, patients: list[str]) -> list[str]:
        out: list[str] = []
        for rtype, rule in C.table()["reminder_stops"].items():
            if rtype.startswith("_"):
                continue
            refs = ",".join(f"Patient/{p}" for p in patients)
            rows = search_all(repo, rtype, [(rule["param"], refs), ("status", ",".join(rule["open"]))])
            for row in rows:
                doc = row.resource()
                if any(k in doc for k in rule.get("skip_if_present", ())):
                    continue
                doc["status"] = rule["to"]
                if rtype == "Appointment":
                    doc["cancelationReason"] = {"text": "死亡登记: the resident died"}
                elif rtype in ("Task", "MedicationRequest"):
                    doc["statusReason"] = {"text": "死亡登记: the resident died"}
                repo.update(rtype, row.id, doc)
                out.append(f"{rtype}/{row.id}")
        return out

    # -- address change and migration --------------------------------------------------------------
    def change_address(self, repo: Repository, patient_id: str, body: Any, principal: Any) -> dict[str, Any]:
        found = params_get(body, "address")
        if found is None or not isinstance(found[1].get("valueAddress"), dict):
            raise unprocessable("$change-address needs an 'address' parameter (valueAddress)", "Parameters.parameter",
                                "PHIP-4660", "required")
        ai, ap = found
        new_addr = copy.deepcopy(ap["valueAddress"])
        code = C.division_code(new_addr)
        if not code or not valid_division(code):
            raise unprocessable(f"The new address needs a valid {C.DIVISION_EXT} extension (GB/T 2260 code), not "
                                f"{code!r}", f"Parameters.parameter[{ai}].valueAddress.extension", "PHIP-4661",
                                "code-invalid")
        dp = params_get(body, "date")
        day = _parse_day(_value(dp[1], "valueDate", "valueDateTime"), f"Parameters.parameter[{dp[0]}].value",
                         "PHIP-4662") if dp else date.today()
        rp = params_get(body, "reason")
        reason = _value(rp[1], "valueString") if rp else None
        op = params_get(body, "managingOrganization")
        org_override = ((_value(op[1], "valueReference") or {}).get("reference", "").partition("/")[2]) if op else ""
        hp = params_get(body, "withHousehold")
        with_household = bool(_value(hp[1], "valueBoolean")) if hp else False
        with repo.transaction():
            pat = repo.read("Patient", patient_id).resource()
            if pat.get("deceasedDateTime") or pat.get("deceasedBoolean") is True:
                raise unprocessable(f"Patient/{patient_id} is registered as deceased", "Patient.deceased",
                                    "PHIP-4663", "business-rule")
            members = [patient_id]
            hh = self.household_of(repo, patient_id) if with_household else None
            if hh is not None:
                for m in hh.resource().get("member") or []:
                    ref = (m.get("entity") or {}).get("reference", "")
                    if ref.startswith("Patient/") and _member_current(m) and ref[8:] not in members:
                        members.append(ref[8:])
            old_county = self._county_of(pat)
            migration = old_county is not None and old_county != code[:6]
            new_org = None
            if migration or org_override:
                new_org = org_override or self.registry_org_for(repo, code)
                if not new_org:
                    raise unprocessable(f"No registry authority of county {code[:6]} is known on this node (an "
                                        "Organization of type Z200 with that division code); name one with "
                                        "managingOrganization", f"Parameters.parameter[{ai}].valueAddress",
                                        "PHIP-4664", "not-found")
                repo.read("Organization", new_org)
            written: list[dict[str, str]] = []
            sources: list[tuple[str, dict[str, str]]] = []
            for pid in members:
                row = pat if pid == patient_id else repo.read("Patient", pid).resource()
                if row.get("deceasedDateTime") or row.get("deceasedBoolean") is True:
                    continue
                cur_version = int((row.get("meta") or {}).get("versionId") or 0) or None
                cur = current_address(row)
                addrs = list(row.get("address") or [])
                if cur is not None:
                    start = (cur[1].get("period") or {}).get("start")
                    if isinstance(start, str) and start[:10] > day.isoformat():
                        raise unprocessable(f"The move date {day} is before the current address began ({start})",
                                            "Parameters.parameter", "PHIP-4662")
                    old = dict(cur[1])
                    old["use"] = "old"
                    old["period"] = {**(old.get("period") or {}), "end": day.isoformat()}
                    addrs[cur[0]] = old
                a = copy.deepcopy(new_addr)
                a["use"] = "home"
                a["period"] = {"start": day.isoformat()}
                addrs.append(a)
                row["address"] = addrs
                if new_org:
                    row["managingOrganization"] = _ref("Organization", new_org)
                res = repo.update("Patient", pid, row).row
                written.append(_ref("Patient", pid, res.version))
                if cur_version:
                    sources.append(("revision", _ref("Patient", pid, cur_version)))
            if hh is not None and new_org:
                g = hh.resource()
                g["managingEntity"] = _ref("Organization", new_org)
                repo.update("Group", hh.id, g)
            prov = provenance("migration" if migration else "address-change", written, day.isoformat(), principal,
                              sources)
            if reason:
                prov["reason"].append({"text": reason})
            prov_row = repo.create("Provenance", prov).row
            final = repo.read("Patient", patient_id).resource()
        return {"patient": final, "moved": [w["reference"].split("/_history")[0] for w in written],
                "migration": migration, "from": old_county, "to": code[:6], "organization": new_org,
                "provenance": prov_row.id}

    def _county_of(self, pat: dict[str, Any]) -> str | None:
        cur = current_address(pat)
        code = C.division_code(cur[1]) if cur else None
        if code:
            return code[:6]
        org = (pat.get("managingOrganization") or {}).get("reference", "").partition("/")[2]
        if org:
            with self.store.read_conn() as conn:
                region = self.index.org_info(conn, org)[1]
            return region[:6] or None
        return None

    # -- households -------------------------------------------------------------------------------------
    def household_members(self, repo: Repository, group: Row, include_past: bool = False) -> list[Row]:
        doc = group.resource()
        ids = []
        for m in doc.get("member") or []:
            ref = (m.get("entity") or {}).get("reference", "")
            if ref.startswith("Patient/") and (include_past or _member_current(m)):
                ids.append(("Patient", ref[8:]))
        rows = {r.id: r for r in repo.rows_by_ids(ids)}
        return [rows[i] for _t, i in ids if i in rows]


# -- module helpers ----------------------------------------------------------------------------------
def _member_current(m: dict[str, Any]) -> bool:
    if m.get("inactive") is True:
        return False
    end = (m.get("period") or {}).get("end")
    return not end or str(end)[:10] > date.today().isoformat()


def _is_mother_section(sec: dict[str, Any]) -> bool:
    if not isinstance(sec, dict):
        return False
    if sec.get("title") in ("母亲", "mother", "Mother"):
        return True
    return any(c.get("code") in ("mother", "MTH") for c in (sec.get("code") or {}).get("coding") or [])


def _patient_as_related(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "RelatedPerson"}
    for k in ("identifier", "name", "telecom", "gender", "birthDate"):
        if p.get(k):
            out[k] = copy.deepcopy(p[k])
    return out


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "reference" and isinstance(v, str) and v in mapping:
                out[k] = mapping[v]
            else:
                out[k] = _rewrite(v, mapping)
        return out
    if isinstance(value, list):
        return [_rewrite(v, mapping) for v in value]
    return value


def _check_birth_bundle(bundle: Any) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "document":
        raise FhirError(400, "$register-birth takes a document Bundle (type document) whose first entry is the "
                        "birth certificate Composition", expression="Bundle.type", msg_id="PHIP-4646")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    if not entries or (entries[0].get("resource") or {}).get("resourceType") != "Composition":
        raise unprocessable("The first entry of a document Bundle must be its Composition", "Bundle.entry[0].resource",
                            "PHIP-4646", "structure")
    comp = entries[0]["resource"]
    wanted = set(C.table()["document_types"]["birth"])
    if not any(code in wanted for _i, _j, code in C.codes_of(comp.get("type"), C.DOCUMENT_TYPE)):
        raise unprocessable(f"The Composition is not a birth certificate (type {C.DOCUMENT_TYPE}|"
                            f"{'/'.join(sorted(wanted))} 出生医学证明)", "Bundle.entry[0].resource.type", "PHIP-4647",
                            "code-invalid")
    subj = (comp.get("subject") or {}).get("reference")
    for i, e in enumerate(entries):
        if e.get("fullUrl") == subj and (e.get("resource") or {}).get("resourceType") == "Patient":
            for k, other in enumerate(entries):
                res = other.get("resource")
                if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                    raise unprocessable("Every entry needs a resource", f"Bundle.entry[{k}].resource", "PHIP-4646",
                                        "structure")
            return comp, [copy.deepcopy(e) for e in entries], i
    raise unprocessable("Composition.subject must reference the newborn's Patient entry (its fullUrl)",
                        "Bundle.entry[0].resource.subject", "PHIP-4648", "structure")


def _birth_result(patient: dict[str, Any], mother: dict[str, Any] | None, rp: Row | None, household: Row | None,
                  prov: Row | None, issues: list[Issue], comp: Row | None = None) -> dict[str, Any]:
    from phip.fhir.errors import outcome

    params: list[dict[str, Any]] = [{"name": "patient", "resource": patient}]
    if mother is not None:
        params.append({"name": "mother", "valueReference": _ref("Patient", mother["id"])})
    if rp is not None:
        params.append({"name": "relatedPerson", "valueReference": _ref("RelatedPerson", rp.id)})
    if comp is not None:
        params.append({"name": "composition", "valueReference": _ref("Composition", comp.id)})
    if household is not None:
        params.append({"name": "household", "valueReference": _ref("Group", household.id)})
    if prov is not None:
        params.append({"name": "provenance", "valueReference": _ref("Provenance", prov.id)})
    if issues:
        params.append({"name": "outcome", "resource": outcome(issues)})
    return {"resourceType": "Parameters", "parameter": params}
