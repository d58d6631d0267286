"""Spot checks of each shipped table against its source (shared/reference/china_standards.md)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from phip.terminology import content as C
from tests.terminology.conftest import ETHNICITY, ICD10_CN, ID_DOC, SEX


@pytest.fixture
def svc(node: Any) -> Any:
    return node.ext["terminology"]


def codes(svc: Any, system: str, version: str | None = None) -> set[str]:
    cs = svc.codesystem(system, version)
    assert cs is not None, system
    return set(cs.concepts)


def test_sex_gbt2261_1(svc: Any) -> None:
    # §8.2 [V]: 0 未知的性别, 1 男性, 2 女性, 9 未说明的性别
    assert codes(svc, SEX) == {"0", "1", "2", "9"}
    assert svc.lookup(SEX, "1") == "男性"
    assert svc.lookup(SEX, "2") == "女性"
    assert not svc.validate_code(SEX, "3")


def test_ethnicity_gb3304(svc: Any) -> None:
    # §8.3: 01 汉族 ... 56 基诺族, plus 97/98
    assert svc.lookup(ETHNICITY, "01") == "汉族"
    assert svc.lookup(ETHNICITY, "05") == "维吾尔族"
    assert svc.lookup(ETHNICITY, "39") == "阿昌族"
    assert svc.lookup(ETHNICITY, "56") == "基诺族"
    assert {f"{i:02d}" for i in range(1, 57)} <= codes(svc, ETHNICITY)
    assert svc.concept(ETHNICITY, "01").properties["alpha"] == "HA"
    assert not svc.validate_code(ETHNICITY, "57")


def test_id_document_types_cv02_01_101(svc: Any) -> None:
    # §4.5 [V]: the 8 national codes; the Shenzhen extension 109 is not national
    assert codes(svc, ID_DOC) == {"01", "02", "03", "04", "05", "06", "07", "99"}
    assert svc.lookup(ID_DOC, "01") == "居民身份证"
    assert svc.lookup(ID_DOC, "03") == "护照"
    assert not svc.validate_code(ID_DOC, "109")


def test_marital_education_blood(svc: Any) -> None:
    assert svc.lookup(C.MARITAL, "10") == "未婚"
    assert svc.subsumes(C.MARITAL, "20", "21") == "subsumes"  # 已婚 ⊃ 初婚
    assert svc.lookup(C.EDUCATION, "60") == "普通高级中学教育"
    assert svc.lookup(C.EDUCATION, "90") == "其他"
    assert svc.lookup(C.ABO, "1") == "A型"
    assert svc.lookup(C.RH, "1") == "阴性" and svc.lookup(C.RH, "2") == "阳性"


def test_divisions_gbt2260(svc: Any) -> None:
    assert svc.lookup(C.DIVISION, "110000") == "北京市"
    assert svc.lookup(C.DIVISION, "510104") == "锦江区"
    c = svc.concept(C.DIVISION, "510104")
    assert c.parents == ("510100",) and c.properties["level"] == "county"
    assert svc.subsumes(C.DIVISION, "510000", "510104") == "subsumes"
    # retired codes stay valid (old ID numbers carry them), marked retired, with their successor
    old = svc.concept(C.DIVISION, "510122")
    assert old is not None and old.inactive and old.properties["replacedBy"] == "510116"
    assert [m.target_code for m in svc.translate(C.DIVISION, "510122")] == ["510116"]
    assert svc.division_known("440524")  # the area code of the GB 11643 test vector 440524188001010014


def test_icd10(svc: Any) -> None:
    assert svc.validate_code(ICD10_CN, "A00")
    assert svc.validate_code(ICD10_CN, "A00.1")
    assert svc.validate_code(ICD10_CN, "a001")  # normalised: dot and case
    assert svc.lookup(ICD10_CN, "A00") == "Cholera"
    assert not svc.validate_code(ICD10_CN, "A00.9X")
    # the Chinese edition keeps A90 (dengue) which WHO 2019 moved to A97
    assert svc.validate_code(ICD10_CN, "A90") and not svc.validate_code(C.ICD10_WHO, "A90")
    assert svc.subsumes(ICD10_CN, "A00-A09", "A00.1") == "subsumes"


def test_notifiable_diseases_versions(svc: Any) -> None:
    versions = svc.codesystem_versions(C.NOTIFIABLE)
    assert {"2008", "2013", "2020", "2023", "2025"} <= set(versions)
    v2008 = codes(svc, C.NOTIFIABLE, "2008")
    assert "hfmd" in v2008 and "h1n1" not in v2008 and "covid19" not in v2008
    assert "h7n9" in codes(svc, C.NOTIFIABLE, "2013") and "h1n1" not in codes(svc, C.NOTIFIABLE, "2013")
    assert "mpox" in codes(svc, C.NOTIFIABLE, "2023") and "mpox" not in codes(svc, C.NOTIFIABLE, "2020")
    v2025 = codes(svc, C.NOTIFIABLE, "2025")
    assert "novel_influenza" in v2025 and "hpai" not in v2025 and "h7n9" not in v2025
    cs = svc.codesystem(C.NOTIFIABLE)  # current: the 2025 list
    assert cs.version == "2025"
    class_a = {c for c, x in cs.concepts.items() if x.properties["class"] == "甲"}
    assert class_a == {"plague", "cholera"}
    covid_2020 = svc.concept(C.NOTIFIABLE, "covid19", "2020")
    assert covid_2020.properties["managedAsA"] is True and covid_2020.properties["reportHours"] == 2
    assert svc.concept(C.NOTIFIABLE, "covid19", "2025").properties["reportHours"] == 24
    # reporting limits §9.3: 2 h for 甲类, 乙类甲管 (SARS, 肺炭疽) and polio
    for code in ("plague", "cholera", "sars", "pulmonary_anthrax", "polio"):
        assert svc.concept(C.NOTIFIABLE, code).properties["reportHours"] == 2, code
    assert svc.concept(C.NOTIFIABLE, "measles").properties["reportHours"] == 24


def test_notifiable_from_icd10(svc: Any) -> None:
    d = svc.notifiable("A00.1")  # cholera, via its parent A00
    assert d is not None and d.code == "cholera" and d.disease_class == "甲" and d.report_hours == 2
    assert svc.notifiable("B08.4").code == "hfmd"
    assert svc.notifiable("A16.2").code == "tuberculosis"
    assert svc.notifiable("B18.1").code == "hepatitis_b"  # the most specific disease wins
    assert svc.notifiable("I10") is None
    assert svc.notifiable("B08.4", on=date(2007, 1, 1)) is None  # 手足口病 listed from 2008-05-02


def test_vaccines_and_schedule(svc: Any) -> None:
    assert svc.lookup(C.VACCINE, "HepB") == "乙肝疫苗"
    assert svc.lookup(C.VACCINE, "BCG") == "卡介苗"
    sched = svc.vaccine_schedule()
    assert sched["edition"] == "2021"
    hepb = [m for v, _d, m in sched["doses"] if v == "HepB"]
    assert hepb == [0, 1, 6]
    assert [m for v, _d, m in sched["doses"] if v == "IPV"] == [2, 3]
    assert [m for v, _d, m in sched["doses"] if v == "DTaP"] == [3, 4, 5, 18]
    assert sched["min_interval_days"]["MPSV-AC"] == 1095


def test_ucum(svc: Any) -> None:
    assert svc.validate_code(C.UCUM, "mmol/L")
    assert svc.lookup(C.UCUM, "mm[Hg]") == "毫米汞柱"
    assert svc.validate_code(C.UCUM, "mg/(24.h)")  # not listed: the grammar accepts it
    assert not svc.validate_code(C.UCUM, "mg//dL")
    assert not svc.validate_code(C.UCUM, "furlong")


def test_essential_drugs(svc: Any) -> None:
    assert svc.lookup(C.DRUG, "XY0101") == "苯磺酸氨氯地平片"
    assert svc.concept(C.DRUG, "XY0101").properties["atc"] == "C08CA01"


@pytest.mark.parametrize("system", [SEX, ETHNICITY, ID_DOC, C.MARITAL, C.EDUCATION, C.ABO, C.RH, C.DIVISION,
                                    ICD10_CN, C.ICD10_WHO, C.NOTIFIABLE, C.VACCINE, C.UCUM, C.DRUG])
def test_each_table_found_by_valueset_reference(loaded: Any, api: Any, system: str) -> None:
    b = api.search(f"ValueSet?reference={system}")
    assert b["total"] >= 1, system
    vs = b["entry"][0]["resource"]
    assert any(i["system"] == system for i in vs["compose"]["include"])
    cs = api.search(f"CodeSystem?url={system}")
    assert cs["total"] >= 1


def test_bare_oid_alias_from_namingsystem(svc: Any) -> None:
    """CDA and HL7 v3 write codeSystem="2.16.156.10011.2.3.3.4": the NamingSystem makes it an alias."""
    assert svc.canonical("2.16.156.10011.2.3.3.4") == SEX
    assert svc.validate_code("2.16.156.10011.2.3.3.4", "1")
    assert svc.lookup("2.16.156.10011.2.3.3.3", "01") == "汉族"
