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
