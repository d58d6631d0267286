"""Names, identity numbers and phone numbers for synthetic people.

- Names: surnames by national frequency; given names from characters fashionable in the person's
  birth era (one or two characters, the share of one-character names by era); Tibetan names
  (no surname, two two-character parts) and Yi names (clan name + given name) where the person's
  ethnicity calls for them (``naming`` in ethnicity.json).
- Identity numbers: GB 11643 numbers made unique without global state.  The 3-digit sequence
  space of each (area, birth date) is split into ``slots`` disjoint parts, one per township chunk
  plus one for staff, so chunks generated in parallel never collide.  When a slot's part is used
  up for a key, the birth date moves one day on (the person is synthetic; the distribution is
  unaffected), so allocation never fails.
- Phones: 11-digit mobile numbers with the unallocated prefix from demography.json, unique per
  chunk by a permuted counter.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from itertools import accumulate
from random import Random

from phip.cn import gb11643
from phip.synth.tables import table

ERAS = (1960, 1975, 1990, 2005)
ERA_KEYS = ("1950", "1965", "1980", "1995", "2010")


def era(birth_year: int) -> str:
    """The key of the naming era for a birth year."""
    return ERA_KEYS[bisect.bisect_right(ERAS, birth_year)]


@dataclass(frozen=True, slots=True)
class Name:
    family: str | None
    given: str
    text: str


NO_NAME = Name(None, "", "")
"""Placeholder until a person is named."""


@cache
def _surnames() -> tuple[tuple[str, ...], tuple[float, ...]]:
    rows = table("names")["surnames"]
    return tuple(r[0] for r in rows), tuple(accumulate(r[1] for r in rows))


def surname(rng: Random) -> str:
    names, cum = _surnames()
    return rng.choices(names, cum_weights=cum)[0]


def given_name(rng: Random, sex: str, birth_year: int) -> str:
    """One or two characters from the birth era's pool for the sex."""
    t = table("names")
    key = era(birth_year)
    pool = t["given"][sex][key]
    if rng.random() < t["single_char_given_share"][key]:
        return rng.choice(pool)
    a = rng.choice(pool)
    b = rng.choice(pool)
    if a == b and not (sex == "female" and rng.random() < 0.5):
        b = rng.choice(pool)
    return a + b


def naming_style(ethnicity: str) -> str:
    return str(table("ethnicity")["naming"].get(ethnicity, "han"))


def person_name(rng: Random, sex: str, birth_year: int, ethnicity: str, family: str | None = None) -> Name:
    """A full name; ``family`` forces the surname (children take a parent's)."""
    style = naming_style(ethnicity)
    t = table("names")
    if style == "tibetan":
        parts = t["tibetan"][sex]
        given = rng.choice(parts) + rng.choice(t["tibetan"]["female" if sex == "male" else "male"] + parts)
        return Name(None, given, given)
    if style == "yi":
        fam = family or rng.choice(t["yi"]["clans"])
        given = rng.choice(t["yi"][sex])
        return Name(fam, given, fam + given)
    fam = family or surname(rng)
    given = given_name(rng, sex, birth_year)
    return Name(fam, given, fam + given)


class IdAllocator:
    """Unique GB 11643 numbers for one slot of the sequence space (see the module docstring)."""

    def __init__(self, slot: int, slots: int) -> None:
        if not 0 <= slot < slots:
            raise ValueError(f"slot {slot} outside 0..{slots - 1}")
        self._values = {
            "male": [n for n in range(1000) if n % 2 == 1 and (n // 2) % slots == slot],
            "female": [n for n in range(1000) if n % 2 == 0 and (n // 2) % slots == slot],
        }
        if min(len(v) for v in self._values.values()) < 3:
            raise ValueError(f"{slots} slots leave too few sequence codes per slot")
        self._used: dict[tuple[str, date, str], int] = {}

    def allocate(self, area: str, birth: date, sex: str) -> tuple[str, date]:
        """An unused number for (area, birth, sex) and the birth date it encodes."""
        values = self._values[sex]
        while True:
            key = (area, birth, sex)
            n = self._used.get(key, 0)
            if n < len(values):
                self._used[key] = n + 1
                # a rotation, fixed per key, so the first number of a key is not always the lowest
                idx = (n + self._rng_offset(key)) % len(values)
                return gb11643.generate(area, birth, values[idx]), birth
            birth = birth + timedelta(days=1)

    def _rng_offset(self, key: tuple[str, date, str]) -> int:
        area, birth, sex = key
        return (int(area) * 31 + birth.toordinal() * 17 + (1 if sex == "male" else 0)) % 97


class PhoneBook:
    """Unique synthetic mobile numbers for one chunk."""

    def __init__(self, chunk: int) -> None:
        self._prefix = table("demography")["phones"]["prefix"] + f"{chunk % 100:02d}"
        self._n = 0

    def new(self) -> str:
        self._n += 1
        if self._n >= 1_000_000:
            raise RuntimeError("phone number space of the chunk exhausted")
        return self._prefix + f"{(self._n * 7919 + 104_729) % 1_000_000:06d}"
