"""How well the engine finds the defects a synthetic region was given (``phip synth``).

``truth/quality_defects.csv`` lists each injected defect (record, element, defect kind).  The
mapping below says, explicitly, which rules count as finding each kind; a defect is found when
its record has an open finding of one of them.  Kinds that no single-record rule can see are
listed in :data:`OUT_OF_SCOPE` with the reason, and reported apart rather than hidden.  Clean
records are every resource without a truth row; one is a false positive when it has any finding.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from phip.quality.tables import quality_finding, quality_resource

#: defect kind (truth file) → the rules that find it; ``{type}``/``{element}`` from the truth row
DETECTED_BY: dict[str, tuple[str, ...]] = {
    "id_missing": ("completeness.Patient.identifier",),
    "id_mistyped": ("conformance.Patient.id-number",),
    "newborn_mother_id": ("consistency.Patient.id-birthdate", "consistency.Patient.id-sex"),
    "newborn_placeholder_name": ("conformance.Patient.placeholder-name",),
    "birthdate_day_month_swapped": ("consistency.Patient.id-birthdate",),
    "missing": ("completeness.{type}.{element}",),
    "late_upload": ("timeliness.{type}",),
    "duplicate_registration": ("uniqueness.Patient",),
    "name_traditional": ("conformance.Patient.traditional-name",),
    # against the population registry's record of the same resident (same ID number)
    "name_homophone": ("consistency.Patient.registry-name",),
    "outdated_phone": ("consistency.Patient.registry-phone",),
    "outdated_address": ("consistency.Patient.registry-address",),
}
#: kinds found by comparison with the population registry: in scope when the record carries the
#: resident's own valid ID number and the resident is still registered in the region at the end
REGISTRY_KINDS = frozenset({"name_homophone", "outdated_phone", "outdated_address"})
#: defects of a record that leave it without its own valid ID number
NO_OWN_ID = frozenset({"id_missing", "id_mistyped", "newborn_mother_id"})
#: kinds (or kind:type) no rule of a single record can see, and why
OUT_OF_SCOPE: dict[str, str] = {
    "registry:no-own-id": "the record has no valid ID number of its own (missing, mistyped, the mother's) and "
                          "the node has no master index to find the resident's registry record by",
    "registry:not-registered": "the resident left the region (moved out): no active registry record to compare",
    "late_upload:RelatedPerson": "a relative's registration carries no event time of its own (Patients are judged "
                                 "by the late records of their upload)",
    "late_upload:Group": "a household record carries no event time of its own",
    "late_upload:within-limit": "uploaded later than planned but within the rule's time limit (the run's end cut "
                                "the delay short): not late by the rule's definition",
}


@dataclass
class Evaluation:
    defects: int = 0
    in_scope: int = 0
    found: int = 0
    clean: int = 0
    clean_flagged: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind → [total, found]
    out_of_scope: Counter[str] = field(default_factory=Counter)
    fp_rules: Counter[str] = field(default_factory=Counter)
    missed: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.in_scope if self.in_scope else 1.0

    @property
    def fp_rate(self) -> float:
        return self.clean_flagged / self.clean if self.clean else 0.0

    def lines(self) -> list[str]:
        out = [f"injected defects: {self.defects:,}; in scope: {self.in_scope:,}; found: {self.found:,} "
               f"→ recall {self.recall * 100:.2f}%",
               f"clean records: {self.clean:,}; flagged: {self.clean_flagged:,} → false-positive rate "
               f"{self.fp_rate * 100:.3f}%"]
        for k, (n, f) in sorted(self.by_kind.items()):
            out.append(f"  {k:<55} {f:>6,} / {n:<6,} {f / n * 100:6.2f}%")
        for k, n in sorted(self.out_of_scope.items()):
            out.append(f"  out of scope {k:<42} {n:>6,}  ({OUT_OF_SCOPE[k]})")
        if self.fp_rules:
            out.append("  false positives by rule: " + ", ".join(f"{r} {n}" for r, n in self.fp_rules.most_common(8)))
        return out


def _scope(row: dict[str, str], limits: Any, kinds_of_record: set[str] | None = None,
           gone: bool = False, linked: bool = False) -> str | None:
    kind, rtype = row["defect"], row["resource_type"]
    if kind in REGISTRY_KINDS:
        if kinds_of_record and kinds_of_record & NO_OWN_ID and not linked:
            return "registry:no-own-id"
        if gone:
            return "registry:not-registered"
        return None
    if kind in OUT_OF_SCOPE:
        return kind
    if kind == "late_upload" and row["true_value"] and row["recorded_value"]:
        try:
            delay = (datetime.fromisoformat(row["recorded_value"]) - datetime.fromisoformat(row["true_value"]))
        except ValueError:
            delay = None
        if delay is not None and delay.total_seconds() <= limits(rtype) * 3600:
            return "late_upload:within-limit"
    if f"{kind}:{rtype}" in OUT_OF_SCOPE:
        return f"{kind}:{rtype}"
    return None


def evaluate(store: Any, region: Path, rules: Any, linked: bool = False) -> Evaluation:
    """Compare the findings in ``store`` with ``region/truth/quality_defects.csv`` (``linked``: the
    engine compares records without their own ID number through the master index)."""
    t = rules.f.timeliness

    def limit(rtype: str) -> float:
        return float(t.hours.get(rtype, t.default_hours))

    truth: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    with (Path(region) / "truth" / "quality_defects.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            truth[(row["resource_type"], row["resource_id"])].append(row)
    gone_people: set[str] = set()
    person_of: dict[str, str] = {}
    people = Path(region) / "truth" / "people.csv"
    if people.exists():
        with people.open(encoding="utf-8") as f:
            gone_people = {r["person_id"] for r in csv.DictReader(f) if r.get("end_reason") == "moved_out"}
        with (Path(region) / "truth" / "persons.csv").open(encoding="utf-8") as f:
            person_of = {r["resource_id"]: r["person_id"] for r in csv.DictReader(f) if r["resource_type"] == "Patient"}
    rules_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    with store.read_conn() as conn:
        qf = quality_finding
        for rtype, rid, rule in conn.execute(sa.select(qf.c.rtype, qf.c.rid, qf.c.rule).where(qf.c.status == "open")):
            rules_of[(rtype, rid)].add(rule)
        checked = conn.execute(sa.select(quality_resource.c.rtype, quality_resource.c.rid)).all()
    ev = Evaluation()
    for key, rows in truth.items():
        got = rules_of.get(key, set())
        kinds = {x["defect"] for x in rows}
        gone = person_of.get(key[1]) in gone_people
        for row in rows:
            ev.defects += 1
            scope = _scope(row, limit, kinds, gone, linked)
            if scope is not None:
                ev.out_of_scope[scope] += 1
                continue
            ev.in_scope += 1
            wanted = {r.format(type=row["resource_type"], element=row["element"])
                      for r in DETECTED_BY.get(row["defect"], ())}
            label = f"{row['defect']} {row['resource_type']}.{row['element']}"
            stat = ev.by_kind.setdefault(label, [0, 0])
            stat[0] += 1
            if got & wanted:
                ev.found += 1
                stat[1] += 1
            else:
                ev.missed.append((row["resource_type"], row["resource_id"], row["defect"], row["element"]))
    for rtype, rid in checked:
        if (rtype, rid) in truth:
            continue
        ev.clean += 1
        got = rules_of.get((rtype, rid))
        if got:
            ev.clean_flagged += 1
            ev.fp_rules.update(got)
    return ev
