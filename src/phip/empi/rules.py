"""Matching rules: versioned JSON (blocking keys, comparators, m/u weights, thresholds).

After HAPI MDM's ``MdmRulesJson`` and OpenCR's ``decisionRules.json``.  The file is validated
when the node starts (:func:`load_rules` raises :class:`RulesError` naming every problem), then
compiled to log2(m/u) weights once and cached.  Scoring is Fellegi–Sunter: the match weight of a
pair is ``log2(prior/(1-prior)) + Σ log2(m_level/u_level)`` over the comparisons that have
evidence; ``auto_link`` and ``review`` thresholds (match-weight units) split auto-link, potential
match (review queue) and new person.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from phip.empi.compare import COMPARATORS, LEVELS, possible_twin
from phip.empi.normalize import Features

DEFAULT_RULES = Path(__file__).parent / "rules" / "default.json"
BLOCKING_KEYS = ("rid", "doc", "name_year", "name_birth", "birth_sex", "birth_area", "family_given", "address",
                 "phone", "record")


class RulesError(ValueError):
    """A rules file that cannot be used (the message lists every problem)."""


@dataclass(slots=True)
class FieldScore:
    field: str
    level: str
    weight: float


@dataclass(slots=True)
class Score:
    weight: float
    fields: list[FieldScore] = field(default_factory=list)
    deterministic: bool = False
    veto: str | None = None  # why an auto-link is not allowed

    @property
    def probability(self) -> float:
        w = max(min(self.weight, 60.0), -60.0)
        return 2**w / (1 + 2**w)

    def as_json(self) -> dict[str, Any]:
        return {"weight": round(self.weight, 3), "probability": round(self.probability, 6),
                "deterministic": self.deterministic, "veto": self.veto,
                "fields": {f.field: {"level": f.level, "weight": round(f.weight, 3)} for f in self.fields}}


@dataclass(slots=True)
class Rules:
    raw: dict[str, Any]
    version: str
    name: str
    prior: float
    auto_link: float
    review: float
    blocking: tuple[str, ...]
    max_block: int
    rid_exact: bool
    veto_rid: bool
    twin_guard: bool
    #: comparison name → weight per level (log2 m/u)
    weights: dict[str, tuple[float, ...]]
    #: a record with a trusted ID number searches its broad keys among records without one (probe_keys)
    id_restricts_blocking: bool = True

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1 - self.prior))

    def score(self, a: Features, b: Features) -> Score:
        """The Fellegi–Sunter score of two records, with the per-field levels and weights."""
        total = self.prior_weight
        fields: list[FieldScore] = []
        for name, ws in self.weights.items():
            lvl = COMPARATORS[name](a, b)
            if lvl is None:
                continue
            total += ws[lvl]
            fields.append(FieldScore(name, LEVELS[name][lvl], ws[lvl]))
        s = Score(total, fields)
        ta, tb = a.trusted_id, b.trusted_id
        if ta and tb:
            if ta == tb and self.rid_exact and _compatible(a, b):
                s.deterministic = True
            elif ta != tb and self.veto_rid:
                s.veto = "different valid resident ID numbers"
        if ta and ta == tb and not _compatible(a, b):
            s.veto = "same ID number but birth date or sex incompatible"
        if self.twin_guard and not s.deterministic and s.veto is None and possible_twin(a, b):
            s.veto = "possible twins: same family name and birth date, different given names"
        return s

    def decision(self, s: Score) -> str:
        """``link`` | ``review`` | ``new``."""
        if s.deterministic:
            return "link"
        if s.weight >= self.auto_link and s.veto is None:
            return "link"
        if s.weight >= self.review:
            return "review"
        return "new"


def _compatible(a: Features, b: Features) -> bool:
    if a.sex and b.sex and a.sex != b.sex:
        return False
    from phip.empi.compare import cmp_birth

    lvl = cmp_birth(a, b)
    return lvl is None or lvl <= 2


#: blocking keys made of demographics alone: their blocks grow with the population
BROAD_KEYS = frozenset({"name_year", "name_birth", "birth_sex", "birth_area", "family_given"})
#: prefix of the copies of the broad keys that records without a trusted ID number also store
ANON = "~"


def blocking_keys(f: Features, keys: tuple[str, ...]) -> list[str]:
    """The blocking keys a record stores in ``empi_key``.  A record without a trusted ID number
    stores its broad (demographic) keys twice: as they are, and under :data:`ANON` — the small
    block that records *with* a trusted number search (see :func:`probe_keys`)."""
    out = _keys(f, keys)
    if not f.trusted_id:
        out += [ANON + k for k in _keys(f, tuple(k for k in keys if k in BROAD_KEYS))]
    return out


def probe_keys(f: Features, keys: tuple[str, ...], restrict: bool = True) -> list[str]:
    """The keys a new record looks its candidates up by.  With a trusted (valid, own) ID number a
    record can only be one person with a record of the same number — found by the number — or
    with a record that has none: a different valid number vetoes an auto-link, and ISO 7064
    MOD 11-2 catches every single-digit typo and adjacent swap, so a mistyped number is never
    valid.  Such a record therefore searches its broad keys among the records without a trusted
    number only: its candidates do not grow with the population.  ``restrict`` False (rules
    ``deterministic.id_restricts_blocking``) searches everyone."""
    if not (restrict and f.trusted_id):
        return _keys(f, keys)
    return _keys(f, tuple(k for k in keys if k not in BROAD_KEYS)) + \
        [ANON + k for k in _keys(f, tuple(k for k in keys if k in BROAD_KEYS))]


def _keys(f: Features, keys: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for k in keys:
        if k == "rid" and f.rid and (f.rid_own or (f.placeholder and f.rid_valid)):
            out.append(f"r:{f.rid}")  # a newborn's placeholder joins its mother's block (phip.empi.newborn)
        elif k == "doc":
            out.extend(f"d:{s}|{v}" for s, v in f.docs)
        elif k == "record":
            out.extend(f"m:{s}|{v}" for s, v in f.records)
        elif k == "name_year" and f.py and f.birth:
            out.append(f"ny:{f.py}|{f.birth[:4]}")
        elif k == "name_birth" and f.py and f.birth:
            out.append(f"nb:{f.py}|{f.birth}")
        elif k == "birth_sex" and f.birth and len(f.birth) == 10:
            out.append(f"bs:{f.birth}|{f.sex or ''}")
        elif k == "birth_area" and f.birth and f.area:
            out.append(f"ba:{f.birth}|{f.area}")
        elif k == "family_given" and f.family and f.given:
            out.append(f"fg:{f.family}|{f.given}")
        elif k == "address" and f.addr:
            out.append(f"a:{f.area or ''}|{f.addr}")
        elif k == "phone":
            out.extend(f"p:{p}" for p in f.phones)
    return list(dict.fromkeys(x[:250] for x in out))


def parse_rules(raw: Any, source: str = "rules") -> Rules:
    """Validate a rules document and compile it; :class:`RulesError` lists every problem."""
    errs: list[str] = []
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: the rules must be a JSON object")
    if raw.get("format") != "phip-empi-rules":
        errs.append('"format" must be "phip-empi-rules"')
    if not isinstance(raw.get("version"), str) or not raw.get("version"):
        errs.append('"version" must be a non-empty string')
    prior = raw.get("prior")
    if not isinstance(prior, int | float) or not 0 < prior < 1:
        errs.append('"prior" must be a probability strictly between 0 and 1')
        prior = 1e-6
    th = raw.get("thresholds") or {}
    auto, rev = th.get("auto_link"), th.get("review")
    if not isinstance(auto, int | float) or not isinstance(rev, int | float):
        errs.append('"thresholds" needs numbers "auto_link" and "review"')
        auto, rev = 0.0, 0.0
    elif rev > auto:
        errs.append('"thresholds.review" must not exceed "thresholds.auto_link"')
    tt = raw.get("trained_thresholds")
    if tt is not None and (not isinstance(tt, dict) or not all(
            isinstance(tt.get(k), int | float) for k in ("auto_link", "review")) or tt["review"] > tt["auto_link"]):
        errs.append('"trained_thresholds" (optional) needs numbers "auto_link" >= "review"')
    blocking = raw.get("blocking")
    if not isinstance(blocking, list) or not blocking:
        errs.append(f'"blocking" must be a non-empty list of {", ".join(BLOCKING_KEYS)}')
        blocking = []
    for b in blocking:
        if b not in BLOCKING_KEYS:
            errs.append(f'unknown blocking key {b!r} (known: {", ".join(BLOCKING_KEYS)})')
    max_block = raw.get("max_block", 200)
    if not isinstance(max_block, int) or max_block < 2:
        errs.append('"max_block" must be an integer >= 2')
        max_block = 200
    det = raw.get("deterministic") or {}
    if not isinstance(det, dict):
        errs.append('"deterministic" must be an object')
        det = {}
    weights: dict[str, tuple[float, ...]] = {}
    comps = raw.get("comparisons")
    if not isinstance(comps, dict) or not comps:
        errs.append('"comparisons" must be an object of comparison name → levels')
        comps = {}
    for name, spec in comps.items():
        if name not in COMPARATORS:
            errs.append(f'unknown comparison {name!r} (known: {", ".join(COMPARATORS)})')
            continue
        levels = (spec or {}).get("levels") if isinstance(spec, dict) else None
        if not isinstance(levels, dict):
            errs.append(f'comparison {name!r} needs "levels"')
            continue
        want = LEVELS[name]
        if set(levels) != set(want):
            errs.append(f"comparison {name!r} must give exactly the levels {', '.join(want)}; got "
                        f"{', '.join(levels)}")
            continue
        ws: list[float] = []
        for lv in want:
            mu = levels[lv]
            m, u = (mu or {}).get("m"), (mu or {}).get("u")
            if not isinstance(m, int | float) or not isinstance(u, int | float) or not 0 < m <= 1 or not 0 < u <= 1:
                errs.append(f"comparison {name!r} level {lv!r}: m and u must be probabilities in (0, 1]")
                ws.append(0.0)
                continue
            ws.append(math.log2(m / u))
        weights[name] = tuple(ws)
    if errs:
        raise RulesError(f"{source}: invalid EMPI rules:\n  - " + "\n  - ".join(errs))
    return Rules(raw=raw, version=str(raw["version"]), name=str(raw.get("name") or ""), prior=float(prior),
                 auto_link=float(auto), review=float(rev), blocking=tuple(blocking), max_block=max_block,
                 rid_exact=bool(det.get("rid_exact", True)), veto_rid=bool(det.get("veto_different_valid_rid", True)),
                 twin_guard=bool(det.get("twin_guard", True)), weights=weights,
                 id_restricts_blocking=bool(det.get("id_restricts_blocking", True)))


def load_rules(path: Path | None = None) -> Rules:
    """Read and validate a rules file (the packaged default when ``path`` is None)."""
    p = path or DEFAULT_RULES
    try:
        raw = orjson.loads(p.read_bytes())
    except FileNotFoundError:
        raise RulesError(f"{p}: EMPI rules file not found") from None
    except orjson.JSONDecodeError as e:
        raise RulesError(f"{p}: not valid JSON: {e}") from None
    return parse_rules(raw, str(p))
