"""Health institutions of the simulated region, their departments, beds and staff.

Per county: a general hospital (二级甲等), a TCM hospital (二级甲等), a maternal and child health
hospital (二级乙等), a CDC, the medical insurance bureau and the health commission (which runs the
population registry); per township a township health centre (乡镇卫生院) or, in urban districts, a
community health service centre (社区卫生服务中心); per rural village a village clinic (村卫生室).
Each simulated prefecture adds a 三级甲等 general and TCM hospital, a 三级乙等 MCH hospital and a
CDC in its seat; the province adds a 三级甲等 provincial hospital in the capital.

Staff and beds scale with the population served (institutions.json).  Everything here is decided
in the main process from the seed, before any resident is simulated, and written once: the
Organization, Location, Practitioner and PractitionerRole resources of every institution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from random import Random
from typing import Any

from phip.cn import gb32100
from phip.synth import build as b
from phip.synth import names
from phip.synth.geography import County, Geography, Town, Village
from phip.synth.tables import table

TAGS = {
    "general": "rmyy",
    "tcm": "zyyy",
    "mch": "fybjy",
    "cdc": "cdc",
    "insurer": "ybj",
    "registry": "wjj",
    "township": "wsy",
    "community": "sqzx",
    "village": "wss",
}
CLINICAL = frozenset({"general", "tcm", "mch", "township", "community", "village"})
LEVEL_NAMES = {"3": "三级", "2": "二级", "1": "一级"}
LICENCE = "urn:phip:id:practitioner-licence"
USCC = "urn:phip:id:uscc"
ORG_CODE = "urn:phip:id:org"


@dataclass(slots=True)
class Dept:
    code: str
    name: str
    location: str
    beds: int = 0
    doctors: list[str] = field(default_factory=list)
    nurses: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Institution:
    id: str
    name: str
    kind: str
    tier: str  # province | prefecture | county | primary | village
    county: str  # GB/T 2260 code of the county it stands in
    level: str | None = None  # 3 / 2 / 1
    grade: str | None = None  # 甲 / 乙
    parent: str | None = None
    address: str = ""
    served: int = 0
    depts: dict[str, Dept] = field(default_factory=dict)
    local_codes: frozenset[str] = frozenset()
    uscc: str = ""

    @property
    def beds(self) -> int:
        return sum(d.beds for d in self.depts.values())

    def dept(self, code: str, child: bool = False) -> Dept | None:
        """The department for a specialty code: paediatrics for children where there is one,
        else the code itself, else general practice or internal medicine, else any."""
        if child and "07" in self.depts:
            return self.depts["07"]
        for c in (code, "02", "03", "50"):
            if c in self.depts:
                return self.depts[c]
        return next(iter(self.depts.values()), None)

    def doctor(self, rng: Random, dept: Dept | None) -> str | None:
        if dept is not None and dept.doctors:
            return dept.doctors[int(rng.random() * len(dept.doctors))]
        for d in self.depts.values():
            if d.doctors:
                return d.doctors[int(rng.random() * len(d.doctors))]
        return None


@dataclass(frozen=True, slots=True)
class Access:
    """The institutions a resident of one village uses, by tier."""

    village: Institution | None
    primary: Institution
    general: Institution
    tcm: Institution
    mch: Institution
    cdc: Institution
    insurer: Institution
    registry: Institution
    pref_general: Institution
    pref_tcm: Institution
    pref_mch: Institution
    province: Institution | None


@dataclass(slots=True)
class Staffer:
    """A practitioner as a synthetic person (kept for the truth files)."""

    id: str
    org: str
    role: str
    name: names.Name
    sex: str
    birth: date
    id_number: str
    licence: str
    title: tuple[str, str]


@dataclass(slots=True)
class Registry:
    """All institutions, and who uses which."""

    by_id: dict[str, Institution] = field(default_factory=dict)
    access: dict[str, Access] = field(default_factory=dict)  # village code -> Access
    staff: list[Staffer] = field(default_factory=list)

    def add(self, inst: Institution) -> Institution:
        if inst.id in self.by_id:
            raise ValueError(f"duplicate institution id {inst.id}")
        self.by_id[inst.id] = inst
        return inst

    def __getitem__(self, org_id: str) -> Institution:
        return self.by_id[org_id]


def _title(rng: Random, role: str) -> tuple[str, str]:
    """Professional title and its GB/T 8561 code [M]."""
    rows = table("institutions")["titles"][role]
    name = rng.choices([r[0] for r in rows], [r[1] for r in rows])[0]
    codes = {
        "主任医师": "231",
        "副主任医师": "232",
        "主治医师": "233",
        "医师": "234",
        "医士": "235",
        "主任护师": "251",
        "副主任护师": "252",
        "主管护师": "253",
        "护师": "254",
        "护士": "255",
        "乡村医生": "239",
    }
    return codes[name], name


class _Builder:
    def __init__(self, geo: Geography, rng: Random, start: date, local_code_share: float, staff_slot: int, slots: int):
        self.geo = geo
        self.start = start
        self.mixes = {c.code: c.ethnic for c in geo.counties}
        self.rng = rng
        self.local_share = local_code_share
        self.reg = Registry()
        self.ids = names.IdAllocator(staff_slot, slots)
        self.org_serial = 0

    def _local_codes(self, kind: str) -> frozenset[str]:
        if kind not in CLINICAL or self.local_share <= 0:
            return frozenset()
        out = set()
        for domain in ("diagnosis", "lab", "drug"):
            if self.rng.random() < self.local_share:
                out.add(domain)
        for domain in ("sex", "ethnicity"):
            if self.rng.random() < self.local_share / 2:
                out.add(domain)
        return frozenset(out)

    def make(
        self,
        org_id: str,
        kind: str,
        place: str,
        tier: str,
        county: str,
        address: str,
        served: int,
        level: str | None = None,
        grade: str | None = None,
        parent: str | None = None,
    ) -> Institution:
        spec = table("institutions")["kinds"][kind]
        self.org_serial += 1
        body = f"{45_000_000 + self.org_serial * 7919 % 10_000_000:08d}"
        inst = Institution(
            id=org_id,
            name=spec["name"].format(place=place),
            kind=kind,
            tier=tier,
            county=county,
            level=level,
            grade=grade,
            parent=parent,
            address=address,
            served=served,
            local_codes=self._local_codes(kind),
            uscc=gb32100.generate("12", county, body),
        )
        self._staff(inst, spec)
        return self.reg.add(inst)

    def _staff(self, inst: Institution, spec: dict[str, Any]) -> None:
        t = table("institutions")
        dept_names = t["departments"]
        per = t["staff_per_10k"].get(inst.kind)
        beds_total = 0
        if inst.kind in t["beds_per_10k"]:
            beds_total = max(
                t["beds_floor"].get(inst.kind, 0), round(t["beds_per_10k"][inst.kind] * inst.served / 10_000)
            )
        inpatient = spec["inpatient"]
        bed_split = _split_even(beds_total, len(inpatient)) if inpatient else []
        for code in spec["departments"]:
            dept = Dept(code=code, name=dept_names[code], location=f"{inst.id}-{code}")
            if code in inpatient:
                dept.beds = bed_split[inpatient.index(code)]
            if per is not None:
                scale = inst.served / 10_000 / max(1, len(spec["departments"]))
                n_doc = max(per["floor"], round(per["doctor"] * scale))
                n_nurse = max(1 if dept.beds else 0, round(per["nurse"] * scale))
                if inst.kind == "village":
                    n_doc, n_nurse = 1 + (self.rng.random() < 0.3), 0
                for _ in range(n_doc):
                    dept.doctors.append(self._person(inst, "village" if inst.kind == "village" else "doctor"))
                for _ in range(n_nurse):
                    dept.nurses.append(self._person(inst, "nurse"))
            inst.depts[code] = dept

    def _person(self, inst: Institution, role: str) -> str:
        rng = self.rng
        pid = f"{inst.id}-{'n' if role == 'nurse' else 'd'}{len(self.reg.staff) + 1:05d}"
        female = rng.random() < (0.96 if role == "nurse" else 0.5)
        sex = "female" if female else "male"
        age = rng.randint(24, 58)
        birth = date(self.start.year - age, rng.randint(1, 12), rng.randint(1, 28))
        mix = self.mixes.get(inst.county, (("01", 1.0),))
        u = rng.random()
        eth = next((code for code, cum in mix if u <= cum), "01")
        name = names.person_name(rng, sex, birth.year, eth)
        idno, birth = self.ids.allocate(inst.county, birth, sex)
        if role == "doctor":
            licence = f"11{inst.county}{birth.year + 25}{rng.randint(0, 999):03d}"
        elif role == "nurse":
            licence = f"{birth.year + 21}{inst.county[:2]}{rng.randint(0, 999_999):06d}"
        else:
            licence = f"{inst.county}{rng.randint(0, 999_999):06d}"
        self.reg.staff.append(Staffer(pid, inst.id, role, name, sex, birth, idno, licence, _title(rng, role)))
        return pid


def _split_even(total: int, n: int) -> list[int]:
    base, rest = divmod(total, n)
    return [base + (1 if i < rest else 0) for i in range(n)]


def plan_institutions(
    geo: Geography, rng: Random, start: date, local_code_share: float, staff_slot: int, slots: int
) -> Registry:
    """Create every institution of the region and the access table of every village."""
    bld = _Builder(geo, rng, start, local_code_share, staff_slot, slots)
    prov = geo.province
    by_pref: dict[str, list[County]] = {}
    for c in geo.counties:
        by_pref.setdefault(c.prefecture, []).append(c)
    total = sum(c.population for c in geo.counties)
    province_hosp: Institution | None = None
    if geo.capital != prov.code:
        seat = geo.seats[geo.capital]
        province_hosp = bld.make(
            f"{prov.code}-{TAGS['general']}",
            "general",
            prov.name,
            "province",
            seat,
            _org_address(seat, rng),
            total,
            "3",
            "甲",
        )
    pref_insts: dict[str, dict[str, Institution]] = {}
    for pref, counties in by_pref.items():
        seat = geo.seats[pref]
        served = sum(c.population for c in counties)
        pname = counties[0].prefecture_name
        d: dict[str, Institution] = {}
        for kind, level, grade in table("institutions")["levels"]["prefecture"]:
            d[kind] = bld.make(
                f"{pref}-{TAGS[kind]}",
                kind,
                pname,
                "prefecture",
                seat,
                _org_address(seat, rng),
                served,
                level,
                grade,
            )
        pref_insts[pref] = d
    for c in geo.counties:
        d = {}
        for kind, level, grade in table("institutions")["levels"]["county"]:
            d[kind] = bld.make(
                f"{c.code}-{TAGS[kind]}",
                kind,
                c.name,
                "county",
                c.code,
                _org_address(c.code, rng),
                c.population,
                level,
                grade,
            )
        for town in c.towns:
            kind = "community" if c.urban else "township"
            centre = bld.make(
                f"{town.code}-{TAGS[kind]}",
                kind,
                town.name,
                "primary",
                c.code,
                f"{c.address_prefix}{town.name}",
                town.population,
                "1",
            )
            town.centre = centre.id
            for v in town.villages:
                clinic = None
                if not c.urban:
                    clinic = bld.make(
                        f"{v.code}-{TAGS['village']}",
                        "village",
                        v.name,
                        "village",
                        c.code,
                        f"{c.address_prefix}{town.name}{v.name}",
                        max(1, town.population // len(town.villages)),
                        parent=centre.id,
                    )
                    v.clinic = clinic.id
                p = pref_insts[c.prefecture]
                bld.reg.access[v.code] = Access(
                    village=clinic,
                    primary=centre,
                    general=d["general"],
                    tcm=d["tcm"],
                    mch=d["mch"],
                    cdc=d["cdc"],
                    insurer=d["insurer"],
                    registry=d["registry"],
                    pref_general=p["general"],
                    pref_tcm=p["tcm"],
                    pref_mch=p["mch"],
                    province=province_hosp,
                )
    return bld.reg


def _org_address(county: str, rng: Random) -> str:
    from phip.cn import regions

    roads = table("names")["places"]["roads"]
    return f"{regions.full_name(county)}{rng.choice(roads)}路{rng.randint(1, 300)}号"


# --- FHIR resources of the institutions -------------------------------------------------------


def org_type(inst: Institution) -> list[b.Json]:
    spec = table("institutions")["kinds"][inst.kind]
    out = [b.concept(b.coding(b.CS_ORG_TYPE, spec["category"][0], spec["category"][1]))]
    if inst.level:
        code = inst.level + ({"甲": "A", "乙": "B"}.get(inst.grade or "", ""))
        label = LEVEL_NAMES[inst.level] + (f"{inst.grade}等" if inst.grade else "")
        out.append(b.concept(b.coding(b.CS_HOSPITAL_LEVEL, code, label)))
    return out


def resources(reg: Registry, start: date) -> list[tuple[str, b.Json]]:
    """(org id, resource) for every Organization, Location, Practitioner and PractitionerRole."""
    meta = {"lastUpdated": b.instant(datetime(start.year, start.month, start.day, 8, 0))}
    out: list[tuple[str, b.Json]] = []
    staff_by_id = {s.id: s for s in reg.staff}
    for inst in reg.by_id.values():
        org: b.Json = {
            "resourceType": "Organization",
            "id": inst.id,
            "meta": meta,
            "identifier": [
                {"system": USCC, "value": inst.uscc},
                {"system": ORG_CODE, "value": inst.id},
            ],
            "active": True,
            "type": org_type(inst),
            "name": inst.name,
            "address": [
                {
                    "use": "work",
                    "text": inst.address,
                    "country": "CN",
                    "extension": [{"url": b.EXT_DIVISION, "valueCode": inst.county}],
                }
            ],
        }
        if inst.beds:
            org["extension"] = [{"url": b.EXT_BEDS, "valueInteger": inst.beds}]
        if inst.parent:
            org["partOf"] = b.ref("Organization", inst.parent)
        out.append((inst.id, org))
        site = f"{inst.id}-site"
        out.append(
            (
                inst.id,
                {
                    "resourceType": "Location",
                    "id": site,
                    "meta": meta,
                    "status": "active",
                    "name": inst.name,
                    "mode": "instance",
                    "physicalType": b.concept(b.coding(b.LOC_TYPE, "bu", "Building")),
                    "address": {"text": inst.address, "country": "CN"},
                    "managingOrganization": b.ref("Organization", inst.id),
                },
            )
        )
        n_role = 0
        for dept in inst.depts.values():
            loc: b.Json = {
                "resourceType": "Location",
                "id": dept.location,
                "meta": meta,
                "extension": [
                    {"url": b.EXT_DEPARTMENT, "valueCoding": b.coding(b.CS_DEPARTMENT, dept.code, dept.name)}
                ],
                "status": "active",
                "name": f"{inst.name}{dept.name}" + ("病区" if dept.beds else ""),
                "mode": "instance",
                "physicalType": b.concept(
                    b.coding(b.LOC_TYPE, "wa", "Ward") if dept.beds else b.coding(b.LOC_TYPE, "ro", "Room")
                ),
                "managingOrganization": b.ref("Organization", inst.id),
                "partOf": b.ref("Location", site),
            }
            if dept.beds:
                loc["extension"].append({"url": b.EXT_BEDS, "valueInteger": dept.beds})
            out.append((inst.id, loc))
            for pid in dept.doctors + dept.nurses:
                s = staff_by_id[pid]
                out.append((inst.id, _practitioner(s, meta)))
                n_role += 1
                role_code = {"doctor": "doctor", "nurse": "nurse", "village": "doctor"}[s.role]
                out.append(
                    (
                        inst.id,
                        {
                            "resourceType": "PractitionerRole",
                            "id": f"{pid}-role",
                            "meta": meta,
                            "active": True,
                            "practitioner": b.ref("Practitioner", pid),
                            "organization": b.ref("Organization", inst.id),
                            "code": [b.concept(b.coding(b.PRACT_ROLE, role_code))],
                            "specialty": [b.concept(b.coding(b.CS_DEPARTMENT, dept.code, dept.name))],
                            "location": [b.ref("Location", dept.location)],
                        },
                    )
                )
    return out


_QUAL = {"doctor": ("1", "执业医师"), "nurse": ("3", "注册护士"), "village": ("5", "乡村医生")}


def _practitioner(s: Staffer, meta: b.Json) -> b.Json:
    name: b.Json = {"use": "official", "text": s.name.text}
    if s.name.family:
        name["family"] = s.name.family
    name["given"] = [s.name.given]
    qcode, qname = _QUAL[s.role]
    return {
        "resourceType": "Practitioner",
        "id": s.id,
        "meta": meta,
        "identifier": [
            {
                "use": "official",
                "type": b.concept(b.coding(b.CS_ID_TYPE, "01", "居民身份证")),
                "system": b.ID_NUMBER,
                "value": s.id_number,
            },
            {"system": LICENCE, "value": s.licence},
        ],
        "active": True,
        "name": [name],
        "gender": s.sex,
        "birthDate": s.birth.isoformat(),
        "qualification": [
            {
                "identifier": [{"system": LICENCE, "value": s.licence}],
                "code": b.concept(b.coding(b.CS_QUALIFICATION, qcode, qname)),
            },
            {"code": b.concept(b.coding(b.CS_TITLE, s.title[0], s.title[1]))},
        ],
    }


def village_of(geo: Geography, code: str) -> tuple[County, Town, Village]:
    for c in geo.counties:
        for t in c.towns:
            for v in t.villages:
                if v.code == code:
                    return c, t, v
    raise KeyError(code)
