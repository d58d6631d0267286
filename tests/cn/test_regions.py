"""GB/T 2260 division table and the unified social credit code."""

from __future__ import annotations

from random import Random

from phip.cn import gb32100, regions


def test_sichuan_has_its_prefectures_and_counties() -> None:
    sichuan = regions.get("510000")
    assert sichuan is not None and sichuan.name == "四川省" and sichuan.level == "province"
    prefectures = [r for r in regions.children("510000") if r.level == "prefecture"]
    assert len(prefectures) == 21
    assert {p.name for p in prefectures} >= {"成都市", "凉山彝族自治州", "甘孜藏族自治州", "阿坝藏族羌族自治州"}
    assert len(regions.counties_of("510000")) == 183
    assert [r.name for r in regions.counties_of("510100")][:2] == ["锦江区", "青羊区"]


def test_names_parents_and_lookups() -> None:
    assert regions.full_name("510106") == "四川省成都市金牛区"
    assert regions.full_name("110105") == "北京市朝阳区"  # municipality: no prefecture row
    assert regions.full_name("429004") == "湖北省仙桃市"  # province-administered city
    assert regions.prefecture_of("510106").code == "510100"  # type: ignore[union-attr]
    assert regions.prefecture_of("110105") is None
    assert regions.get("510106").province_code == "510000"  # type: ignore[union-attr]
    assert regions.is_known("513401") and not regions.is_known("519999")
    assert regions.is_plausible("519999") and not regions.is_plausible("990101")
    assert regions.get("000000") is None


def test_the_table_is_consistent() -> None:
    every = regions.all_regions()
    assert len(every) > 3000
    codes = {r.code for r in every}
    for r in every:
        assert len(r.code) == 6 and r.code.isdigit()
        if r.level == "province":
            assert r.parent is None and r.code.endswith("0000")
        else:
            assert r.parent in codes and r.code[:2] == r.parent[:2]  # type: ignore[index]
    assert len(regions.provinces()) == 34


def test_credit_codes_generate_and_validate() -> None:
    rng = Random(4)
    for _ in range(200):
        body = f"{rng.randint(0, 99_999_999):08d}"
        code = gb32100.generate("12", "510104", body)
        assert len(code) == 18 and gb32100.validate(code)
        i = rng.randrange(18)
        other = next(c for c in gb32100.ALPHABET if c != code[i])
        assert not gb32100.validate(code[:i] + other + code[i + 1 :])
    assert not gb32100.validate("short")
    assert gb32100.org_check("00000000") == "0"
