"""The mess real platforms receive, as configurable rates, and the functions that make it.

Each defect the generator puts into the output is also written to ``truth/quality_defects.csv``
(record, element, defect, true value, recorded value), except the systematic ones whose truth is a
table of its own: local code lists (``truth/local_codes.csv``) and registrations of one resident at
several institutions (``truth/persons.csv``).  Outdated phones and addresses are not injected: a
record keeps the contact details of the day it was registered, and residents move and change
numbers; the defect row is written when the recorded value differs from the resident's current one
at the end of the run (or when they leave).

Rates are probabilities per record (per Patient registration, per clinical resource, per upload
bundle, per institution for local code lists).  ``DefectRates()`` are the defaults, on;
``DefectRates.none()`` turns every defect off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date
from functools import cache
from random import Random
from typing import Any

from phip.synth.tables import table

# Stable defect codes, as written in truth/quality_defects.csv.
HOMOPHONE = "name_homophone"
TRADITIONAL = "name_traditional"
ID_MISSING = "id_missing"
ID_MISTYPED = "id_mistyped"
NEWBORN_MOTHER_ID = "newborn_mother_id"
NEWBORN_NAME = "newborn_placeholder_name"
DAY_MONTH_SWAPPED = "birthdate_day_month_swapped"
MISSING = "missing"
OUTDATED_PHONE = "outdated_phone"
OUTDATED_ADDRESS = "outdated_address"
DUPLICATE = "duplicate_registration"
LATE_UPLOAD = "late_upload"


@dataclass(frozen=True, slots=True)
class DefectRates:
    """Probabilities of each defect; see the module docstring for what each applies to."""

    name_homophone: float = 0.02
    """A given-name character replaced by a homophone (同音字), per Patient registration."""
    name_traditional: float = 0.01
    """The name written in traditional characters, per registration."""
    id_missing: float = 0.05
    """No ID number recorded, per registration (three times as likely for children)."""
    id_mistyped: float = 0.01
    """One digit changed or two adjacent digits swapped, per registration with an ID number."""
    birthdate_swapped: float = 0.005
    """Day and month swapped in the birth date (when both are 12 or less and differ)."""
    telecom_missing: float = 0.05
    address_missing: float = 0.05
    birthdate_missing: float = 0.003
    duplicate_registration: float = 0.01
    """A second record for the same resident at the same institution, per registration."""
    newborn_under_mother: float = 0.9
    """Share of newborns registered at the birth hospital as 「母亲姓名之子/之女」 under the mother's ID."""
    missing_field: float = 0.02
    """An optional element left out of a clinical resource, per resource."""
    late_upload: float = 0.03
    """An upload bundle (a visit and its resources) sent 8-120 days late, per bundle."""
    local_codes: float = 0.3
    """Share of clinical institutions using a local code list, per domain (diagnosis, lab, drug;
    half this share for sex and ethnicity codes)."""

    @classmethod
    def none(cls) -> DefectRates:
        return cls(**{f.name: 0.0 for f in fields(cls)})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DefectRates:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown defect rates: {', '.join(sorted(unknown))}")
        out = cls(**{k: float(v) for k, v in d.items()})
        for k, v in out.to_dict().items():
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"defect rate {k} must be within 0..1, got {v}")
        return out

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@cache
def _homophones() -> dict[str, tuple[str, ...]]:
    alts: dict[str, set[str]] = {}
    for group in table("names")["homophones"]["groups"]:
        for c in group:
            alts.setdefault(c, set()).update(x for x in group if x != c)
    return {c: tuple(sorted(a)) for c, a in alts.items() if a}


def homophone(rng: Random, given: str) -> str | None:
    """The given name with one character swapped for a homophone, or None if none applies."""
    table_ = _homophones()
    spots = [i for i, c in enumerate(given) if c in table_]
    if not spots:
        return None
    i = rng.choice(spots)
    return given[:i] + rng.choice(table_[given[i]]) + given[i + 1 :]


@cache
def _s2t() -> Any:
    import opencc

    return opencc.OpenCC("s2t")


def traditional(text: str) -> str | None:
    """``text`` in traditional characters, or None if it reads the same."""
    out = str(_s2t().convert(text))
    return out if out != text else None


def mistype_id(rng: Random, number: str) -> str:
    """An identity number with one body digit changed or two adjacent body digits swapped.

    ISO 7064 MOD 11-2 catches every such error, so the result never validates.
    """
    body = list(number[:17])
    for _ in range(20):
        if rng.random() < 0.5:
            i = rng.randrange(17)
            d = rng.choice([x for x in "0123456789" if x != body[i]])
            out = [*body]
            out[i] = d
        else:
            i = rng.randrange(16)
            if body[i] == body[i + 1]:
                continue
            out = [*body]
            out[i], out[i + 1] = out[i + 1], out[i]
        return "".join(out) + number[17]
    i = rng.randrange(17)
    out = [*body]
    out[i] = "0" if body[i] != "0" else "1"
    return "".join(out) + number[17]


def swap_day_month(d: date) -> date | None:
    """The date with day and month swapped, or None when that is not a different valid date."""
    if d.day > 12 or d.day == d.month:
        return None
    return date(d.year, d.day, d.month)
