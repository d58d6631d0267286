from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from phip.empi.rules import DEFAULT_RULES, RulesError, load_rules, parse_rules


def test_default_rules_load() -> None:
    r = load_rules()
    assert r.auto_link > r.review
    assert set(r.weights) >= {"rid", "name", "birth", "sex"}


def test_bad_rules_name_every_problem() -> None:
    raw = orjson.loads(DEFAULT_RULES.read_bytes())
    raw["thresholds"] = {"auto_link": 1, "review": 5}
    raw["blocking"].append("shoe_size")
    raw["comparisons"]["name"]["levels"].pop("pinyin")
    raw["comparisons"]["birth"]["levels"]["exact"]["m"] = 2
    with pytest.raises(RulesError) as e:
        parse_rules(raw, "bad.json")
    msg = str(e.value)
    for part in ("review", "shoe_size", "pinyin", "'exact'"):
        assert part in msg


def test_node_refuses_to_open_with_a_bad_rules_file(tmp_path: Path) -> None:
    from phip.node.node import Node, init_node

    node = init_node(tmp_path / "n", region="510104", name="t")
    node.close()
    (tmp_path / "n" / "empi").mkdir()
    (tmp_path / "n" / "empi" / "rules-v2.json").write_text("{not json")
    with pytest.raises(RulesError, match=r"rules-v2\.json"):
        Node.open(tmp_path / "n")


def test_a_trusted_number_searches_the_broad_blocks_of_records_without_one() -> None:
    from phip.empi.normalize import features
    from phip.empi.rules import ANON, BROAD_KEYS, blocking_keys, probe_keys

    from .builders import rid, zhang_san

    rules = load_rules()
    with_id = features(zhang_san().id("a").idno(rid("510104", "1980-03-04", 123)).build())
    without = features(zhang_san().id("b").build())
    assert with_id.trusted_id and not without.trusted_id
    stored_a, stored_b = blocking_keys(with_id, rules.blocking), blocking_keys(without, rules.blocking)
    assert not any(k.startswith(ANON) for k in stored_a)  # only records without a number store the copies
    assert {k for k in stored_b if k.startswith(ANON)} == {ANON + k for k in stored_b
                                                           if k.split(":")[0] in ("ny", "nb", "bs", "ba", "fg")}
    probe = probe_keys(with_id, rules.blocking)
    assert any(k.startswith("r:") for k in probe)  # the number itself
    assert not any(k.split(":")[0] in ("ny", "nb", "bs", "ba", "fg") for k in probe)  # no population-wide block
    assert set(probe) & set(stored_b)  # ... yet it meets the record without a number
    assert probe_keys(without, rules.blocking) == [k for k in stored_b if not k.startswith(ANON)]
    assert probe_keys(with_id, rules.blocking, restrict=False) == stored_a
    assert {"name_year", "birth_sex", "family_given"} <= BROAD_KEYS
