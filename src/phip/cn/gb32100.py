"""Unified social credit codes (统一社会信用代码), GB 32100-2015, and organization codes, GB 11714.

An 18-character code: registration authority (1), organisation type (1), GB/T 2260 area code (6),
the 9-character GB 11714 organization code (8 body characters + check) and a check character.
The alphabet leaves out I, O, Z, S and V.  Both check characters are described as [M] in the
project notes (weights and moduli from the standards' public descriptions); the synthetic
generator uses :func:`generate` for institutions and the registry can use :func:`validate`.
"""

from __future__ import annotations

import re

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_BODY = re.compile(r"^[0-9A-Z]{8}$")


def org_check(body8: str) -> str:
    """GB 11714 check character of an 8-character organization-code body (0-9, X)."""
    if not _ORG_BODY.match(body8):
        raise ValueError(f"organization code body must be 8 characters 0-9/A-Z, got {body8!r}")
    total = sum((int(c) if c.isdigit() else ord(c) - 55) * w for c, w in zip(body8, ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


def uscc_check(body17: str) -> str:
    """GB 32100 check character of a 17-character body."""
    if len(body17) != 17 or any(c not in _VALUE for c in body17):
        raise ValueError(f"credit code body must be 17 characters of {ALPHABET}, got {body17!r}")
    total = sum(_VALUE[c] * w for c, w in zip(body17, USCC_WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def generate(authority_type: str, area_code: str, org_body8: str) -> str:
    """A valid code from a 2-character authority+type prefix (``12`` for public institutions,
    事业单位), a 6-digit area code and an 8-digit organization-code body."""
    body = authority_type + area_code + org_body8 + org_check(org_body8)
    return body + uscc_check(body)


def validate(code: str) -> bool:
    """True if ``code`` has the right shape and both check characters match."""
    s = code.strip().upper()
    if len(s) != 18 or any(c not in _VALUE for c in s):
        return False
    if not s[2:8].isdigit():
        return False
    try:
        return org_check(s[8:16]) == s[16] and uscc_check(s[:17]) == s[17]
    except ValueError:
        return False
