"""A newborn's birth-hospital record, linked later to the child's own registration.

A birth hospital registers a newborn before it has a name or an ID number: 「母亲姓名之子/之女」
under the mother's ID number (:func:`phip.empi.normalize.placeholder_mother`).  Compared with the
child's later records directly, such a placeholder shares only the birth date and sex — far too
little to link, and rightly so.  But the baby lives with its mother: the child's own records
usually give the mother's phone and the household's address.  So the placeholder is compared *as
seen with its mother's contact data*: the mother is found by the placeholder's ID number (her own
trusted number on her own records), confirmed by the name in the placeholder when there is one,
and her phones and latest address lend the placeholder the household evidence it lacks.  The
ordinary Fellegi–Sunter score of that view against the child's record then decides, with the
ordinary thresholds.

Twins are the danger, and a newborn link is never made when it could be the wrong twin:

- two placeholders under the same mother's number with the same birth date and sex (same-sex
  twins at the birth hospital) → each goes to review, never auto-linked;
- more than one Person qualifying for one placeholder (both twins already registered) → review;
- a Person that holds a record conflicting with the child (a veto: the twin guard, another valid
  ID number) → review.

A newborn link is marked in the score's fields (``newborn: via_mother``), so the review queue
and ``Person.link`` assurance show how it was made.
"""

from __future__ import annotations

from dataclasses import replace

from phip.empi.normalize import Features, pinyin
from phip.empi.rules import FieldScore, Rules, Score

FIELD = "newborn"


def is_placeholder(f: Features) -> bool:
    """A newborn's placeholder record carrying (what looks like) the mother's valid ID number."""
    return bool(f.placeholder and f.rid and f.rid_valid and not f.rid_own and f.birth and len(f.birth) == 10)


def mother_key(f: Features) -> str | None:
    """The blocking key of the mother's own records (``r:`` + her number) for a placeholder."""
    return f"r:{f.rid}" if is_placeholder(f) else None


def mother_view(p: Features, mothers: list[Features]) -> Features | None:
    """The placeholder with its mother's phones and address, or None when the mother is not
    confirmed (no record holds the number as its own, or none bears the placeholder's name)."""
    if not is_placeholder(p):
        return None
    ms = [m for m in mothers if m.trusted_id == p.rid and not m.placeholder]
    if not ms:
        return None
    if p.mother_name:
        want = pinyin(p.mother_name)
        if not any(m.name and (m.name == p.mother_name or (m.py or pinyin(m.name)) == want) for m in ms):
            return None
    phones = list(dict.fromkeys(x for m in ms for x in m.phones))
    latest = max((m for m in ms if m.addr or m.area), key=lambda m: m.updated or "", default=None)
    return replace(p, phones=phones or p.phones,
                   area=latest.area if latest else p.area, addr=latest.addr if latest else p.addr)


def could_be_child(view: Features, c: Features) -> bool:
    """A named record of someone born that day, of that sex, who is not the mother."""
    return bool(not c.placeholder and c.name and c.birth == view.birth and c.sex and c.sex == view.sex
                and c.trusted_id != view.rid)


def twin_placeholders(p: Features, others: list[Features]) -> bool:
    """Another placeholder under the same mother's number, born the same day, of the same sex."""
    return any(o.pid != p.pid and is_placeholder(o) and o.rid == p.rid and o.birth == p.birth and o.sex == p.sex
               for o in others)


def score(rules: Rules, view: Features, child: Features) -> Score:
    """The Fellegi–Sunter score of the mother-view of a placeholder against a child's record."""
    s = rules.score(view, child)
    s.fields.append(FieldScore(FIELD, "via_mother", 0.0))
    return s


def via_mother(s: Score) -> bool:
    return any(f.field == FIELD for f in s.fields)
