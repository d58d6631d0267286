"""How institutions record and upload: resource ids, upload bundles, patient registration, codes.

One :class:`Emitter` per chunk.  It numbers resources (``c<chunk>-<n>``, unique across types and
chunks), stamps ``meta.lastUpdated`` with the upload time of the current *bundle* (a visit and
everything recorded with it is uploaded together; a share of bundles goes 8-120 days late),
drops optional elements at the missing-field rate, maps standard codes to the institution's
local code list where it has one, and registers residents at institutions: the first time a
resident uses an institution, it creates its own Patient record with its own record number and
whatever registration errors happen, and later resources of that institution point at it.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING, Any

from phip.synth import build as b
from phip.synth import defects as dq
from phip.synth.institutions import Institution
from phip.synth.population import Person
from phip.synth.tables import table
from phip.synth.truth import TruthWriter
from phip.synth.writer import ShardWriter

if TYPE_CHECKING:
    from phip.synth.plan import Plan

EXTRA_DIAGNOSES = {
    "Z34.9": "正常妊娠监督",
    "O80": "单胎顺产",
    "O82": "经剖宫产术的单胎分娩",
    "Z39.2": "产后常规随诊",
    "Z00.1": "常规儿童健康检查",
    "Z00.0": "一般医学检查",
    "Z38.0": "单胎活产婴儿,出生在医院内",
}
SEX_CODES = {"male": ("1", "男性"), "female": ("2", "女性")}
LOCAL_SEX = {"male": ("M", "男"), "female": ("F", "女")}
GENDERS = ("male", "female")


@cache
def diagnoses() -> dict[str, str]:
    """Every ICD-10 code the generator can write, with its Chinese display (sorted by code)."""
    out: dict[str, str] = {}
    clin = table("clinical")
    for c in clin["chronic"].values():
        out[c["code"]] = c["display"]
    for row in clin["acute"] + clin["inpatient"]:
        out[row["code"]] = row["display"]
    for d in table("infectious")["diseases"].values():
        out[d["icd10"]] = d["name"]
    for rows in table("demography")["mortality"]["causes"].values():
        if isinstance(rows, list):
            for code, display, _w in rows:
                out[code] = display
    out.update(EXTRA_DIAGNOSES)
    return dict(sorted(out.items()))


@cache
def local_code(domain: str, std: str) -> tuple[str, str]:
    """The local code (and display) institutions with a local list use for a standard code."""
    if domain == "diagnosis":
        idx = list(diagnoses()).index(std)
        return f"ZD{idx + 1:04d}", diagnoses()[std]
    if domain == "drug":
        drugs = table("clinical")["drugs"]
        keys = [k for k in drugs if not k.startswith("_")]
        return f"YP{keys.index(std) + 1:05d}", drugs[std][1]
    if domain == "lab":
        row = table("clinical")["observations"][std]
        return row[5], row[2]
    if domain == "sex":
        return LOCAL_SEX[std]
    if domain == "ethnicity":
        name = table("ethnicity")["codes"][std]
        short = name[:-1] if name.endswith("族") and len(name) > 2 else name
        return short, name
    raise KeyError(domain)


def local_code_rows(inst: Institution) -> list[tuple[str, ...]]:
    """Rows of truth/local_codes.csv for one institution (every code of its local lists)."""
    rows: list[tuple[str, ...]] = []
    clin = table("clinical")
    for domain in sorted(inst.local_codes):
        system = b.org_codes(inst.id, domain)
        if domain == "diagnosis":
            pairs = [(c, b.CS_ICD10_CN) for c in diagnoses()]
        elif domain == "drug":
            pairs = [(k, b.CS_DRUG) for k in clin["drugs"] if not k.startswith("_")]
        elif domain == "lab":
            pairs = [(k, b.LOINC) for k in clin["observations"] if not k.startswith("_")]
        elif domain == "sex":
            pairs = [(g, b.CS_SEX) for g in GENDERS]
        else:
            pairs = [(c, b.CS_ETHNICITY) for c in table("ethnicity")["codes"]]
        for std, std_system in pairs:
            code, display = local_code(domain, std)
            if domain == "drug":
                std_code = clin["drugs"][std][0]
            elif domain == "lab":
                std_code = clin["observations"][std][0]
            elif domain == "sex":
                std_code = SEX_CODES[std][0]
            else:
                std_code = std
            rows.append((inst.id, domain, system, code, display, std_system, std_code))
    return rows


# droppable optional elements per resource type, for the missing-field defect
DROPPABLE: dict[str, tuple[str, ...]] = {
    "Encounter": ("participant", "serviceType", "period.end"),
    "Observation": ("performer", "valueQuantity.code"),
    "Condition": ("onsetDateTime", "recorder"),
    "MedicationRequest": ("dosageInstruction", "requester"),
    "Immunization": ("lotNumber", "performer", "site"),
    "Procedure": ("performer",),
    "DiagnosticReport": ("performer",),
    "Claim": ("diagnosis",),
}


class Emitter:
    """Writes one chunk's resources and truth rows (see the module docstring)."""

    def __init__(self, plan: Plan, chunk: int, root: Path) -> None:
        self.plan = plan
        self.chunk = chunk
        self.rates = plan.rates
        self.out = ShardWriter(root)
        self.truth = TruthWriter(root)
        self._export = f"{plan.end.isoformat()}T23:59:59{b.TZ}"
        self._late_rate = plan.rates.late_upload
        self._missing_rate = plan.rates.missing_field
        self._n = 0
        self._prefix = f"c{chunk:02d}-"
        self._mrn = 0
        self.meta: dict[str, str] = {}
        self._late: tuple[str, str] | None = None
        self.outbreak_cases: Counter[str] = Counter()
        self._codes: dict[tuple[str, str, str], Any] = {}

    # ids and bundles ----------------------------------------------------------------------------
    def rid(self) -> str:
        self._n += 1
        return self._prefix + str(self._n)

    def next_mrn(self) -> str:
        """A new record number: unique in the chunk, prefixed by it, so unique everywhere."""
        self._mrn += 1
        return f"{self.chunk:02d}{self._mrn:07d}"

    def begin(self, day: date, minute: int, rng: Random) -> None:
        """Start an upload bundle for an event on ``day`` at ``minute``: decides the upload time."""
        r = rng.random
        if r() < self._late_rate:
            add = (8 + int(r() * 113)) * 1440 + int(r() * 1440)
        else:
            add = 5 + int(r() * 1436)
        total = minute + add
        up_day = day + timedelta(days=total // 1440) if total >= 1440 else day
        clipped = up_day > self.plan.end
        up = self._export if clipped else b.dt(up_day, total % 1440)
        self.meta = {"lastUpdated": up}
        # a late bundle whose upload the run's end cut to within a day of the event was on time after all
        on_time_anyway = clipped and ((self.plan.end - day).days + 1) * 1440 - minute <= 1441
        self._late = (b.dt(day, minute), up) if add >= 8 * 1440 and not on_time_anyway else None

    def put(self, org: str, res: b.Json, rng: Random) -> b.Json:
        """Write ``res`` (which has resourceType and id) for institution ``org``; returns its reference."""
        res["meta"] = self.meta
        rtype = res["resourceType"]
        if self._missing_rate and rng.random() < self._missing_rate:
            self._drop(org, res, rng)
        if self._late is not None:
            self.truth.row("quality_defects", org, rtype, res["id"], "meta.lastUpdated", dq.LATE_UPLOAD, *self._late)
        self.out.write(org, res)
        return {"reference": f"{rtype}/{res['id']}"}

    def put_static(self, org: str, res: b.Json) -> None:
        self.out.write(org, res)

    def _drop(self, org: str, res: b.Json, rng: Random) -> None:
        paths = [p for p in DROPPABLE.get(res["resourceType"], ()) if _has(res, p)]
        if not paths:
            return
        path = rng.choice(paths)
        removed = _pop(res, path)
        if path == "valueQuantity.code":
            res["valueQuantity"].pop("system", None)
            res["valueQuantity"].pop("unit", None)
        self.truth.row("quality_defects", org, res["resourceType"], res["id"], path, dq.MISSING, _short(removed), "")

    # codes ---------------------------------------------------------------------------------------
    def dx(self, inst: Institution, code: str) -> b.Json:
        key = (inst.id, "diagnosis", code)
        cc = self._codes.get(key)
        if cc is None:
            display = diagnoses()[code]
            if "diagnosis" in inst.local_codes:
                lc, ld = local_code("diagnosis", code)
                cc = b.concept(b.coding(b.org_codes(inst.id, "diagnosis"), lc, ld), text=display)
            else:
                cc = b.concept(b.coding(b.CS_ICD10_CN, code, display), b.coding(b.ICD10, code), text=display)
            self._codes[key] = cc
        return cc

    def obs_code(self, inst: Institution, key: str) -> b.Json:
        k = (inst.id, "lab", key)
        cc = self._codes.get(k)
        if cc is None:
            row = table("clinical")["observations"][key]
            if "lab" in inst.local_codes and row[4] == "laboratory":
                lc, ld = local_code("lab", key)
                cc = b.concept(b.coding(b.org_codes(inst.id, "lab"), lc, ld), text=row[2])
            else:
                cc = b.concept(b.coding(b.LOINC, row[0], row[1]), text=row[2])
            self._codes[k] = cc
        return cc

    def drug(self, inst: Institution, key: str) -> b.Json:
        k = (inst.id, "drug", key)
        cc = self._codes.get(k)
        if cc is None:
            code, name, atc = table("clinical")["drugs"][key][:3]
            if "drug" in inst.local_codes:
                lc, ld = local_code("drug", key)
                cc = b.concept(b.coding(b.org_codes(inst.id, "drug"), lc, ld), text=name)
            else:
                codings = [b.coding(b.CS_DRUG, code, name)]
                if atc:
                    codings.append(b.coding(b.ATC, atc))
                cc = b.concept(*codings, text=name)
            self._codes[k] = cc
        return cc

    def person_extensions(self, inst: Institution | None, p: Person) -> list[b.Json]:
        """GB/T 2261.1 sex and GB 3304 ethnicity, as coded by the institution."""
        local = inst.local_codes if inst is not None else frozenset()
        if "sex" in local:
            sc = b.coding(b.org_codes(inst.id, "sex"), *LOCAL_SEX[p.sex])  # type: ignore[union-attr]
        else:
            sc = b.coding(b.CS_SEX, *SEX_CODES[p.sex])
        if "ethnicity" in local:
            ec = b.coding(b.org_codes(inst.id, "ethnicity"), *local_code("ethnicity", p.ethnicity))  # type: ignore[union-attr]
        else:
            ec = b.coding(b.CS_ETHNICITY, p.ethnicity, table("ethnicity")["codes"][p.ethnicity])
        return [
            {"url": b.EXT_SEX, "valueCodeableConcept": {"coding": [sc]}},
            {"url": b.EXT_ETHNICITY, "valueCodeableConcept": {"coding": [ec]}},
        ]

    # registration --------------------------------------------------------------------------------
    def patient(self, p: Person, inst: Institution, day: date, rng: Random) -> str:
        """The id of ``p``'s Patient record at ``inst``, registering them on ``day`` if needed."""
        pid = p.records.get(inst.id)
        if pid is not None:
            dup = self.rates.duplicate_registration
            if dup and rng.random() < dup / 4 and f"{inst.id}#dup" not in p.records:
                pid = self._register(p, inst, day, rng, duplicate=True)
                p.records[inst.id] = pid
                p.records[f"{inst.id}#dup"] = pid
            return pid
        pid = self._register(p, inst, day, rng)
        p.records[inst.id] = pid
        return pid

    def newborn(self, baby: Person, inst: Institution, day: date, rng: Random) -> str:
        """The birth hospital's record of a newborn: usually 「母亲之子/之女」 under the mother's ID."""
        key = f"{inst.id}#newborn"
        pid = baby.records.get(key)
        if pid is not None:
            return pid
        mother = baby.born.mother if baby.born else None
        if mother is None or rng.random() >= self.rates.newborn_under_mother:
            pid = self._register(baby, inst, day, rng)
            baby.records[key] = pid
            return pid
        mrn = self.next_mrn()
        pid = f"{inst.id}-{mrn}"
        placeholder = mother.name.text + ("之子" if baby.sex == "male" else "之女")
        res: b.Json = {
            "resourceType": "Patient",
            "id": pid,
            "extension": self.person_extensions(inst, baby),
            "identifier": [
                {
                    "use": "usual",
                    "type": b.concept(b.coding(b.V2_0203, "MR")),
                    "system": b.org_system(inst.id, "mrn"),
                    "value": mrn,
                },
                {
                    "use": "secondary",
                    "type": b.concept(b.coding(b.CS_ID_TYPE, "01", "居民身份证")),
                    "system": b.ID_NUMBER,
                    "value": mother.id_number,
                },
            ],
            "active": True,
            "name": [{"use": "temp", "text": placeholder}],
            "gender": baby.sex,
            "birthDate": baby.birth.isoformat(),
            "managingOrganization": b.ref("Organization", inst.id),
        }
        self.put(inst.id, res, rng)
        self.truth.row("persons", inst.id, "Patient", pid, b.org_system(inst.id, "mrn"), mrn, baby.pid)
        self.truth.row(
            "quality_defects",
            inst.id,
            "Patient",
            pid,
            "identifier",
            dq.NEWBORN_MOTHER_ID,
            baby.id_number,
            mother.id_number,
        )
        self.truth.row("quality_defects", inst.id, "Patient", pid, "name", dq.NEWBORN_NAME, baby.name.text, placeholder)
        baby.records[key] = pid
        return pid

    def _register(self, p: Person, inst: Institution, day: date, rng: Random, duplicate: bool = False) -> str:
        rates = self.rates
        mrn = self.next_mrn()
        pid = f"{inst.id}-{mrn}"
        org = inst.id
        rows: list[tuple[str, str, str, str]] = []
        # name
        given = p.name.given
        text = p.name.text
        if rates.name_homophone and rng.random() < rates.name_homophone:
            g2 = dq.homophone(rng, given)
            if g2 is not None:
                rows.append(("name", dq.HOMOPHONE, text, (p.name.family or "") + g2))
                given, text = g2, (p.name.family or "") + g2
        elif rates.name_traditional and rng.random() < rates.name_traditional:
            t2 = dq.traditional(text)
            if t2 is not None:
                rows.append(("name", dq.TRADITIONAL, text, t2))
                fam = p.name.family
                given = t2[len(fam) :] if fam else t2
                text = t2
        family = text[: len(p.name.family)] if p.name.family else None
        name: b.Json = {"use": "official", "text": text}
        if family:
            name["family"] = family
        name["given"] = [given]
        ids: list[b.Json] = [
            {
                "use": "usual",
                "type": b.concept(b.coding(b.V2_0203, "MR")),
                "system": b.org_system(org, "mrn"),
                "value": mrn,
            }
        ]
        known = p.id_date is None or p.id_date <= day
        if known:
            miss = rates.id_missing * (3 if p.age_on(day) < 16 else 1)
            if miss and rng.random() < miss:
                rows.append(("identifier", dq.ID_MISSING, p.id_number, ""))
            else:
                number = p.id_number
                if rates.id_mistyped and rng.random() < rates.id_mistyped:
                    number = dq.mistype_id(rng, number)
                    rows.append(("identifier", dq.ID_MISTYPED, p.id_number, number))
                ids.append(
                    {
                        "use": "official",
                        "type": b.concept(b.coding(b.CS_ID_TYPE, "01", "居民身份证")),
                        "system": b.ID_NUMBER,
                        "value": number,
                    }
                )
        res: b.Json = {
            "resourceType": "Patient",
            "id": pid,
            "extension": self.person_extensions(inst, p),
            "identifier": ids,
            "active": True,
            "name": [name],
        }
        phone = p.phone_on(day)
        contact_phone = phone
        if phone is None:  # children and the elderly without a phone give a relative's
            for rel in (p.mother, p.father, p.spouse, p.household.members[0]):
                if rel is not None and rel is not p and rel.phone_on(day):
                    contact_phone = rel.phone_on(day)
                    break
        if contact_phone:
            if rates.telecom_missing and rng.random() < rates.telecom_missing:
                rows.append(("telecom", dq.MISSING, contact_phone, ""))
            else:
                res["telecom"] = [{"system": "phone", "value": contact_phone, "use": "mobile"}]
                # outdated: the resident's own number at the end differs from the one given — their
                # own number then, or a relative's given while they had none (a child who got a phone)
                now = p.phone_on(p.last)
                if now and now != contact_phone:
                    rows.append(("telecom", dq.OUTDATED_PHONE, now, contact_phone))
        res["gender"] = p.sex
        bd = p.birth
        if rates.birthdate_missing and rng.random() < rates.birthdate_missing:
            rows.append(("birthDate", dq.MISSING, bd.isoformat(), ""))
        else:
            if rates.birthdate_swapped and rng.random() < rates.birthdate_swapped:
                sw = dq.swap_day_month(bd)
                if sw is not None:
                    rows.append(("birthDate", dq.DAY_MONTH_SWAPPED, bd.isoformat(), sw.isoformat()))
                    bd = sw
            res["birthDate"] = bd.isoformat()
        r = p.household.residence_on(day)
        if rates.address_missing and rng.random() < rates.address_missing:
            rows.append(("address", dq.MISSING, r.text, ""))
        else:
            res["address"] = [address(r)]
            now_r = p.household.residence_on(p.last)
            if now_r is not r:
                rows.append(("address", dq.OUTDATED_ADDRESS, now_r.text, r.text))
        res["managingOrganization"] = b.ref("Organization", org)
        self.put(org, res, rng)
        self.truth.row("persons", org, "Patient", pid, b.org_system(org, "mrn"), mrn, p.pid)
        if duplicate:
            self.truth.row("quality_defects", org, "Patient", pid, "id", dq.DUPLICATE, p.records[org], pid)
        for element, defect, true, recorded in rows:
            self.truth.row("quality_defects", org, "Patient", pid, element, defect, true, recorded)
        return pid

    def close(self) -> None:
        self.out.close()
        self.truth.close()


def address(r: Any) -> b.Json:
    """A FHIR Address for a residence (home), with the county's GB/T 2260 code."""
    c = r.county
    return {
        "extension": [{"url": b.EXT_DIVISION, "valueCode": c.code}],
        "use": "home",
        "text": r.text,
        "line": [f"{r.town.name}{r.village.name}{r.line}"],
        "city": c.prefecture_name,
        "district": c.name,
        "state": c.province_name,
        "country": "CN",
    }


def _has(res: b.Json, path: str) -> bool:
    cur: Any = res
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return True


def _pop(res: b.Json, path: str) -> Any:
    parts = path.split(".")
    cur: Any = res
    for part in parts[:-1]:
        cur = cur[part]
    return cur.pop(parts[-1])


def _short(v: Any) -> str:
    if isinstance(v, str):
        return v
    import orjson

    return orjson.dumps(v).decode()[:200]
