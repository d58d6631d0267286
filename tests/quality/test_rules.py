"""The rules file: shipped rules load; a bad file is refused with the entry named."""

from __future__ import annotations

import orjson
import pytest

from phip.quality import rules as R


def _doc() -> dict:
    return orjson.loads((R.DATA / "rules.json").read_bytes())


def test_shipped_rules_load_with_a_catalogue() -> None:
    rs = R.load()
    assert rs.version and rs.threshold == 0.98
    cat = rs.catalogue
    assert cat["conformance.Patient.id-number"].dimension == "conformance"
    assert cat["completeness.Encounter.period.end"].resource == "Encounter"
    assert cat["timeliness.Condition"].dimension == "timeliness"
    assert cat["uniqueness.Encounter"].dimension == "uniqueness"
    assert {r.dimension for r in cat.values()} == set(R.DIMENSIONS)
    # class A notifiable diseases are data: cholera and plague, 2 hours
    assert rs.f.timeliness.class_a_codes.prefixes == ["A00", "A20"]
    assert rs.f.timeliness.class_a_hours == 2 and rs.f.timeliness.default_hours == 24


def test_unknown_key_is_refused_with_its_place() -> None:
    d = _doc()
    d["completeness"][0]["requird"] = True
    with pytest.raises(R.RulesError, match=r"completeness\.0\.requird"):
        R.parse(orjson.dumps(d))


def test_bad_regex_and_threshold_are_refused() -> None:
    d = _doc()
    d["conformance"]["phone"]["patterns"] = ["^1[3-9"]
    with pytest.raises(R.RulesError, match="regular expression"):
        R.parse(orjson.dumps(d))
    d = _doc()
    d["threshold"] = 1.5
    with pytest.raises(R.RulesError, match="threshold"):
        R.parse(orjson.dumps(d))


def test_duplicate_rule_ids_are_refused() -> None:
    d = _doc()
    d["completeness"].append(dict(d["completeness"][0]))
    with pytest.raises(R.RulesError, match="repeated"):
        R.parse(orjson.dumps(d))


def test_not_json_is_refused() -> None:
    with pytest.raises(R.RulesError, match="not valid JSON"):
        R.parse(b"{", "x.json")


def test_task_policy_is_data() -> None:
    """Findings a resubmission can fix are assigned as Tasks; late uploads are not, unless the
    operator's rules say so; the policy names dimensions only."""
    rs = R.load()
    assert rs.assigned("conformance.Patient.id-number") and rs.assigned("uniqueness.Encounter")
    assert rs.assigned("completeness.Encounter.period.end") and rs.assigned("consistency.Patient.id-sex")
    assert not rs.assigned("timeliness.Encounter") and not rs.assigned("timeliness.Patient")
    d = _doc()
    d["tasks"]["dimensions"].append("timeliness")
    assert R.parse(orjson.dumps(d)).assigned("timeliness.Encounter")
    d = _doc()
    del d["tasks"]  # a rules file of an earlier version: the default policy
    assert R.parse(orjson.dumps(d)).task_dimensions == rs.task_dimensions
    d = _doc()
    d["tasks"]["dimensions"] = ["completeness", "speed"]
    with pytest.raises(R.RulesError, match=r"tasks\.dimensions\.1"):
        R.parse(orjson.dumps(d))
