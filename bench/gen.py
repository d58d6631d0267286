"""Deterministic generator of a mixed synthetic FHIR R4 load, as NDJSON (one file per type).

Per patient, on average (the ratios of a county's primary-care and outpatient data):

- 1 Patient: Chinese name (family + given, with ``text``), an 18-character citizen identity
  number under ``urn:oid:2.16.156.10011.1.3`` (made-up area/birth/sequence digits with a valid
  GB 11643 check character — synthetic, never a real person), a health-record number, a mobile
  phone, a home address, a managing Organization and a general practitioner;
- ~4 Encounters (class, department type, period, subject, participant, serviceProvider);
- ~12 Observations (LOINC: blood-pressure panel with components, heart rate, weight, height,
  BMI, temperature, fasting glucose, HbA1c, total cholesterol… with UCUM valueQuantity,
  effectiveDateTime, subject, encounter, performer);
- ~1.1 Conditions (ICD-10), ~3 MedicationRequests (ATC, dosage), ~1.4 Immunizations;
- plus Organizations (1 per 400 patients, ≥ 5) and Practitioners (1 per 60 patients, ≥ 20),
  written first and referenced by the rest.

That is ~22.5 resources per patient (1M ≈ 44,000 patients, 532,000 Observations);
``--resources N`` stops at exactly N resources (the last patient's record may be cut short).
Output is a pure function of ``(N, seed)``.  Ids are UUID-shaped (random, like most FHIR
servers assign), which is the realistic — and for B-tree indexes the harder — case.

Run: ``python bench/gen.py --resources 100000 --seed 1 --out /tmp/phip-bench/data [--check 2000]``
(``--check K`` validates every K-th resource with ``phip.fhir.validation.validate``; ``--check 1``
validates all of them).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 居民身份证号码
HR_SYSTEM = "urn:oid:2.16.156.10011.1.2"  # 城乡居民健康档案编号 (synthetic)
ORG_SYSTEM = "urn:oid:2.16.156.10011.1.5"  # 医疗机构编码 (synthetic)
PRAC_SYSTEM = "urn:oid:2.16.156.10011.1.4"  # 医师执业证书编码 (synthetic)
DEPT_SYSTEM = "urn:oid:2.16.156.10011.2.3.1.272"  # 科室代码 (synthetic use)
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
CVX = "http://hl7.org/fhir/sid/cvx"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
COND_CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CAT = "http://terminology.hl7.org/CodeSystem/condition-category"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"

TYPES = ("Organization", "Practitioner", "Patient", "Encounter", "Observation", "Condition",
         "MedicationRequest", "Immunization")

# -- catalogs (small, synthetic) ----------------------------------------------------------------------
SURNAMES = [("王", 71), ("李", 70), ("张", 63), ("刘", 53), ("陈", 46), ("杨", 31), ("黄", 23), ("赵", 23),
            ("吴", 20), ("周", 19), ("徐", 13), ("孙", 13), ("马", 11), ("朱", 11), ("胡", 11), ("郭", 11),
            ("何", 10), ("林", 10), ("高", 10), ("罗", 9), ("郑", 9), ("梁", 8), ("谢", 8), ("宋", 7),
            ("唐", 7), ("许", 7), ("韩", 6), ("邓", 6), ("冯", 6), ("曹", 6), ("彭", 6), ("曾", 6), ("肖", 6),
            ("田", 5), ("董", 5), ("潘", 5), ("袁", 5), ("蔡", 4), ("蒋", 4), ("余", 4), ("欧阳", 1), ("司马", 1)]
GIVEN_M = "伟强军磊洋勇杰涛明超辉刚平斌浩鹏宇建国华俊峰文博子轩浩然志"
GIVEN_F = "芳娜敏静丽艳娟霞秀英玲桂兰燕萍红梅琳婷雪颖欣怡梓涵佳慧"
PLACES = [("510104", "四川省", "成都市", "锦江区", "610021"), ("510105", "四川省", "成都市", "青羊区", "610031"),
          ("510106", "四川省", "成都市", "金牛区", "610036"), ("510107", "四川省", "成都市", "武侯区", "610041"),
          ("510108", "四川省", "成都市", "成华区", "610051"), ("510112", "四川省", "成都市", "龙泉驿区", "610100"),
          ("510113", "四川省", "成都市", "青白江区", "610300"), ("510114", "四川省", "成都市", "新都区", "610500"),
          ("510115", "四川省", "成都市", "温江区", "611130"), ("510116", "四川省", "成都市", "双流区", "610200"),
          ("510121", "四川省", "成都市", "金堂县", "610400"), ("510129", "四川省", "成都市", "大邑县", "611300")]
STREETS = ["人民南路", "人民北路", "蜀都大道", "红星路", "春熙路", "科华北路", "一环路", "二环路", "天府大道",
           "建设路", "青羊大道", "光华大道"]
DEPTS = [("02", "全科医疗科", 5), ("03", "内科", 4), ("04", "外科", 1), ("05", "妇产科", 1), ("07", "儿科", 1),
         ("01", "预防保健科", 2), ("50", "中医科", 1), ("20", "急诊医学科", 1)]
ENC_CLASS = [("AMB", "ambulatory", 14), ("IMP", "inpatient encounter", 1), ("EMER", "emergency", 1),
             ("HH", "home health", 2)]
ORG_KINDS = ["{d}人民医院", "{d}中医医院", "{d}妇幼保健院", "{d}{s}社区卫生服务中心", "{d}{s}乡镇卫生院"]
CONDITIONS = [("I10", "原发性高血压", 30), ("E11.9", "2型糖尿病", 14), ("E78.5", "高脂血症", 10),
              ("I25.1", "动脉粥样硬化性心脏病", 5), ("J44.9", "慢性阻塞性肺疾病", 4), ("J06.9", "急性上呼吸道感染", 20),
              ("J20.9", "急性支气管炎", 8), ("K29.7", "胃炎", 6), ("M54.5", "腰痛", 5), ("I69.3", "脑梗死后遗症", 2)]
DRUGS = [("C08CA01", "氨氯地平", 5.0, "mg", 1, 10), ("C09CA03", "缬沙坦", 80.0, "mg", 1, 6),
         ("A10BA02", "二甲双胍", 500.0, "mg", 3, 10), ("C10AA05", "阿托伐他汀", 20.0, "mg", 1, 6),
         ("B01AC06", "阿司匹林", 100.0, "mg", 1, 5), ("N02BE01", "对乙酰氨基酚", 500.0, "mg", 3, 6),
         ("J01CA04", "阿莫西林", 500.0, "mg", 3, 5), ("C07AB02", "美托洛尔", 47.5, "mg", 1, 3),
         ("A02BC01", "奥美拉唑", 20.0, "mg", 1, 3)]
VACCINES = [("08", "乙肝疫苗", 4), ("10", "脊灰疫苗(IPV)", 3), ("03", "麻腮风疫苗", 3), ("20", "百白破疫苗", 3),
            ("141", "流感疫苗", 6), ("33", "23价肺炎球菌多糖疫苗", 2), ("213", "新冠病毒疫苗", 4)]
# (code, display, unit, ucum, mean, sd, decimals, category, weight)
VITALS = [("29463-7", "Body weight", "kg", "kg", 63.0, 11.0, 1, "vital-signs", 10),
          ("8302-2", "Body height", "cm", "cm", 163.0, 8.0, 1, "vital-signs", 4),
          ("39156-5", "Body mass index", "kg/m2", "kg/m2", 23.5, 3.2, 1, "vital-signs", 4),
          ("8867-4", "Heart rate", "/min", "/min", 76.0, 10.0, 0, "vital-signs", 10),
          ("8310-5", "Body temperature", "Cel", "Cel", 36.7, 0.4, 1, "vital-signs", 5),
          ("1558-6", "Fasting glucose", "mmol/L", "mmol/L", 5.9, 1.4, 1, "laboratory", 8),
          ("4548-4", "Hemoglobin A1c", "%", "%", 6.1, 1.0, 1, "laboratory", 4),
          ("2093-3", "Cholesterol total", "mmol/L", "mmol/L", 4.9, 0.9, 2, "laboratory", 4),
          ("2571-8", "Triglyceride", "mmol/L", "mmol/L", 1.6, 0.7, 2, "laboratory", 3),
          ("718-7", "Hemoglobin", "g/L", "g/L", 135.0, 15.0, 0, "laboratory", 3)]
BP_WEIGHT = 14  # blood-pressure panels among observations (weight against VITALS)
T0 = datetime(2019, 1, 1, 8, 0)
SPAN_MIN = 6 * 365 * 24 * 60  # 2019-01-01 … 2024-12-30


def _cum(weights: list[int]) -> list[int]:
    out, s = [], 0
    for w in weights:
        s += w
        out.append(s)
    return out


_SUR = [s for s, _ in SURNAMES]
_SUR_CW = _cum([w for _, w in SURNAMES])
_CLS_CW = _cum([w for *_, w in ENC_CLASS])
_DEPT_CW = _cum([w for *_, w in DEPTS])
_COND_CW = _cum([w for *_, w in CONDITIONS])
_VAX_CW = _cum([w for *_, w in VACCINES])
_OBS_CW = _cum([BP_WEIGHT] + [v[-1] for v in VITALS])
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))


def check_char(body17: str) -> str:
    """GB 11643 (ISO 7064 MOD 11-2) check character."""
    return "10X98765432"[sum(int(d) * w for d, w in zip(body17, _WEIGHTS, strict=True)) % 11]


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S+08:00")


class Gen:
    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.rng = random.Random(seed)
        self.patients = max(1, round(n / 22))
        self.orgs = [self._uuid() for _ in range(max(5, self.patients // 400))]
        self.pracs = [self._uuid() for _ in range(max(20, self.patients // 60))]

    def _uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def _pick(self, items: list[Any] | tuple[Any, ...], cw: list[int]) -> Any:
        return self.rng.choices(items, cum_weights=cw)[0]

    # -- the stream -----------------------------------------------------------------------------------
    def resources(self) -> Iterator[dict[str, Any]]:
        emitted = 0
        for i, oid in enumerate(self.orgs):
            yield self.organization(i, oid)
            emitted += 1
            if emitted >= self.n:
                return
        for i, pid in enumerate(self.pracs):
            yield self.practitioner(i, pid)
            emitted += 1
            if emitted >= self.n:
                return
        k = 0
        while True:
            for res in self.record(k):
                yield res
                emitted += 1
                if emitted >= self.n:
                    return
            k += 1

    # -- resources ------------------------------------------------------------------------------------
    def organization(self, i: int, oid: str) -> dict[str, Any]:
        code, prov, city, dist, post = PLACES[i % len(PLACES)]
        name = ORG_KINDS[i % len(ORG_KINDS)].format(d=dist, s=STREETS[i % len(STREETS)].replace("路", "街道"))
        return {
            "resourceType": "Organization", "id": oid,
            "identifier": [{"system": ORG_SYSTEM, "value": f"{code}{i:05d}"}],
            "active": True,
            "type": [{"coding": [{"system": ORG_TYPE, "code": "prov", "display": "Healthcare Provider"}]}],
            "name": name,
            "telecom": [{"system": "phone", "value": f"028-8{i % 1000:03d}{i * 7 % 10000:04d}", "use": "work"}],
            "address": [{"use": "work", "text": f"{prov}{city}{dist}{STREETS[i % len(STREETS)]}{i % 300 + 1}号",
                         "city": city, "district": dist, "state": prov, "postalCode": post, "country": "CN"}],
        }

    def _name(self, male: bool) -> tuple[str, str]:
        fam = self._pick(_SUR, _SUR_CW)
        pool = GIVEN_M if male else GIVEN_F
        given = "".join(self.rng.choice(pool) for _ in range(self.rng.choice((1, 2, 2, 2))))
        return fam, given

    def practitioner(self, i: int, pid: str) -> dict[str, Any]:
        male = self.rng.random() < 0.45
        fam, given = self._name(male)
        return {
            "resourceType": "Practitioner", "id": pid,
            "identifier": [{"system": PRAC_SYSTEM, "value": f"1105101{i:08d}"}],
            "active": True,
            "name": [{"use": "official", "text": fam + given, "family": fam, "given": [given]}],
            "telecom": [{"system": "phone", "value": f"139{self.rng.randrange(10**8):08d}", "use": "work"}],
            "gender": "male" if male else "female",
            "qualification": [{"code": {"text": self.rng.choice(("执业医师", "执业助理医师", "主治医师"))}}],
        }

    def record(self, k: int) -> Iterator[dict[str, Any]]:
        rng = self.rng
        male = rng.random() < 0.5
        age_days = rng.randrange(365 * 1, 365 * 90)
        birth = date(2024, 6, 30) - timedelta(days=age_days)
        area, prov, city, dist, post = rng.choice(PLACES)
        seq = rng.randrange(0, 500) * 2 + (1 if male else 0)
        body = f"{area}{birth:%Y%m%d}{seq:03d}"
        idno = body + check_char(body)
        fam, given = self._name(male)
        pid = self._uuid()
        org = self.orgs[k % len(self.orgs)]
        gp = self.pracs[k % len(self.pracs)]
        street = rng.choice(STREETS)
        line = f"{street}{rng.randrange(1, 400)}号"
        yield {
            "resourceType": "Patient", "id": pid,
            "identifier": [
                {"use": "official", "system": ID_SYSTEM, "value": idno},
                {"use": "secondary", "system": HR_SYSTEM, "value": f"{area}{k:010d}"},
            ],
            "active": True,
            "name": [{"use": "official", "text": fam + given, "family": fam, "given": [given]}],
            "telecom": [{"system": "phone", "value": f"1{rng.choice('3578')}{rng.randrange(10**9):09d}",
                         "use": "mobile"}],
            "gender": "male" if male else "female",
            "birthDate": birth.isoformat(),
            "address": [{"use": "home", "type": "physical",
                         "text": f"{prov}{city}{dist}{line}{rng.randrange(1, 30)}栋",
                         "line": [line], "city": city, "district": dist,
                         "state": prov, "postalCode": post, "country": "CN"}],
            "managingOrganization": {"reference": f"Organization/{org}"},
            "generalPractitioner": [{"reference": f"Practitioner/{gp}"}],
        }
        subj = {"reference": f"Patient/{pid}", "display": fam + given}
        n_enc = rng.choice((1, 2, 3, 3, 4, 4, 5, 5, 6, 7))
        chronic = [c for c in CONDITIONS[:5] if rng.random() < c[2] / 100]
        acute_cond = 0
        for _e in range(n_enc):
            encounter, start, doc = self.encounter(subj, org)
            yield encounter
            enc = {"reference": f"Encounter/{encounter['id']}"}
            for _o in range(rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5))):
                yield self.observation(subj, enc, doc, start + timedelta(minutes=rng.randrange(1, 30)))
            # diagnoses: chronic ones once, in the first encounters; acute ones sometimes
            if chronic:
                code, disp, _w = chronic.pop()
                yield self.condition(subj, enc, code, disp, start, "problem-list-item")
            elif acute_cond < 2 and rng.random() < 0.15:
                acute_cond += 1
                code, disp, _w = self._pick(CONDITIONS, _COND_CW)
                yield self.condition(subj, enc, code, disp, start, "encounter-diagnosis")
            for _m in range(rng.choice((0, 0, 0, 1, 1, 1, 1, 2))):
                yield self.medication_request(subj, enc, doc, start)
            if rng.random() < 0.35:
                yield self.immunization(pid, enc, doc, start)

    def encounter(self, subj: dict[str, Any], org: str) -> tuple[dict[str, Any], datetime, str]:
        """An Encounter of ``subj`` (usually at ``org``), its start and the practitioner seen."""
        rng = self.rng
        eid = self._uuid()
        start = T0 + timedelta(minutes=rng.randrange(SPAN_MIN))
        cls = self._pick(ENC_CLASS, _CLS_CW)
        dept = self._pick(DEPTS, _DEPT_CW)
        end = start + (timedelta(days=rng.randrange(2, 12)) if cls[0] == "IMP"
                       else timedelta(minutes=rng.randrange(8, 90)))
        doc = self.pracs[rng.randrange(len(self.pracs))]
        where = self.orgs[rng.randrange(len(self.orgs))] if rng.random() < 0.3 else org
        return {
            "resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": ACT, "code": cls[0], "display": cls[1]},
            "type": [{"coding": [{"system": DEPT_SYSTEM, "code": dept[0], "display": dept[1]}]}],
            "subject": subj,
            "participant": [{"individual": {"reference": f"Practitioner/{doc}"}}],
            "period": {"start": _ts(start), "end": _ts(end)},
            "serviceProvider": {"reference": f"Organization/{where}"},
        }, start, doc

    def visit_bundle(self, k: int, size: int = 20) -> dict[str, Any]:
        """A transaction Bundle of ``size`` new resources for one new patient, as an EMR would send it:
        the Patient, 2 Encounters with their Observations, a Condition, MedicationRequests and an
        Immunization; ``urn:uuid:`` full URLs, references between entries rewritten to them."""
        rng = self.rng
        res: list[dict[str, Any]] = [next(self.record(k))]
        pid = res[0]["id"]
        name = res[0]["name"][0]["text"]
        subj = {"reference": f"Patient/{pid}", "display": name}
        org = res[0]["managingOrganization"]["reference"].split("/", 1)[1]
        encs = [self.encounter(subj, org) for _ in range(2)]
        res += [e for e, _s, _d in encs]
        tail: list[dict[str, Any]] = []
        e0, s0, d0 = encs[0]
        ref0 = {"reference": f"Encounter/{e0['id']}"}
        code, disp, _w = self._pick(CONDITIONS, _COND_CW)
        tail.append(self.condition(subj, ref0, code, disp, s0, "encounter-diagnosis"))
        tail.append(self.immunization(pid, ref0, d0, s0))
        while len(res) + len(tail) < size:
            e, s, d = encs[len(res) % 2]
            ref = {"reference": f"Encounter/{e['id']}"}
            if rng.random() < 0.15:
                tail.append(self.medication_request(subj, ref, d, s))
            else:
                res.append(self.observation(subj, ref, d, s + timedelta(minutes=rng.randrange(1, 30))))
        res = (res + tail)[:size]
        local = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in res}
        entries = []
        for r in res:
            body = {k2: v for k2, v in r.items() if k2 != "id"}
            entries.append({"fullUrl": f"urn:uuid:{r['id']}", "resource": _rewrite(body, local),
                            "request": {"method": "POST", "url": r["resourceType"]}})
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    def observation(self, subj: dict[str, Any], enc: dict[str, Any], doc: str, when: datetime) -> dict[str, Any]:
        rng = self.rng
        which = self._pick(range(len(VITALS) + 1), _OBS_CW)
        base: dict[str, Any] = {"resourceType": "Observation", "id": self._uuid(), "status": "final"}
        if which == 0:
            sys_ = round(rng.gauss(132, 18))
            dia = round(rng.gauss(82, 11))
            base.update({
                "category": [{"coding": [{"system": OBS_CAT, "code": "vital-signs", "display": "Vital Signs"}]}],
                "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
                         "text": "血压"},
                "subject": subj, "encounter": enc, "effectiveDateTime": _ts(when),
                "performer": [{"reference": f"Practitioner/{doc}"}],
                "component": [
                    {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
                     "valueQuantity": {"value": sys_, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
                    {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
                     "valueQuantity": {"value": dia, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
                ],
            })
            return base
        code, disp, unit, ucum, mean, sd, dec, cat, _w = VITALS[which - 1]
        value = round(max(mean / 4, rng.gauss(mean, sd)), dec)
        if dec == 0:
            value = int(value)
        base.update({
            "category": [{"coding": [{"system": OBS_CAT, "code": cat}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": disp}]},
            "subject": subj, "encounter": enc, "effectiveDateTime": _ts(when),
            "performer": [{"reference": f"Practitioner/{doc}"}],
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
        })
        return base

    def condition(self, subj: dict[str, Any], enc: dict[str, Any], code: str, disp: str, when: datetime,
                  cat: str) -> dict[str, Any]:
        return {
            "resourceType": "Condition", "id": self._uuid(),
            "clinicalStatus": {"coding": [{"system": COND_CLIN, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": COND_VER, "code": "confirmed"}]},
            "category": [{"coding": [{"system": COND_CAT, "code": cat}]}],
            "code": {"coding": [{"system": ICD10, "code": code, "display": disp}], "text": disp},
            "subject": subj, "encounter": enc,
            "onsetDateTime": _ts(when - timedelta(days=self.rng.randrange(0, 400))),
            "recordedDate": _ts(when),
        }

    def medication_request(self, subj: dict[str, Any], enc: dict[str, Any], doc: str,
                           when: datetime) -> dict[str, Any]:
        atc, name, dose, unit, freq, _w = self.rng.choice(DRUGS)
        days = self.rng.choice((3, 5, 7, 14, 30))
        return {
            "resourceType": "MedicationRequest", "id": self._uuid(),
            "status": "completed" if when.year < 2024 else "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": atc, "display": name}], "text": name},
            "subject": subj, "encounter": enc, "authoredOn": _ts(when),
            "requester": {"reference": f"Practitioner/{doc}"},
            "dosageInstruction": [{
                "text": f"{name} {dose:g}{unit} 每日{freq}次 口服",
                "timing": {"repeat": {"frequency": freq, "period": 1, "periodUnit": "d"}},
                "route": {"text": "口服"},
                "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit, "system": UCUM, "code": unit}}],
            }],
            "dispenseRequest": {"expectedSupplyDuration": {"value": days, "unit": "d", "system": UCUM,
                                                           "code": "d"}},
        }

    def immunization(self, pid: str, enc: dict[str, Any], doc: str, when: datetime) -> dict[str, Any]:
        code, name, _w = self._pick(VACCINES, _VAX_CW)
        return {
            "resourceType": "Immunization", "id": self._uuid(), "status": "completed",
            "vaccineCode": {"coding": [{"system": CVX, "code": code}], "text": name},
            "patient": {"reference": f"Patient/{pid}"}, "encounter": enc,
            "occurrenceDateTime": _ts(when), "primarySource": True,
            "lotNumber": f"{when.year}{self.rng.randrange(10**6):06d}",
            "performer": [{"actor": {"reference": f"Practitioner/{doc}"}}],
            "protocolApplied": [{"doseNumberPositiveInt": self.rng.randint(1, 3)}],
        }


def _rewrite(value: Any, local: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (local.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, local))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, local) for v in value]
    return value


def resources(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """The first ``n`` resources of the load for ``seed``."""
    return Gen(n, seed).resources()


def write(n: int, seed: int, out: Path, *, check_every: int = 0) -> dict[str, int]:
    """Write ``<Type>.ndjson`` files into ``out``; returns the count per type."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ndjson"):
        old.unlink()
    files: dict[str, Any] = {}
    counts: dict[str, int] = {}
    validate = None
    if check_every:
        from phip.fhir.validation import errors as validate
    bad = 0
    try:
        for i, res in enumerate(resources(n, seed)):
            t = res["resourceType"]
            f = files.get(t)
            if f is None:
                f = files[t] = (out / f"{t}.ndjson").open("wb", buffering=1 << 20)
            f.write(orjson.dumps(res) + b"\n")
            counts[t] = counts.get(t, 0) + 1
            if validate is not None and i % check_every == 0:
                errs = validate(res)
                if errs:
                    bad += 1
                    if bad <= 5:
                        print(f"INVALID {t}/{res['id']}: {[(e.expression, e.diagnostics) for e in errs]}",
                              file=sys.stderr)
    finally:
        for f in files.values():
            f.close()
    (out / "manifest.json").write_bytes(orjson.dumps({"resources": n, "seed": seed, "counts": counts},
                                                     option=orjson.OPT_INDENT_2))
    if bad:
        raise SystemExit(f"{bad} generated resources failed validation")
    return counts


def ensure(n: int, seed: int, out: Path) -> Path:
    """Reuse ``out`` if it already holds the load for (n, seed); otherwise generate it."""
    m = out / "manifest.json"
    if m.exists():
        meta = orjson.loads(m.read_bytes())
        if meta.get("resources") == n and meta.get("seed") == seed:
            return out
    t = time.perf_counter()
    counts = write(n, seed, out)
    print(f"generated {n:,} resources in {time.perf_counter() - t:.1f}s into {out}: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resources", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/out/data"))
    ap.add_argument("--check", type=int, default=0, metavar="K",
                    help="validate every K-th resource (1 = all) and fail on any error")
    a = ap.parse_args()
    t = time.perf_counter()
    counts = write(a.resources, a.seed, a.out, check_every=a.check)
    dt = time.perf_counter() - t
    size = sum(p.stat().st_size for p in a.out.glob("*.ndjson"))
    print(f"{a.resources:,} resources in {dt:.1f}s ({a.resources / dt:,.0f}/s), {size / 1e6:.0f} MB → {a.out}")
    for k, v in counts.items():
        print(f"  {k:<18} {v:>9,}")


if __name__ == "__main__":
    main()
