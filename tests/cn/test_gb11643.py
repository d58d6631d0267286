"""GB 11643 citizen identity numbers.

The two fixed vectors are the examples printed in the standard itself (born 1949 and 1880); every
other number here is generated.
"""

from __future__ import annotations

from datetime import date
from random import Random

import pytest

from phip.cn import gb11643, regions

TODAY = date(2025, 1, 1)


def test_the_standards_examples_validate() -> None:
    for number in ("11010519491231002X", "440524188001010014"):
        check = gb11643.validate(number, today=TODAY, known_area=regions.is_plausible)
        assert check.valid, check.errors
    check = gb11643.validate("11010519491231002X", today=TODAY)
    assert check.birth_date == date(1949, 12, 31)
    assert check.sex == "female" and check.sequence == 2 and check.area_code == "110105"


def test_weights_and_check_characters() -> None:
    assert gb11643.WEIGHTS == (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    assert gb11643.check_char("11010519491231002") == "X"
    with pytest.raises(ValueError):
        gb11643.check_char("1101051949123100")


def test_every_single_digit_error_and_adjacent_swap_is_caught() -> None:
    number = gb11643.generate("510104", date(1987, 3, 14), 457)
    assert gb11643.validate(number, today=TODAY).valid
    for i in range(18):
        for d in "0123456789X":
            if d == number[i] or (d == "X" and i < 17):
                continue
            bad = number[:i] + d + number[i + 1 :]
            assert gb11643.E_CHECKSUM in gb11643.validate(bad, today=TODAY).errors, bad
    for i in range(17):
        if number[i] != number[i + 1]:
            bad = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
            assert not gb11643.validate(bad, today=TODAY).valid


def test_normalize_cleans_what_people_type() -> None:
    number = gb11643.generate("510104", date(1990, 1, 1), 100)  # ends in a digit or X
    typed = " " + "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in number[:9]) + " " + number[9:].lower()
    assert gb11643.normalize(typed) == number
    assert gb11643.normalize("51010419900101100x".lower()) == "51010419900101100X"


def test_fifteen_digit_numbers_are_upgraded() -> None:
    old = "510104800101001"  # a synthetic 15-digit number: area, 800101, sequence 001
    new = gb11643.normalize(old)
    assert new[:6] == "510104" and new[6:14] == "19800101" and new[14:17] == "001"
    check = gb11643.validate(old, today=TODAY)
    assert check.valid and check.upgraded_from_15 and check.sex == "male"
    assert gb11643.upgrade15(old) == new


def test_errors_are_reported_with_stable_codes() -> None:
    assert gb11643.validate("", today=TODAY).errors == (gb11643.E_EMPTY,)
    assert gb11643.validate("123", today=TODAY).errors == (gb11643.E_LENGTH,)
    assert gb11643.validate("51010419900101A00X", today=TODAY).errors == (gb11643.E_CHARSET,)
    body = "51010419900230100"  # 30 February
    check = gb11643.validate(body + gb11643.check_char(body), today=TODAY)
    assert check.errors == (gb11643.E_BIRTH_DATE,) and check.birth_date is None
    future = gb11643.generate("510104", date(2030, 1, 1), 11)
    assert gb11643.validate(future, today=TODAY).errors == (gb11643.E_FUTURE,)
    unknown = gb11643.generate("519999", date(1990, 1, 1), 11)
    assert gb11643.validate(unknown, today=TODAY, known_area=regions.is_known).errors == (gb11643.E_AREA,)
    assert gb11643.validate(unknown, today=TODAY).valid  # shape only without a division table


def test_parts_are_read_even_from_an_invalid_number() -> None:
    number = gb11643.generate("510104", date(1975, 8, 9), 222)
    bad = number[:17] + ("0" if number[17] != "0" else "1")
    check = gb11643.validate(bad, today=TODAY)
    assert check.errors == (gb11643.E_CHECKSUM,)
    assert check.birth_date == date(1975, 8, 9) and check.sex == "female" and check.area_code == "510104"


def test_generate_round_trips() -> None:
    rng = Random(1)
    counties = [r.code for r in regions.all_regions() if r.level == "county"]
    for _ in range(500):
        area = rng.choice(counties)
        born = date.fromordinal(rng.randint(date(1920, 1, 1).toordinal(), date(2024, 12, 31).toordinal()))
        seq = rng.randint(0, 999)
        number = gb11643.generate(area, born, seq)
        check = gb11643.validate(number, today=TODAY, known_area=regions.is_known)
        assert check.valid and check.area_code == area and check.birth_date == born
        assert check.sex == gb11643.sex_of_sequence(seq)
    with pytest.raises(ValueError):
        gb11643.generate("51010", date(1990, 1, 1), 1)
    with pytest.raises(ValueError):
        gb11643.generate("510104", date(1990, 1, 1), 1000)
