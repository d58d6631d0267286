from __future__ import annotations

from datetime import date

from phip.cn import gb11643
from phip.empi.compare import cmp_birth, cmp_name, cmp_rid, near_string, possible_twin
from phip.empi.normalize import (
    check_resident_id,
    features,
    normalize_phone,
    pinyin,
    placeholder_mother,
    simplify,
)

from .builders import P, rid


def test_simplify_traditional_fullwidth_and_spaces() -> None:
    assert simplify("張 偉國") == "张伟国"
    assert simplify("ＡＢＣ") == "abc"


def test_pinyin_toneless_makes_homophones_meet() -> None:
    assert pinyin("张伟") == "zhangwei"
    assert pinyin("张维") == pinyin("张伟")
    assert pinyin("john") == "john"


def test_newborn_placeholder_names() -> None:
    assert placeholder_mother("周璐萌之子") == "周璐萌"
    assert placeholder_mother("周璐萌之女") == "周璐萌"
    assert placeholder_mother("李娜之女二") == "李娜"
    assert placeholder_mother("周璐萌") is None
    f = features(P("王芳之女").born("2025-01-02").sex("female").build())
    assert f.placeholder and f.name is None and f.mother_name == "王芳"


def test_phone_normalised() -> None:
    assert normalize_phone("+86 154-0000-1111") == "15400001111"
    assert normalize_phone("123") is None


def test_resident_id_normalisation_and_validity() -> None:
    n = rid("510104", "1980-03-04", 123)
    assert check_resident_id(" " + n.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"}) + " ").number == n
    assert check_resident_id(n).valid
    bad = n[:-1] + ("0" if n[-1] != "0" else "1")
    c = check_resident_id(bad)
    assert not c.valid and "checksum" in c.errors
    # 15 digits are upgraded to 18
    n15 = "510104800304123"
    assert check_resident_id(n15).number == gb11643.upgrade15(n15)
    # lower-case x
    x = next(gb11643.generate("510104", date(1990, 1, 1), s) for s in range(1000)
             if gb11643.generate("510104", date(1990, 1, 1), s).endswith("X"))
    assert check_resident_id(x.lower()).number == x


def test_unknown_area_code_is_only_a_warning() -> None:
    n = gb11643.generate("519999", date(1980, 3, 4), 123)
    c = check_resident_id(n)
    assert c.valid and c.warnings == ("area_code",)


def test_mothers_number_on_a_newborn_is_not_its_own() -> None:
    mother = rid("510104", "1990-07-23", 372)
    c = check_resident_id(mother, birth="2025-05-18", sex="male")
    assert c.valid and not c.own
    f = features(P("周璐萌之子").born("2025-05-18").sex("male").idno(mother).build())
    assert f.trusted_id is None


def test_birth_levels() -> None:
    def lv(a: str, b: str) -> int | None:
        return cmp_birth(features(P("x").born(a).build()), features(P("x").born(b).build()))

    assert lv("1980-03-04", "1980-03-04") == 0
    assert lv("1980-03-04", "1980-04-03") == 1
    assert lv("1980-03-04", "1980-03-05") == 2
    assert lv("1980-03-04", "1980") == 3
    assert lv("1980-03-04", "1981-09-04") == 4


def test_name_levels() -> None:
    def lv(a: tuple[str, str], b: tuple[str, str]) -> int | None:
        fa = features(P(a[0] + a[1], family=a[0], given=a[1]).build())
        fb = features(P(b[0] + b[1], family=b[0], given=b[1]).build())
        return cmp_name(fa, fb)

    assert lv(("张", "伟"), ("張", "偉")) == 0  # traditional
    assert lv(("张", "伟"), ("张", "维")) == 1  # homophone
    assert lv(("张", "浩然"), ("张", "子涵")) == 3
    assert lv(("张", "伟"), ("李", "娜")) == 4


def test_id_typos_are_near() -> None:
    assert near_string("510104198003041234", "510104198003041235")
    assert near_string("510104198003041234", "510104198003042134")
    assert not near_string("510104198003041234", "510104198003045678")
    a = features(P("x").idno(rid("510104", "1980-03-04", 123)).build())
    b = features(P("x").idno(rid("510104", "1980-03-04", 125)).build())
    assert cmp_rid(a, b) == 2  # both valid, different


def test_twin_guard() -> None:
    a = features(P("王浩然", family="王", given="浩然").born("2020-01-01").build())
    b = features(P("王子涵", family="王", given="子涵").born("2020-01-01").build())
    c = features(P("王浩燃", family="王", given="浩燃").born("2020-01-01").build())
    assert possible_twin(a, b)
    assert not possible_twin(a, c)  # homophone: the same child
