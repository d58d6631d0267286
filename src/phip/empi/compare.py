"""Comparators: each turns two :class:`~phip.empi.normalize.Features` into a level index.

A comparator returns the index of the first level that holds, or ``None`` when one side lacks
the element (no evidence either way, weight 0).  The rules file gives every level its m and u
probabilities; :data:`LEVELS` names the levels in order so the rules can be validated.
"""

from __future__ import annotations

from collections.abc import Callable

import jellyfish

from phip.empi.normalize import Features

Comparator = Callable[[Features, Features], "int | None"]


def jw(a: str, b: str) -> float:
    return float(jellyfish.jaro_winkler_similarity(a, b))


def trigram_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of character trigrams (robust to reordered address parts)."""
    if len(a) < 3 or len(b) < 3:
        return 1.0 if a == b else 0.0
    ta = {a[i:i + 3] for i in range(len(a) - 2)}
    tb = {b[i:i + 3] for i in range(len(b) - 2)}
    return len(ta & tb) / len(ta | tb)


def near_string(a: str, b: str) -> bool:
    """One substitution, or two adjacent characters swapped (the typical ID-number typo)."""
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    if len(diff) == 1:
        return True
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def cmp_rid(a: Features, b: Features) -> int | None:
    """Resident ID: exact | near (typo) | different_valid (both valid and own) | different."""
    if not a.rid or not b.rid or not a.rid_own or not b.rid_own:
        return None
    if a.rid == b.rid:
        return 0
    if near_string(a.rid, b.rid):
        return 1
    if a.rid_valid and b.rid_valid:
        return 2
    return 3


def cmp_name(a: Features, b: Features) -> int | None:
    """Name: exact | pinyin (homophone) | similar (typo, family/given swapped) | partial (one part
    agrees, or one side lacks a part) | different."""
    if not a.name or not b.name:
        return None
    if a.name == b.name:
        return 0
    pa, pb = a.py or a.name, b.py or b.name
    if pa == pb:
        return 1
    if jw(pa, pb) >= 0.92:
        return 2
    fa, fb, ga, gb = a.family, b.family, a.given, b.given
    if fa and fb and ga and gb:
        if (fa == fb and jw(ga, gb) >= 0.9) or (ga == gb and jw(fa, fb) >= 0.9):
            return 2
        if jw(fa, gb) >= 0.9 and jw(ga, fb) >= 0.9:  # family and given swapped
            return 2
        if fa in (fb, gb) or ga in (gb, fb):
            return 3
        if max(jw(fa, fb), jw(ga, gb), jw(fa, gb), jw(ga, fb)) >= 0.9:
            return 3
        return 4
    # one side lacks a part: the parts present agree?
    parts_a = {x for x in (fa, ga) if x}
    parts_b = {x for x in (fb, gb) if x}
    if parts_a & parts_b:
        return 3
    return 4


def cmp_birth(a: Features, b: Features) -> int | None:
    """Birth date: exact | day/month swapped | near (±1 day or one digit) | same year | different."""
    x, y = a.birth, b.birth
    if not x or not y:
        return None
    if len(x) < 10 or len(y) < 10:  # year (or year-month) only
        return 3 if x[:4] == y[:4] else 4
    if x == y:
        return 0
    if x[:4] == y[:4] and x[5:7] == y[8:10] and x[8:10] == y[5:7]:
        return 1
    from datetime import date

    try:
        dx, dy = date.fromisoformat(x), date.fromisoformat(y)
        if abs((dx - dy).days) <= 1:
            return 2
    except ValueError:
        pass
    if near_string(x.replace("-", ""), y.replace("-", "")):
        return 2
    if x[:4] == y[:4]:
        return 3
    return 4


def cmp_sex(a: Features, b: Features) -> int | None:
    """Sex: same | different."""
    if not a.sex or not b.sex:
        return None
    return 0 if a.sex == b.sex else 1


def cmp_phone(a: Features, b: Features) -> int | None:
    """Phone: a number in common | different."""
    if not a.phones or not b.phones:
        return None
    return 0 if set(a.phones) & set(b.phones) else 1


def cmp_address(a: Features, b: Features) -> int | None:
    """Address: exact (same county, same text) | similar | same county | different."""
    if (not a.area and not a.addr) or (not b.area and not b.addr):
        return None
    same_area = bool(a.area and b.area and a.area == b.area)
    if a.addr and b.addr:
        if a.addr == b.addr and (same_area or not a.area or not b.area):
            return 0
        if a.addr == b.addr or jw(a.addr, b.addr) >= 0.9 or trigram_jaccard(a.addr, b.addr) >= 0.6:
            return 1
    if same_area:
        return 2
    return 3


def cmp_doc(a: Features, b: Features) -> int | None:
    """Other identity documents (passport, 户口簿…, same system): same | near | different."""
    if not a.docs or not b.docs:
        return None
    bsys = {s: v for s, v in b.docs}
    common = [(v, bsys[s]) for s, v in a.docs if s in bsys]
    if not common:
        return None
    if any(x == y for x, y in common):
        return 0
    if any(near_string(x, y) for x, y in common):
        return 1
    return 2


COMPARATORS: dict[str, Comparator] = {
    "rid": cmp_rid,
    "name": cmp_name,
    "birth": cmp_birth,
    "sex": cmp_sex,
    "phone": cmp_phone,
    "address": cmp_address,
    "doc": cmp_doc,
}
LEVELS: dict[str, tuple[str, ...]] = {
    "rid": ("exact", "near", "different_valid", "different"),
    "name": ("exact", "pinyin", "similar", "partial", "different"),
    "birth": ("exact", "swapped", "near", "year", "different"),
    "sex": ("same", "different"),
    "phone": ("same", "different"),
    "address": ("exact", "similar", "same_area", "different"),
    "doc": ("same", "near", "different"),
}


def possible_twin(a: Features, b: Features) -> bool:
    """Same family name and birth date, clearly different given names: twins, not one person."""
    if not (a.family and b.family and a.given and b.given and a.birth and b.birth):
        return False
    if not (_hanzi(a.given) and _hanzi(b.given)):
        return False  # the guard is for Chinese given names (latin ones: the weights decide)
    if a.family != b.family or a.birth != b.birth or a.given == b.given:
        return False
    if cmp_doc(a, b) == 0 or (a.rid and a.rid == b.rid and a.rid_own and b.rid_own):
        return False  # twins do not share a document number
    # IMEs type pinyin: a slip gives a homophone, so any other reading is another given name
    return pinyin_of(a.given) != pinyin_of(b.given)


def pinyin_of(s: str) -> str:
    from phip.empi.normalize import pinyin

    return pinyin(s)


def _hanzi(s: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in s)
