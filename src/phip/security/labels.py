"""Security labels assigned at write by rules kept as data (``data/label_rules.json``).

A rule names a sensitivity label (HL7 v3 ActCode: PSY mental health, ETH substance abuse,
HIV, STD, SEX reproductive health), the token search parameters it looks at per resource
type (``Condition.code``, ``Encounter.reason-code``, ``MedicationRequest.code``…), the code
systems and the code ranges (compared on the code's leading characters, inclusive:
``["B20", "B24"]`` matches ``B20`` to ``B24.9``).  A labelled resource also gets the
confidentiality code ``R`` (restricted).  Labels a sender set are kept.

The codes a rule sees are those the search index extracts (same FHIRPath), so a label and a
search never disagree.  Writes through the API are labelled by a BEFORE_WRITE hook; after
``phip import`` the sensitive resources are found through the index and labelled in place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources as ir
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from phip.store import schema as S

TOP = "\U0010ffff"


@dataclass(frozen=True, slots=True)
class Rule:
    label: str
    ranges: tuple[tuple[str, str], ...]
    systems: frozenset[str]
    params: dict[str, tuple[str, ...]]  # resource type → token params

    def matches(self, system: str | None, code: str | None) -> bool:
        if not code or system not in self.systems:
            return False
        c = code.upper()
        return any(lo <= c[: len(lo)] and c[: len(hi)] <= hi for lo, hi in self.ranges)


class LabelRules:
    def __init__(self, data: dict[str, Any]) -> None:
        self.sensitivity_system: str = data["sensitivity_system"]
        self.confidentiality: dict[str, str] = data["confidentiality"]
        self.displays: dict[str, str] = data.get("labels", {})
        systems = data.get("systems", {})
        params = data.get("params", {})
        rules = []
        for r in data["rules"]:
            sys_names = r["systems"] if isinstance(r["systems"], list) else [r["systems"]]
            sysset = frozenset(s for name in sys_names for s in systems.get(name, [name]))
            p = params[r["params"]] if isinstance(r["params"], str) else r["params"]
            rules.append(Rule(r["label"], tuple((lo.upper(), hi.upper()) for lo, hi in r["ranges"]), sysset,
                              {t: tuple(v) for t, v in p.items()}))
        self.rules = tuple(rules)

    @classmethod
    def load(cls, path: str | None = None) -> LabelRules:
        if path:
            text = Path(path).read_text()
        else:
            text = ir.files("phip.security").joinpath("data/label_rules.json").read_text()
        try:
            return cls(json.loads(text))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"security label rules {path or '(built-in)'} are not valid: {e}") from None

    @cached_property
    def types(self) -> frozenset[str]:
        return frozenset(t for r in self.rules for t in r.params)

    @cached_property
    def params(self) -> dict[str, frozenset[str]]:
        """resource type → every token parameter a rule looks at"""
        out: dict[str, set[str]] = {}
        for r in self.rules:
            for t, ps in r.params.items():
                out.setdefault(t, set()).update(ps)
        return {t: frozenset(ps) for t, ps in out.items()}

    @cached_property
    def needles(self) -> tuple[bytes, ...] | None:
        """Every code system a rule names, as it appears in a resource's JSON text: a resource whose
        text holds none of them has no coding a rule could match.  None (no such shortcut) when a
        system has a character JSON would escape."""
        systems = sorted({s for r in self.rules for s in r.systems})
        texts = [orjson.dumps(s)[1:-1] for s in systems]
        if any(t != s.encode() for t, s in zip(texts, systems, strict=True)):
            return None
        return tuple(texts)

    def labels_for(self, resource: dict[str, Any]) -> list[str]:
        rtype = resource.get("resourceType", "")
        if rtype not in self.types:
            return []
        needles = self.needles
        if needles is not None:
            # most records carry no code of a labelled system: ~2 µs to see that, against ~20 µs to
            # extract the rules' search parameters
            try:
                text = orjson.dumps(resource)
            except orjson.JSONEncodeError:  # (not JSON as it stands: the rules' own look decides)
                text = None
            if text is not None and not any(n in text for n in needles):
                return []
        from phip.fhir.search.extract import index_params

        tokens = index_params(resource, self.params[rtype]).tokens
        out: list[str] = []
        for rule in self.rules:
            params = rule.params.get(rtype)
            if not params or rule.label in out:
                continue
            for p, _grp, system, code, _text in tokens:
                if p in params and rule.matches(system, code):
                    out.append(rule.label)
                    break
        return out

    def apply(self, resource: dict[str, Any]) -> bool:
        """Add the labels the rules give ``resource`` (in place); True when something was added."""
        labels = self.labels_for(resource)
        if not labels:
            return False
        meta = resource.setdefault("meta", {})
        sec = list(meta.get("security") or [])
        have = {(c.get("system"), c.get("code")) for c in sec if isinstance(c, dict)}
        added = False
        for lab in labels:
            if (self.sensitivity_system, lab) not in have:
                c = {"system": self.sensitivity_system, "code": lab}
                if lab in self.displays:
                    c["display"] = self.displays[lab]
                sec.append(c)
                added = True
        conf = self.confidentiality
        csys = conf["system"]
        levels = "ULMNRV"
        current = [c for c in sec if isinstance(c, dict) and c.get("system") == csys]
        if not current or all(levels.find(c.get("code", "")) < levels.find(conf["code"]) for c in current):
            sec = [c for c in sec if not (isinstance(c, dict) and c.get("system") == csys)] + [dict(conf)]
            added = True
        meta["security"] = sec
        return added

    def candidates(self, conn: Any) -> list[tuple[str, str]]:
        """(type, id) of stored resources a rule matches, found through the token index."""
        t = S.idx_token
        r = S.resources
        out: set[tuple[str, str]] = set()
        for rule in self.rules:
            keys = [k for rt, ps in rule.params.items() for p in ps for k in S.param_rows(rt, p)]
            ranges = [sa.and_(t.c.code >= lo, t.c.code <= hi + TOP) for lo, hi in rule.ranges]
            q = (sa.select(r.c.type, r.c.id).select_from(t.join(r, r.c.rid == t.c.rid))
                 .where(S.rows_of(t, keys, t.c.system.in_(sorted(rule.systems)), sa.or_(*ranges)),
                        r.c.deleted == sa.false()).distinct())
            out.update((a, b) for a, b in conn.execute(q))
        return sorted(out)
