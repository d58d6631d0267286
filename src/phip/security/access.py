"""Authorization in one place: who may see and do what (deny by default).

The :class:`Policy` is installed on the store (``store.access``); every repository the
node makes asks it for the :class:`Scope` of the current caller
(``phip.api.context.current_principal``).  A scope turns the caller's role, SMART scopes,
relationships, break-glass and the residents' Consents into

- SQL conditions that every search, ``_include``/``_revinclude``, history, ``$everything``
  and ``$export`` carries (so paging and ``_total`` count only what the caller may see);
- checks on each read by id, version read, write and whole-node operation, raising
  :class:`AccessDenied` (403) that names the rule that denied;
- the view of each returned resource (masked where the role has no need).

Roles (see ``docs/security.md``): ``admin`` and ``node`` see everything; ``clinician``
(treating relationship or break-glass), ``public-health`` (residents of the region),
``family-doctor`` (signed residents), ``insurer`` (financial records of its insured),
``resident`` (own record and dependants'), ``manager`` (directory data and aggregate
MeasureReports only), ``auditor`` (the audit trail only).

Consent is applied after authorization (can-see decides, will-see hides): for the roles in
``consent_roles`` a resident's active Consent can deny sharing outside the recording
institution (the organization managing the Patient record), deny sensitive categories
(security labels) and permit named organizations.  Break-glass (purpose of use ETREAT with a
reason) opens every record and overrides Consent; the reason travels with the principal so
audit records it.

:func:`can_read` is the decision API for other capabilities (audit).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import orjson
import sqlalchemy as sa

from phip.fhir import definitions as defs
from phip.fhir.errors import FhirError, Issue
from phip.security import masking, relations, scopes
from phip.security.config import SecurityConfig
from phip.security.tokens import ETREAT, Principal
from phip.store import schema as S

R = S.resources
pk = S.param_key
FULL_ROLES = frozenset({"admin", "node"})
MSG = "PHIP-3403"

#: non-personal data every role that reads records may read (directories, definitions, terminology)
DIRECTORY = frozenset({
    "Organization", "OrganizationAffiliation", "Location", "Practitioner", "PractitionerRole", "HealthcareService",
    "Endpoint", "InsurancePlan", "Medication", "MedicationKnowledge", "Substance", "SubstanceSpecification",
    "ActivityDefinition", "PlanDefinition", "Questionnaire", "Library", "Measure", "CodeSystem", "ValueSet",
    "ConceptMap", "NamingSystem", "StructureDefinition", "SearchParameter", "OperationDefinition",
    "CapabilityStatement", "CompartmentDefinition", "ImplementationGuide", "StructureMap", "TerminologyCapabilities",
    "GraphDefinition", "MessageDefinition", "EventDefinition", "ObservationDefinition", "SpecimenDefinition",
    "ChargeItemDefinition", "DeviceDefinition", "ResearchDefinition", "ResearchElementDefinition",
    "EffectEvidenceSynthesis", "RiskEvidenceSynthesis", "Evidence", "EvidenceVariable", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductIngredient", "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical", "CatalogEntry", "DeviceMetric", "BiologicallyDerivedProduct",
})
#: what an insurer may read and write besides Patients
FINANCIAL = frozenset({
    "Coverage", "Claim", "ClaimResponse", "ExplanationOfBenefit", "CoverageEligibilityRequest",
    "CoverageEligibilityResponse", "PaymentNotice", "PaymentReconciliation", "Account", "Invoice", "ChargeItem",
    "EnrollmentRequest", "EnrollmentResponse",
})
RULE_OF_ROLE = {
    "clinician": "clinician-treating-relationship",
    "public-health": "public-health-region",
    "family-doctor": "family-doctor-signed-residents",
    "insurer": "insurer-coverage",
    "resident": "resident-own-record",
    "manager": "manager-aggregates-only",
    "auditor": "auditor-audit-trail-only",
}


@cache
def compartment() -> dict[str, tuple[str, ...]]:
    """Personal-data types: the Patient compartment (params placing a resource in it)."""
    from phip.bulk.export import patient_compartment_types

    return {t: tuple(p for p in ps if p != "{def}") for t, ps in patient_compartment_types().items()}


@cache
def clinical_types() -> frozenset[str]:
    return frozenset(compartment()) - {"AuditEvent"}


class AccessDenied(FhirError):
    """403, naming the rule that denied (``rule``; also in the ``X-Phip-Rule`` header)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(403, f"Access denied by rule '{rule}': {detail}", code="forbidden", msg_id=MSG,
                         headers={"X-Phip-Rule": rule})
        self.rule = rule
        self.issues = [Issue("error", "forbidden", f"Access denied by rule '{rule}': {detail}", None, MSG)]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PatientSets:
    """A scope's patient sets, evaluated (for the read-by-id check)."""

    allowed: frozenset[str]
    blocked: frozenset[str]
    deny_labels: dict[str, set[tuple[str, str]]]


