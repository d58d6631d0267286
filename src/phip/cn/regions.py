"""GB/T 2260 administrative division codes (行政区划代码), loaded from the project's own copy.

Six digits: province (1–2), prefecture (3–4), county (5–6).  The table in ``data/gbt2260.csv``
holds the current edition's provinces, prefectures and counties; the parent of a county is its
prefecture, or the province where the standard has no prefecture row (the municipalities'
districts, province-administered county-level cities).  Codes change every year, so this is one
edition, not a history: numbers issued under older codes are checked with :func:`is_plausible`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

Level = Literal["province", "prefecture", "county"]


@dataclass(frozen=True, slots=True)
class Region:
    """One division: its code, name, level and the code of the division above it."""

    code: str
    name: str
    level: Level
    parent: str | None

    @property
    def province_code(self) -> str:
        return self.code[:2] + "0000"


@cache
def _table() -> dict[str, Region]:
    raw = resources.files("phip.cn").joinpath("data", "gbt2260.csv").read_text(encoding="utf-8")
    lines = [ln for ln in raw.splitlines() if ln and not ln.startswith("#")]
    out: dict[str, Region] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        level = row["level"]
        if level not in ("province", "prefecture", "county"):
            raise ValueError(f"bad level {level!r} for {row['code']}")
        out[row["code"]] = Region(row["code"], row["name"], level, row["parent"] or None)  # type: ignore[arg-type]
    return out


@cache
def _children() -> dict[str, tuple[Region, ...]]:
    kids: dict[str, list[Region]] = {}
    for r in _table().values():
        if r.parent:
            kids.setdefault(r.parent, []).append(r)
    return {k: tuple(sorted(v, key=lambda r: r.code)) for k, v in kids.items()}


def get(code: str) -> Region | None:
    """The division with this 6-digit code, or None."""
    return _table().get(code)


def is_known(code: str) -> bool:
    """True if the code is in this edition of GB/T 2260."""
    return code in _table()


def is_plausible(code: str) -> bool:
    """True if the code's province exists in this edition: a weaker check for old ID numbers,
    whose county codes may since have been renamed or merged."""
    return len(code) == 6 and code.isdigit() and (code[:2] + "0000") in _table()


def all_regions() -> tuple[Region, ...]:
    """Every division, in code order."""
    return tuple(sorted(_table().values(), key=lambda r: r.code))


def provinces() -> tuple[Region, ...]:
    return tuple(r for r in all_regions() if r.level == "province")


def children(code: str) -> tuple[Region, ...]:
    """The divisions directly under ``code`` (prefectures of a province, counties of a prefecture;
    the counties of a municipality hang directly from the province)."""
    return _children().get(code, ())


def counties_of(code: str) -> tuple[Region, ...]:
    """Every county-level division under a province or prefecture, in code order."""
    out: list[Region] = []
    for c in children(code):
        if c.level == "county":
            out.append(c)
        else:
            out.extend(counties_of(c.code))
    return tuple(sorted(out, key=lambda r: r.code))


def prefecture_of(code: str) -> Region | None:
    """The prefecture a county belongs to, or None where it hangs from the province."""
    r = get(code)
    while r is not None and r.level != "prefecture":
        r = get(r.parent) if r.parent else None
    return r


def full_name(code: str) -> str:
    """Province + prefecture + county name, as written in an address (四川省成都市金牛区).

    Placeholder prefecture rows such as ``省直辖县级行政区划`` are left out.
    """
    parts: list[str] = []
    r = get(code)
    while r is not None:
        if "直辖" not in r.name:
            parts.append(r.name)
        r = get(r.parent) if r.parent else None
    return "".join(reversed(parts))
