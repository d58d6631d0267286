"""Citizen identity numbers (公民身份号码), GB 11643-1999.

An 18-character number: a 6-digit address code (GB/T 2260 county of the permanent household
registration when the number was issued), the 8-digit birth date ``YYYYMMDD``, a 3-digit sequence
code (odd for men, even for women) and a check character computed with ISO 7064:1983 MOD 11-2
(weights ``2^(18-i) mod 11``; remainder mapped through ``"10X98765432"``).  The older 15-digit
numbers (6 area + ``YYMMDD`` + 3 sequence, no check) are upgraded by inserting ``19`` before the
year and appending the check character.

The master patient index and the synthetic generator share this module: :func:`normalize` cleans
what people type (spaces, full-width digits, lower-case ``x``, 15-digit numbers), :func:`validate`
says what is wrong with a number as a list of stable error codes, and :func:`generate` makes valid
numbers for synthetic residents.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Literal

WEIGHTS: tuple[int, ...] = tuple(pow(2, 17 - i, 11) for i in range(17))
"""Weights of the 17 body digits, 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 (GB 11643 §5.2)."""

CHECK_CHARS = "10X98765432"
"""Check character for each value of the weighted sum mod 11."""

_BODY17 = re.compile(r"^\d{17}$")
_FULL18 = re.compile(r"^\d{17}[\dX]$")
_FULL15 = re.compile(r"^\d{15}$")
_FULLWIDTH = {ord(c): ord(c) - 0xFEE0 for c in "０１２３４５６７８９ｘＸ"}

Sex = Literal["male", "female"]

# Stable error codes returned by validate().
E_EMPTY = "empty"
E_LENGTH = "length"
E_CHARSET = "charset"
E_CHECKSUM = "checksum"
E_BIRTH_DATE = "birth_date"
E_FUTURE = "birth_date_future"
E_AREA = "area_code"


def check_char(body17: str) -> str:
    """The MOD 11-2 check character of a 17-digit body."""
    if not _BODY17.match(body17):
        raise ValueError(f"the body must be 17 digits, got {body17!r}")
    total = sum(int(d) * w for d, w in zip(body17, WEIGHTS, strict=True))
    return CHECK_CHARS[total % 11]


def upgrade15(number15: str) -> str:
    """Turn a 15-digit number (issued before 1999, born 19xx) into its 18-character form."""
    if not _FULL15.match(number15):
        raise ValueError(f"not a 15-digit identity number: {number15!r}")
    body = number15[:6] + "19" + number15[6:]
    return body + check_char(body)


def normalize(raw: str) -> str:
    """Clean a typed identity number without judging it.

    Strips whitespace (also inside), maps full-width digits and ``ｘ`` to ASCII, upper-cases
    ``x`` and upgrades a 15-digit number to 18 characters.  Anything else is returned as it is,
    for :func:`validate` to report.
    """
    s = "".join(raw.translate(_FULLWIDTH).split()).upper()
    if _FULL15.match(s):
        return upgrade15(s)
    return s


@dataclass(frozen=True, slots=True)
class IdCheck:
    """What :func:`validate` found out about one number.

    ``number`` is the normalised form.  ``birth_date``, ``area_code`` and ``sex`` are filled in
    whenever they can be read, even if the number fails another check (a typo in the check
    character still tells the birth date), so callers can compare them with recorded values.
    """

    number: str
    valid: bool
    errors: tuple[str, ...]
    area_code: str | None = None
    birth_date: date | None = None
    sex: Sex | None = None
    sequence: int | None = None
    upgraded_from_15: bool = False


def _parse_date(s: str) -> date | None:
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        return None


def validate(
    raw: str,
    *,
    today: date | None = None,
    known_area: Callable[[str], bool] | None = None,
) -> IdCheck:
    """Check a citizen identity number and read its parts.

    ``today`` (for the not-in-the-future check) defaults to ``date.today()``; pass a fixed date
    for reproducible results.  ``known_area`` tells whether a 6-digit address code exists (for
    example ``phip.cn.regions.is_known``); without it the address code is only checked for
    shape.  Errors are the ``E_*`` codes of this module, in a fixed order.
    """
    s = normalize(raw)
    upgraded = _FULL15.match("".join(raw.translate(_FULLWIDTH).split())) is not None
    if not s:
        return IdCheck(number=s, valid=False, errors=(E_EMPTY,))
    if len(s) != 18:
        return IdCheck(number=s, valid=False, errors=(E_LENGTH,))
    if not _FULL18.match(s):
        return IdCheck(number=s, valid=False, errors=(E_CHARSET,))
    errors: list[str] = []
    area = s[:6]
    born = _parse_date(s[6:14])
    seq = int(s[14:17])
    if check_char(s[:17]) != s[17]:
        errors.append(E_CHECKSUM)
    if born is None:
        errors.append(E_BIRTH_DATE)
    elif born > (today or date.today()):
        errors.append(E_FUTURE)
    if area[:2] == "00" or (known_area is not None and not known_area(area)):
        errors.append(E_AREA)
    return IdCheck(
        number=s,
        valid=not errors,
        errors=tuple(errors),
        area_code=area,
        birth_date=born,
        sex="male" if seq % 2 == 1 else "female",
        sequence=seq,
        upgraded_from_15=upgraded,
    )


def generate(area_code: str, birth_date: date, sequence: int) -> str:
    """A valid 18-character number from its parts.

    ``sequence`` is 0..999; its parity is the sex (odd male, even female), so callers pick it.
    """
    if not re.fullmatch(r"\d{6}", area_code):
        raise ValueError(f"area code must be 6 digits, got {area_code!r}")
    if not 0 <= sequence <= 999:
        raise ValueError(f"sequence must be 0..999, got {sequence}")
    body = f"{area_code}{birth_date:%Y%m%d}{sequence:03d}"
    return body + check_char(body)


def sex_of_sequence(sequence: int) -> Sex:
    """Sex encoded by a sequence code: odd male, even female."""
    return "male" if sequence % 2 == 1 else "female"