#: the resource types whose writes change who may see what (their writes drop the cached decisions)
RELATION_TYPES = frozenset({"Consent", "Person", "Patient", "RelatedPerson", "CareTeam", "Coverage"})
#: how often a process looks at the change feed for other processes' relation changes
SYNC_SECONDS = 1.0


class Policy:
    """The store's access policy (``store.access``), built from the node's ``[security]`` settings."""

    def __init__(self, config: SecurityConfig) -> None:
        self.config = config
        self._scopes: OrderedDict[tuple[Any, ...], tuple[float, Scope]] = OrderedDict()
        self._lock = threading.Lock()
        #: (principal key, rid, version) → expiry of a positive read decision
        self.decisions: OrderedDict[tuple[Any, ...], float] = OrderedDict()
        #: principal key → (expiry, the scope's evaluated patient sets)
        self._sets: OrderedDict[tuple[Any, ...], tuple[float, PatientSets]] = OrderedDict()
        #: the change feed's last change to a relation type, as this process last saw it, and when to
        #: look again: another worker process's writes drop this one's caches within a second
        self._epoch: int | None = None
        self._next_sync = 0.0

    def sync(self, conn: Any) -> None:
        """Drop the cached decisions when another process changed a relation (at most one look a second)."""
        now = time.monotonic()
        if now < self._next_sync:
            return
        self._next_sync = now + SYNC_SECONDS
        c = S.changes
        top = conn.execute(sa.select(sa.func.max(c.c.seq))).scalar()
        top = int(top) if top is not None else 0
        if self._epoch is not None and top != self._epoch:
            # only the changes since the last look are read (a range of the feed's primary key)
            hit = conn.execute(sa.select(c.c.seq).where(c.c.seq > self._epoch, c.c.seq <= top,
                                                        c.c.type.in_(sorted(RELATION_TYPES))).limit(1)).first()
            if hit is not None:
                self.forget()
        self._epoch = top

    def scope(self) -> Scope | None:
        from phip.api.context import current_principal
        from phip.core.access import system_access

        p = current_principal.get()
        if p is None or system_access.get():
            return None
        return self.scope_for(p)

    def scope_for(self, p: Principal) -> Scope | None:
        if p.role in FULL_ROLES and (p.scopes is None or all(scopes.any_type(p.scopes, a) for a in "cruds")):
            return None  # administrators and nodes with every right: no scope, no cost
        key = p.key
        now = time.monotonic()
        hit = self._scopes.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        s = Scope(p, self)
        with self._lock:
            self._scopes[key] = (now + 60.0, s)
            if len(self._scopes) > 2000:
                self._scopes.popitem(last=False)
        return s

    def remember(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            self.decisions[key] = time.monotonic() + 30.0
            if len(self.decisions) > 50000:
                self.decisions.popitem(last=False)

    def forget(self) -> None:
        with self._lock:
            self.decisions.clear()
            self._sets.clear()

    def sets_for(self, scope: Scope, conn: Any) -> PatientSets:
        self.sync(conn)
        key = scope.p.key
        now = time.monotonic()
        hit = self._sets.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        sets = scope.materialise(conn)
        with self._lock:
            self._sets[key] = (now + 30.0, sets)
            if len(self._sets) > 500:
                self._sets.popitem(last=False)
        return sets

    def known(self, key: tuple[Any, ...]) -> bool:
        exp = self.decisions.get(key)
        return exp is not None and exp > time.monotonic()


class Scope:
    """What one principal may see and do (see the module docstring)."""

    def __init__(self, p: Principal, policy: Policy) -> None:
        self.p = p
        self.policy = policy
        self.cfg = policy.config
        self.role = p.role
        self.full = p.role in FULL_ROLES
        self.org = relations.bare(p.org, "Organization")
        self.break_glass = bool(p.break_glass and p.purpose_of_use == ETREAT
                                and p.role in self.cfg.break_glass_roles)
        self.mask_fields = tuple(self.cfg.masking.get(p.role, ()))

    # -- what the role may touch -------------------------------------------------------------------
    def rule(self) -> str:
        if self.break_glass:
            return "break-glass"
        return RULE_OF_ROLE.get(self.role, "admin" if self.full else "deny-by-default")

    def personal_types(self) -> frozenset[str]:
        """Personal-data types the role may see (subject to its relationship)."""
        if self.full:
            return frozenset(compartment())
        if self.role in ("clinician", "public-health", "family-doctor"):
            return clinical_types()
        if self.role == "resident":
            return frozenset(compartment())  # AuditEvent included: who looked at my record
        if self.role == "insurer":
            return frozenset({"Patient"} | (FINANCIAL & set(compartment())))
        if self.role == "auditor":
            return frozenset({"AuditEvent"})
        return frozenset()

    def readable_types(self) -> frozenset[str] | None:
        """Every type the role may read at all (None: every type)."""
        if self.full:
            return None
        out = set(self.personal_types())
        if self.role not in ("auditor",):
            out |= DIRECTORY
        if self.role == "insurer":
            out |= FINANCIAL
        if self.role == "manager":
            out.add("MeasureReport")
        return frozenset(out)

    # -- the patients the role may see ---------------------------------------------------------------
    @cached_property
    def patients(self) -> Any:
        """A select of Patient ids, or None when no patient restriction applies (full, break-glass).

        A common table expression: the database evaluates the set once per statement however
        often the filters refer to it."""
        q = self._patients()
        if q is None:
            return None
        cte = q.cte("acc_patients")
        return sa.select(cte.c[0])

    def _patients(self) -> Any:
        if self.full or self.break_glass or (self.role == "auditor"):
            return None
        p = self.p
        if self.role == "clinician":
            if not self.org:
                return _nothing()
            since = int((time.time() // 3600) * 3600 - self.cfg.treating_window_days * 86400) * 1_000_000
            return relations.treating(self.org, since)
        if self.role == "public-health":
            prefix = _region_prefix(p.region)
            return relations.region(prefix) if prefix else _nothing()
        if self.role == "family-doctor":
            return relations.signed(relations.bare(p.practitioner or (p.sub if p.sub.startswith("Practitioner/")
                                                                      else None), "Practitioner"),
                                    self.org, self.cfg.family_doctor_contract)
        if self.role == "resident":
            person = relations.bare(p.person, "Person")
            return relations.own(person) if person else _nothing()
        if self.role == "insurer":
            return relations.coverage(self.org) if self.org else _nothing()
        return _nothing()

    def patient_context(self, rtype: str, action: str) -> Any:
        """The SMART patient-context restriction for ``rtype``, or None."""
        ctx = scopes.grants(self.p.scopes, rtype, action)
        if ctx != "patient":
            return None
        pid = relations.bare(self.p.patient, "Patient")
        if pid:
            return sa.select(sa.literal(pid).label("pid"))
        if self.role == "resident":
            return None  # a resident's own record is the patient context
        return _nothing()

    @cached_property
    def consent_applies(self) -> bool:
        return self.role in self.cfg.consent_roles and not self.break_glass and not self.full

    # -- SQL ------------------------------------------------------------------------------------------
    def _scope_types(self, types: Sequence[str] | None, action: str) -> set[str] | None:
        granted = scopes.types_granted(self.p.scopes, action)
        readable = self.readable_types()
        if types is None:
            if granted is None and readable is None:
                return None
            base = set(defs.resource_types()) if readable is None else set(readable)
            return base if granted is None else base & granted
        return {t for t in types if (readable is None or t in readable) and scopes.grants(self.p.scopes, t, action)}

    def where(self, r: Any, types: Sequence[str] | None, action: str = "s", *, consent: bool = True) -> list[Any]:
        allowed = self._scope_types(types, action)
        if allowed is None:
            return []
        if not allowed:
            if types is not None and len(types) == 1:
                self.deny_type(types[0], action)
            return [sa.false()]
        ors: list[Any] = []
        personal = allowed & self.personal_types()
        directory = allowed - set(compartment())
        if self.role == "manager" and "MeasureReport" in allowed:
            directory.discard("MeasureReport")
            x = S.idx_ref.alias("mr_subj")
            ors.append(sa.and_(r.c.type == "MeasureReport", r.c.rid.not_in(
                sa.select(x.c.rid).where(S.rows_of(x, S.param_rows("MeasureReport", "patient"))))))
        if directory:
            ors.append(r.c.type.in_(sorted(directory)) if len(directory) > 1 else r.c.type == next(iter(directory)))
        if personal:
            ors.append(self._personal(r, sorted(personal), action, consent and self.consent_applies))
        single = types is not None and len(types) == 1
        if not ors:
            return [sa.false()]
        if single and len(ors) == 1 and directory:
            return []  # the search is of one directory type: nothing to add
        return [sa.or_(*ors) if len(ors) > 1 else ors[0]]

    def _personal(self, r: Any, types: list[str], action: str, consent: bool) -> Any:
        patients = self.patients
        conds: list[Any] = []
        comp = compartment()
        by_ctx: dict[int, list[str]] = {}
        ctx_of: dict[int, Any] = {}
        for t in types:
            ctx = self.patient_context(t, action)
            by_ctx.setdefault(id(ctx), []).append(t)
            ctx_of[id(ctx)] = ctx
        for key, ts in by_ctx.items():
            ctx = ctx_of[key]
            sets = [q for q in (patients, ctx) if q is not None]
            if self.role == "auditor" and ts == ["AuditEvent"]:
                conds.append(r.c.type == "AuditEvent")
                continue
            if not sets:
                conds.append(r.c.type.in_(ts) if len(ts) > 1 else r.c.type == ts[0])
                continue
            blocked = self._consent_blocked() if consent else None
            parts: list[Any] = []
            if "Patient" in ts:
                pc = [r.c.id.in_(s) for s in sets]
                if blocked is not None:
                    pc.append(r.c.id.not_in(blocked))
                parts.append(sa.and_(r.c.type == "Patient", *pc))
            others = [t for t in ts if t != "Patient" and comp.get(t)]
            if others:
                x = S.idx_ref.alias("acc_x")
                keys = [k for t in others for p in comp[t] for k in S.param_rows(t, p)]
                xc = [x.c.target_type == "Patient", *[x.c.target_id.in_(s) for s in sets]]
                if blocked is not None:
                    xc.append(x.c.target_id.not_in(blocked))
                oc = [r.c.rid.in_(sa.select(x.c.rid).where(S.rows_of(x, keys, *xc)))]
                if len(ts) > 1:
                    oc.insert(0, r.c.type.in_(others))
                labelled = self._consent_hidden_labels(others) if consent else None
                if labelled is not None:
                    oc.append(r.c.rid.not_in(labelled))
                parts.append(sa.and_(*oc))
            if parts:
                conds.append(sa.or_(*parts) if len(parts) > 1 else parts[0])
        if not conds:
            return sa.false()
        return sa.or_(*conds) if len(conds) > 1 else conds[0]

    def _consent_blocked(self) -> Any:
        """Patients whose Consent denies sharing outside the recording institution, for this caller."""
        if not self.consent_applies:
            return None
        from phip.security.tables import consent as c

        c2 = c.alias("c_permit")
        permitted = sa.select(c2.c.patient_id).where(c2.c.rule == "permit-org", c2.c.org == (self.org or ""))
        q = sa.select(c.c.patient_id).where(c.c.rule == "deny-outside", c.c.patient_id.not_in(permitted))
        if self.org:
            q = q.where(c.c.patient_id.not_in(relations.managed_by(self.org)))
        return q

    def _consent_hidden_labels(self, types: list[str]) -> Any:
        """Resources carrying a security label a Consent of their patient denies, for this caller."""
        if not self.consent_applies:
            return None
        from phip.security.tables import consent as c

        t = S.idx_token.alias("lab_t")
        x = S.idx_ref.alias("lab_x")
        c2 = c.alias("lab_permit")
        comp = compartment()
        sec_keys = sorted({pk(ty, "_security") for ty in types})
        comp_keys = [k for ty in types for p in comp.get(ty, ()) for k in S.param_rows(ty, p)]
        permitted = sa.select(c2.c.patient_id).where(c2.c.rule == "permit-org", c2.c.org == (self.org or ""))
        conds = [t.c.param.in_(sec_keys), c.c.rule == "deny-label", S.rows_of(x, comp_keys),
                 x.c.target_type == "Patient", c.c.patient_id.not_in(permitted)]
        if self.org:
            conds.append(c.c.patient_id.not_in(relations.managed_by(self.org)))
        return (
            sa.select(t.c.rid)
            .select_from(t.join(c, sa.and_(c.c.code == t.c.code, sa.func.coalesce(c.c.system, "")
                                           == sa.func.coalesce(t.c.system, "")))
                         .join(x, sa.and_(x.c.rid == t.c.rid, x.c.target_id == c.c.patient_id)))
            .where(*conds)
        )

    # -- checks ---------------------------------------------------------------------------------------
    def deny_type(self, rtype: str, action: str) -> None:
        readable = self.readable_types()
        if readable is not None and rtype not in readable:
            raise AccessDenied(self.rule() if self.role in RULE_OF_ROLE else "deny-by-default",
                               f"role {self.role} has no access to {rtype} resources")
        raise AccessDenied("scope", f"the token's scopes do not grant '{action}' on {rtype}")

    def check_scope(self, rtype: str, action: str) -> None:
        if scopes.grants(self.p.scopes, rtype, action) is None:
            raise AccessDenied("scope", f"the token's scopes do not grant '{action}' on {rtype}")

    def check_row(self, conn: Any, row: Any, action: str = "r") -> None:
        self.check_scope(row.type, action if action in ("r", "s") else "r")
        key = (self.p.key, row.rid, row.version)
        self.policy.sync(conn)
        if self.policy.known(key):
            return
        if self._quick_allows(conn, row):
            self.policy.remember(key)
            return
        r = R.alias("acc_r")
        conds = self.where(r, [row.type], "r")
        if conds:
            ok = conn.execute(sa.select(r.c.rid).where(r.c.rid == row.rid, *conds)).first() is not None
            if not ok:
                raise self.explain(conn, row)
        self.policy.remember(key)

    def _quick_allows(self, conn: Any, row: Any) -> bool:
        """The read check from the caller's patient sets, materialised once per scope for 30 s
        (a read by id then costs one index lookup).  Only ever says yes: anything it cannot
        confirm goes to the SQL check, which is authoritative (and sees relationships made since)."""
        if (self.full or self.patients is None or row.type not in self.personal_types()
                or self.patient_context(row.type, "r") is not None or scopes.grants(self.p.scopes, row.type, "r")
                is None):
            return False
        sets = self.policy.sets_for(self, conn)
        if row.type == "Patient":
            mine = {row.id}
        else:
            keys = [k for p in compartment().get(row.type, ()) for k in S.param_rows(row.type, p)]
            if not keys:
                return False
            x = S.idx_ref
            mine = {t for (t,) in conn.execute(sa.select(x.c.target_id).where(
                S.rows_of(x, keys, x.c.rid == row.rid, x.c.target_type == "Patient")))}
        if not (mine & sets.allowed) - sets.blocked:
            return False
        if sets.deny_labels and row.type != "Patient" and mine & set(sets.deny_labels):
            t = S.idx_token
            labels = {(sy or "", c) for sy, c in conn.execute(sa.select(t.c.system, t.c.code).where(
                t.c.rid == row.rid, t.c.param == pk(row.type, "_security")))}
            if any(labels & sets.deny_labels.get(p, set()) for p in mine):
                return False
        return True

    def materialise(self, conn: Any) -> PatientSets:
        allowed = frozenset(pid for (pid,) in conn.execute(self.patients))
        blocked: frozenset[str] = frozenset()
        deny: dict[str, set[tuple[str, str]]] = {}
        if self.consent_applies:
            q = self._consent_blocked()
            blocked = frozenset(pid for (pid,) in conn.execute(q))
            from phip.security.tables import consent as c

            c2 = c.alias("q_permit")
            permitted = sa.select(c2.c.patient_id).where(c2.c.rule == "permit-org", c2.c.org == (self.org or ""))
            dq = sa.select(c.c.patient_id, c.c.system, c.c.code).where(c.c.rule == "deny-label",
                                                                       c.c.patient_id.not_in(permitted))
            if self.org:
                dq = dq.where(c.c.patient_id.not_in(relations.managed_by(self.org)))
            for pid, system, code in conn.execute(dq):
                deny.setdefault(pid, set()).add((system or "", code))
        return PatientSets(allowed, blocked, deny)

    def explain(self, conn: Any, row: Any) -> AccessDenied:
        """Why ``row`` is hidden: the role's relationship rule, or the Consent that hides it."""
        if self.consent_applies:
            r = R.alias("acc_e")
            conds = self.where(r, [row.type], "r", consent=False)
            without = conn.execute(sa.select(r.c.rid).where(r.c.rid == row.rid, *conds)).first() is not None
            if without:
                return AccessDenied("consent", f"a Consent of the patient does not share {row.type}/{row.id} with "
                                    f"Organization/{self.org}")
        rule = self.rule()
        what = {
            "clinician-treating-relationship":
                f"Organization/{self.org} has no encounter, appointment or referral with this patient in the last "
                f"{self.cfg.treating_window_days} days (use break-glass in an emergency)",
            "public-health-region": f"the patient is not a resident of region {self.p.region}",
            "family-doctor-signed-residents": "the patient has not signed a family-doctor contract with you",
            "resident-own-record": "this is not your record or a dependant's",
            "insurer-coverage": f"the patient is not insured by Organization/{self.org}",
        }.get(rule, f"role {self.role} may not read {row.type}")
        return AccessDenied(rule, f"{row.type}/{row.id}: {what}")

    def check_write(self, conn: Any, rtype: str, resource: dict[str, Any] | None, method: str, current: Any) -> None:
        action = "d" if method == "DELETE" else ("c" if current is None else "u")
        self.check_scope(rtype, action)
        if self.full:
            return
        role = self.role
        if role in ("manager", "auditor"):
            raise AccessDenied("read-only-role", f"role {role} may not change data")
        if rtype == "AuditEvent":
            raise AccessDenied("audit-append-only", "AuditEvents are written by the node only")
        if role == "resident":
            allowed = rtype == "Consent"
        elif role == "insurer":
            allowed = rtype in FINANCIAL or rtype == "Patient"
        else:
            allowed = rtype in clinical_types()
        if not allowed:
            raise AccessDenied("write-" + role, f"role {role} may not write {rtype} resources")
        if current is not None:
            self.check_row(conn, current, "r")
        if role == "resident" and resource is not None:
            from phip.store.repository import local_references

            mine = {pid for (pid,) in conn.execute(self.patients)} if self.patients is not None else set()
            refs = [i for _e, t, i in local_references(resource) if t == "Patient"]
            if not refs or any(i not in mine for i in refs):
                raise AccessDenied("resident-own-record", "a resident may only record Consents about their own "
                                   "or a dependant's record")

    def check_operation(self, name: str, rtype: str | None = None) -> None:
        if name == "changes":
            if not self.full:
                raise AccessDenied("change-feed-nodes-only", "the change feed is for other nodes and administrators")
            return
        if name == "export":
            if not (self.full or self.role == "public-health"):
                raise AccessDenied("export-roles", f"role {self.role} may not run a bulk export")
            return
        if name == "validate" and rtype is not None:
            if self.full:
                return
            if self.role in ("manager", "auditor") or (
                    scopes.grants(self.p.scopes, rtype, "c") is None and scopes.grants(self.p.scopes, rtype, "u")
                    is None):
                raise AccessDenied("read-only-role" if self.role in ("manager", "auditor") else "scope",
                                   f"role {self.role} may not write {rtype} resources, nor validate them")
            return

    # -- views ----------------------------------------------------------------------------------------
    def view(self, row: Any) -> Any:
        if not self.mask_fields or row.content is None or row.type not in masking.PEOPLE:
            return row
        from dataclasses import replace

        doc = orjson.loads(row.content)
        return replace(row, content=orjson.dumps(masking.mask(doc, self.mask_fields)))

    def unmask(self, rtype: str, resource: dict[str, Any], current: Any) -> dict[str, Any]:
        if not self.mask_fields or current is None or rtype not in masking.PEOPLE:
            return resource
        stored = current.resource() if hasattr(current, "resource") else current
        return masking.restore(resource, stored)


def _nothing() -> Any:
    return sa.select(sa.literal("").label("pid")).where(sa.false())


def _region_prefix(region: str | None) -> str | None:
    """``510104`` → ``510104``; ``510100`` → ``5101``; ``510000`` → ``51`` (GB/T 2260 levels)."""
    if not region or not region.isdigit():
        return None
    r = region[:6]
    while r.endswith("00") and len(r) > 2:
        r = r[:-2]
    return r


# -- the decision API --------------------------------------------------------------------------------
def can_read(principal: Principal, resource: Any, store: Any) -> Decision:
    """May ``principal`` read ``resource`` (a stored Row, a resource dict with resourceType/id, or
    ``"Type/id"``)?  Returns the decision and the rule that made it; never raises for a denial."""
    policy: Policy | None = getattr(store, "access", None)
    if policy is None:
        return Decision(True, "no-policy")
    scope = policy.scope_for(principal)
    if scope is None:
        return Decision(True, principal.role)
    row = resource
    if isinstance(resource, str | dict):
        rtype, rid = (resource.split("/", 1) if isinstance(resource, str)
                      else (resource.get("resourceType", ""), resource.get("id", "")))
        with store.engine.connect() as conn:
            rec = conn.execute(sa.select(R.c.rid, R.c.type, R.c.id, R.c.version).where(
                R.c.type == rtype, R.c.id == rid)).first()
        if rec is None:
            return Decision(False, "not-found", f"{rtype}/{rid} is not known")
        row = rec
    try:
        with store.engine.connect() as conn:
            scope.check_row(conn, row, "r")
    except AccessDenied as e:
        return Decision(False, e.rule, e.issues[0].diagnostics)
    return Decision(True, scope.rule())
