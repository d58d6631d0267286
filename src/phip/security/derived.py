"""Facts the access filters join in SQL, kept up to date as resources are written.

- each Patient's GB/T 2260 region (``security_patient_region``): the division code of the
  home address (extension ``urn:phip:ext:division-code``, or a numeric ``district``), else
  the managing organization's (its address the same way, else digits 3–8 of its unified
  social credit code, GB 32100);
- the rules of each active privacy Consent (``security_consent``), one row per rule and per
  Patient it covers (the named Patient and those linked to it through the master patient
  index, evaluated when the Consent is written):

  * ``provision.type = deny`` without ``securityLabel`` (at the root or nested):
    ``deny-outside`` — records are not shared outside the recording institution;
  * a deny provision with ``securityLabel``: ``deny-label`` — resources carrying that label
    are not shared outside the recording institution;
  * a permit provision with ``actor.reference = Organization/X``: ``permit-org`` — X sees
    despite the denials.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import sqlalchemy as sa

from phip.core.hooks import WriteEvent
from phip.security import relations
from phip.security.tables import consent, patient_region
from phip.store import schema as S

DIVISION_EXT = ("urn:phip:ext:division-code",)
USCC_SYSTEMS = ("urn:oid:2.16.156.10011.1.5", "urn:phip:id:uscc", "http://www.gb.gov.cn/gb32100")
_DIV = re.compile(r"^\d{6}(\d{3}(\d{3})?)?$")


def _address_region(addresses: Any) -> str | None:
    if not isinstance(addresses, list):
        return None
    ordered = sorted((a for a in addresses if isinstance(a, dict)),
                     key=lambda a: (a.get("use") == "old", a.get("use") not in ("home", None)))
    for a in ordered:
        for ext in a.get("extension") or []:
            v = ext.get("valueCode") or ext.get("valueString") if isinstance(ext, dict) else None
            if isinstance(ext, dict) and ext.get("url") in DIVISION_EXT and isinstance(v, str) and _DIV.match(v):
                return v
        d = a.get("district")
        if isinstance(d, str) and _DIV.match(d):
            return d
    return None


def org_region(doc: dict[str, Any]) -> str | None:
    reg = _address_region(doc.get("address"))
    if reg:
        return reg
    for ident in doc.get("identifier") or []:
        v = ident.get("value") if isinstance(ident, dict) else None
        if isinstance(v, str) and len(v) == 18 and v[2:8].isdigit() and (
                ident.get("system") in USCC_SYSTEMS or "uscc" in str(ident.get("system", "")).lower()):
            return v[2:8]
    return None


def patient_region_of(conn: Any, doc: dict[str, Any]) -> str | None:
    reg = _address_region(doc.get("address"))
    if reg:
        return reg
    org = relations.bare((doc.get("managingOrganization") or {}).get("reference"), "Organization")
    if not org:
        return None
    rec = conn.execute(sa.select(S.resources.c.content).where(
        S.resources.c.type == "Organization", S.resources.c.id == org, S.resources.c.deleted == sa.false())).first()
    if rec is None or rec.content is None:
        return None
    return org_region(_doc(getattr(conn, "codec", None), rec.content))


def _doc(codec: Any, content: Any) -> dict[str, Any]:
    """A stored resource as a dict (opened when encryption at rest sealed it)."""
    from phip.store.repository import content_bytes

    raw = content_bytes(content) or b"{}"
    out: dict[str, Any] = orjson.loads(codec.open(raw) if codec is not None else raw)
    return out


def consent_rules(doc: dict[str, Any]) -> list[tuple[str, str | None, str | None, str | None]]:
    """(rule, label system, label code, organization) of an active Consent."""
    if doc.get("status") != "active":
        return []
    out: list[tuple[str, str | None, str | None, str | None]] = []

    def walk(prov: dict[str, Any]) -> None:
        ptype = prov.get("type")
        labels = [c for c in prov.get("securityLabel") or [] if isinstance(c, dict) and c.get("code")]
        actors = [relations.bare(((a.get("reference") or {}).get("reference")), "Organization")
                  for a in prov.get("actor") or [] if isinstance(a, dict)]
        orgs = [a for a in actors if a and "/" not in a]
        if ptype == "deny":
            if labels:
                out.extend(("deny-label", c.get("system"), c["code"], None) for c in labels)
            else:
                out.append(("deny-outside", None, None, None))
        elif ptype == "permit" and orgs:
            out.extend(("permit-org", None, None, o) for o in orgs)
        for sub in prov.get("provision") or []:
            if isinstance(sub, dict):
                walk(sub)

    prov = doc.get("provision")
    if isinstance(prov, dict):
        walk(prov)
    return list(dict.fromkeys(out))


def consent_patient(doc: dict[str, Any]) -> str | None:
    return relations.bare((doc.get("patient") or {}).get("reference"), "Patient")


def write_consent(conn: Any, cid: str, doc: dict[str, Any] | None) -> None:
    conn.execute(consent.delete().where(consent.c.consent_id == cid))
    if doc is None:
        return
    rules = consent_rules(doc)
    pid = consent_patient(doc)
    if not rules or not pid:
        return
    patients = relations.linked_patients(conn, pid)
    conn.execute(consent.insert(), [
        {"consent_id": cid, "patient_id": p, "rule": rule, "system": system, "code": code, "org": org}
        for p in sorted(patients) for rule, system, code, org in rules
    ])


def write_region(conn: Any, pid: str, doc: dict[str, Any] | None) -> None:
    """The Patient's row of ``security_patient_region`` (driver SQL: one Patient of a write's many
    statements; :func:`patient_region_of` the same in SQL)."""
    m = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(f"DELETE FROM security_patient_region WHERE patient_id = {m}", (pid,))
    if doc is None:
        return
    reg = _address_region(doc.get("address"))
    if reg is None:
        org = relations.bare((doc.get("managingOrganization") or {}).get("reference"), "Organization")
        if org:
            rec = conn.exec_driver_sql(
                f"SELECT content FROM resources WHERE type = 'Organization' AND id = {m} AND NOT deleted",
                (org,)).first()
            if rec is not None and rec[0] is not None:
                reg = org_region(_doc(getattr(conn, "codec", None), rec[0]))
    if reg:
        conn.exec_driver_sql(f"INSERT INTO security_patient_region (patient_id, region) VALUES ({m}, {m})",
                             (pid, reg))


def after_write(tx: Any, event: WriteEvent) -> None:
    if event.resource_type == "Patient":  # (reads the resources table only: the pending index can wait)
        write_region(tx.conn, event.id, event.resource)
    elif event.resource_type == "Consent":
        tx.flush_pending()
        write_consent(tx.conn, event.id, event.resource)


def after_person(tx: Any, event: WriteEvent) -> None:
    """A master Person written (REST or the master index's batch): the Consents that cover one of
    its Patients are evaluated again, so they reach a record linked to the resident later."""
    if event.resource_type != "Person" or event.resource is None:
        return
    pids = [p for p in (relations.bare(((lk.get("target") or {}).get("reference")), "Patient")
                        for lk in event.resource.get("link") or () if isinstance(lk, dict)) if p]
    if not pids:
        return
    conn = tx.conn
    m = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    cids = sorted({r[0] for r in conn.exec_driver_sql(  # (driver SQL: once per Person written)
        f"SELECT consent_id FROM security_consent WHERE patient_id IN ({', '.join([m] * len(pids))})", tuple(pids))})
    if not cids:
        return
    flush = getattr(tx, "flush_pending", None)
    if flush is not None:
        flush()  # the Person's links must be in the index the evaluation reads
    r = S.resources
    for cid in cids:
        row = conn.execute(sa.select(r.c.content).where(r.c.type == "Consent", r.c.id == cid,
                                                       r.c.deleted == sa.false())).first()
        write_consent(conn, cid, _doc(getattr(tx, "codec", None), row.content) if row is not None else None)


def rebuild(store: Any, types: set[str] | None = None) -> dict[str, int]:
    """Recompute the derived tables from the stored resources (after an import), in batches."""
    counts = {"Patient": 0, "Consent": 0}
    r = S.resources
    orgs: dict[str, str | None] = {}
    with store.write_tx() as tx:
        conn = tx.conn
        for rtype, table in (("Patient", patient_region), ("Consent", consent)):
            if types is not None and rtype not in types:
                continue
            conn.execute(table.delete())
            last = 0
            while True:
                recs = conn.execute(sa.select(r.c.rid, r.c.id, r.c.content).where(
                    r.c.type == rtype, r.c.deleted == sa.false(), r.c.rid > last).order_by(r.c.rid).limit(2000)).all()
                if not recs:
                    break
                rows = []
                for rec in recs:
                    doc = _doc(store.codec, rec.content)
                    counts[rtype] += 1
                    if rtype == "Consent":
                        write_consent(conn, rec.id, doc)
                        continue
                    reg = _address_region(doc.get("address"))
                    if reg is None:
                        org = relations.bare((doc.get("managingOrganization") or {}).get("reference"), "Organization")
                        if org and org not in orgs:
                            orgs[org] = patient_region_of(conn, {"managingOrganization": {
                                "reference": f"Organization/{org}"}})
                        reg = orgs.get(org) if org else None
                    if reg:
                        rows.append({"patient_id": rec.id, "region": reg})
                if rows:
                    conn.execute(patient_region.insert(), rows)
                last = recs[-1].rid
    return counts
