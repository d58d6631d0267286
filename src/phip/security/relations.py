"""The relationships that open a patient's record to a role, as SQL (sets of Patient ids).

Each function returns a ``SELECT`` of Patient ids that the access filters of
:mod:`phip.security.access` put inside ``IN (…)``: the database does the work, so searches,
paging and ``_total`` stay right, and nothing is filtered page by page in Python.

- **treating** (clinician): a Patient with an Encounter (``service-provider``), an
  Appointment (``actor``: a Location, HealthcareService or PractitionerRole of the
  organization) or a referral ServiceRequest (``performer``) at the clinician's
  organization dated within the window, or managed by that organization
  (``Patient.managingOrganization``: the institution's own record).
- **region** (public-health): Patients whose GB/T 2260 region (home address division code,
  else the managing organization's) starts with the staff member's region prefix.
- **signed** (family-doctor): Patients of an active family-doctor contract, a CareTeam with the
  contract category whose ``participant`` is the doctor (or the doctor's organization when
  the token names no practitioner).
- **own** (resident): the Patients linked from the resident's Person, and the Patients of
  RelatedPersons linked from that Person whose relationship is parent or guardian (dependants).
- **coverage** (insurer): beneficiaries of Coverages paid by the insurer, patients of its Claims.

The sets of clinician, family doctor and insurer are widened by the master patient index:
Patients linked through one Person (``Person.link``) or ``Patient.link`` are the same resident.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from phip.store import schema as S

R = S.resources
pk = S.param_key

#: HL7 v3 RoleCode relationships that make a RelatedPerson a guardian of the patient
GUARDIAN_CODES = ("MTH", "FTH", "PRN", "NMTH", "NFTH", "NPRN", "GUARD", "GRPRN", "GRMTH", "GRFTH", "STPPRN",
                  "ADOPTP", "ADOPTF", "ADOPTM")


def bare(ref: str | None, rtype: str) -> str | None:
    """``Organization/X`` or ``X`` → ``X``."""
    if not ref:
        return None
    return ref[len(rtype) + 1:] if ref.startswith(rtype + "/") else ref


def _refs_to(rtype: str, param: str, target_type: str, target_ids: Any, alias: str) -> Any:
    """rids of ``rtype`` resources whose ``param`` points at ``target_type`` ids (a value or a select)."""
    y = S.idx_ref.alias(alias)
    cond = y.c.target_id == target_ids if isinstance(target_ids, str) else y.c.target_id.in_(target_ids)
    return sa.select(y.c.rid).where(S.rows_of(y, S.param_rows(rtype, param), y.c.target_type == target_type, cond))


def _patients_of(rtype: str, rids: list[Any], alias: str, param: str = "patient") -> Any:
    x = S.idx_ref.alias(alias)
    return sa.select(x.c.target_id.label("pid")).where(
        S.rows_of(x, S.param_rows(rtype, param), x.c.target_type == "Patient", *[x.c.rid.in_(q) for q in rids]))


def managed_by(org: str) -> Any:
    """Patients whose managingOrganization is ``org`` (the institution's own records)."""
    m = R.alias("pm")
    return sa.select(m.c.id.label("pid")).where(
        m.c.type == "Patient", m.c.rid.in_(_refs_to("Patient", "organization", "Organization", org, "pmx")))


def treating(org: str, since_us: int) -> Any:
    parts = [managed_by(org)]
    for rtype, org_param, date_param in (("Encounter", "service-provider", "date"), ("Appointment", "actor", "date"),
                                         ("ServiceRequest", "performer", "authored")):
        d = S.idx_date.alias(f"d_{rtype}")
        dated = sa.select(d.c.rid).where(d.c.param == pk(rtype, date_param), d.c.high >= since_us)
        at_org = (_appointment_at(org) if rtype == "Appointment"
                  else _refs_to(rtype, org_param, "Organization", org, f"o_{rtype}"))
        parts.append(_patients_of(rtype, [at_org, dated], f"p_{rtype}"))
    return linked(sa.union(*parts))


def _appointment_at(org: str) -> Any:
    """Appointments whose participant is a Location, HealthcareService or PractitionerRole of ``org``
    (an Appointment cannot name an Organization as its actor)."""
    y = S.idx_ref.alias("ap_actor")
    conds = []
    for kind in ("Location", "HealthcareService", "PractitionerRole"):
        m = R.alias(f"ap_{kind}")
        ids = sa.select(m.c.id).where(m.c.type == kind, m.c.rid.in_(
            _refs_to(kind, "organization", "Organization", org, f"ap_o_{kind}")))
        conds.append(sa.and_(y.c.target_type == kind, y.c.target_id.in_(ids)))
    return sa.select(y.c.rid).where(y.c.param == pk("Appointment", "actor"), sa.or_(*conds))


def region(prefix: str) -> Any:
    from phip.security.tables import patient_region as pr

    return sa.select(pr.c.patient_id.label("pid")).where(pr.c.region >= prefix, pr.c.region < prefix + "~")


def signed(practitioner: str | None, org: str | None, contract: str) -> Any:
    system, _, code = contract.partition("|")
    t = S.idx_token.alias("ct_cat")
    s = S.idx_token.alias("ct_status")
    cat = sa.select(t.c.rid).where(t.c.param == pk("CareTeam", "category"), t.c.code == code,
                                   t.c.system == system if system else sa.true())
    active = sa.select(s.c.rid).where(s.c.param == pk("CareTeam", "status"), s.c.code == "active")
    if practitioner:
        who = _refs_to("CareTeam", "participant", "Practitioner", practitioner, "ct_who")
    elif org:
        who = _refs_to("CareTeam", "participant", "Organization", org, "ct_who")
    else:
        return sa.select(sa.literal("").label("pid")).where(sa.false())
    return linked(_patients_of("CareTeam", [cat, active, who], "ct_p"))


def own(person: str) -> Any:
    p = R.alias("own_person")
    person_rid = sa.select(p.c.rid).where(p.c.type == "Person", p.c.id == person, p.c.deleted == sa.false())
    mine = _patients_of("Person", [person_rid], "own_x")
    xr = S.idx_ref.alias("own_rp")
    rp_ids = sa.select(xr.c.target_id).where(S.rows_of(xr, S.param_rows("Person", "relatedperson"),
                                                       xr.c.target_type == "RelatedPerson", xr.c.rid.in_(person_rid)))
    rp = R.alias("own_rpr")
    rp_rids = sa.select(rp.c.rid).where(rp.c.type == "RelatedPerson", rp.c.id.in_(rp_ids))
    t = S.idx_token.alias("own_rel")
    guardian = sa.select(t.c.rid).where(t.c.param == pk("RelatedPerson", "relationship"),
                                        t.c.code.in_(GUARDIAN_CODES))
    dependants = _patients_of("RelatedPerson", [rp_rids, guardian], "own_dep")
    return sa.union(mine, dependants)


def coverage(org: str) -> Any:
    x = S.idx_ref.alias("cov_b")
    paid = _refs_to("Coverage", "payor", "Organization", org, "cov_payor")
    beneficiaries = sa.select(x.c.target_id.label("pid")).where(
        S.rows_of(x, [*S.param_rows("Coverage", "beneficiary"), *S.param_rows("Coverage", "patient")],
                  x.c.target_type == "Patient", x.c.rid.in_(paid)))
    claims = _patients_of("Claim", [_refs_to("Claim", "insurer", "Organization", org, "clm_ins")], "clm_p")
    return linked(sa.union(beneficiaries, claims))


def linked(base: Any) -> Any:
    """``base`` (a select of Patient ids) and the Patients linked to them: through one Person
    (``Person.link``) or ``Patient.link`` in either direction."""
    b = base.cte("acc_base")  # one evaluation, referenced four times (and no deep nesting)
    ids = sa.select(b.c[0])
    x1 = S.idx_ref.alias("lk1")
    x2 = S.idx_ref.alias("lk2")
    persons = sa.select(x1.c.rid).where(S.rows_of(x1, S.param_rows("Person", "patient"), x1.c.target_type == "Patient",
                                                  x1.c.target_id.in_(ids)))
    via_person = sa.select(x2.c.target_id).where(S.rows_of(x2, S.param_rows("Person", "patient"),
                                                           x2.c.target_type == "Patient", x2.c.rid.in_(persons)))
    x3 = S.idx_ref.alias("lk3")
    pr = R.alias("lkp")
    base_rids = sa.select(pr.c.rid).where(pr.c.type == "Patient", pr.c.id.in_(ids))
    forward = sa.select(x3.c.target_id).where(S.rows_of(x3, S.param_rows("Patient", "link"),
                                                        x3.c.target_type == "Patient", x3.c.rid.in_(base_rids)))
    x4 = S.idx_ref.alias("lk4")
    pr2 = R.alias("lkp2")
    backward = sa.select(pr2.c.id).where(pr2.c.type == "Patient", pr2.c.rid.in_(
        sa.select(x4.c.rid).where(S.rows_of(x4, S.param_rows("Patient", "link"), x4.c.target_id.in_(ids)))))
    return sa.union(ids, via_person, forward, backward)


def linked_patients(conn: Any, patient: str) -> set[str]:
    """Every Patient id linked to ``patient`` (itself included), evaluated now."""
    q = linked(sa.select(sa.literal(patient).label("pid")))
    return {r[0] for r in conn.execute(q)} | {patient}
