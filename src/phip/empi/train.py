"""``phip empi train``: m/u weights estimated by Splink (DuckDB backend) on the node's own records.

The records' stored features (``empi_record``) become a DataFrame; each of phip's comparisons is
given to Splink as SQL levels that mirror :mod:`phip.empi.compare` level by level, so the trained
m and u probabilities drop straight into phip's rules: u by random sampling, m by expectation
maximisation (two sessions, blocked on birth date and on the pinyin name, so each comparison is
estimated in one of them), the prior from deterministic rules.  The result is written as the
next versioned rules file of the node (``DIR/empi/rules-v<N>.json``, Splink's own model next to
it) and becomes active when the node next opens.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from phip.empi import tables as T
from phip.empi.compare import LEVELS
from phip.empi.rules import Rules, parse_rules

_JW = "jaro_winkler_similarity"


def _tri(col: str) -> str:
    """DuckDB: the distinct character trigrams of a column (as :func:`phip.empi.compare.trigram_jaccard`)."""
    return f"list_distinct(list_transform(range(1, length({col}) - 1), lambda i: substr({col}, i::INTEGER, 3)))"


SPLINK_LEVELS: dict[str, tuple[str, list[str]]] = {
    # comparison: (null condition, conditions of phip's levels in order; the last is ELSE)
    "rid": ("rid_l IS NULL OR rid_r IS NULL", [
        "rid_l = rid_r",
        "length(rid_l) = length(rid_r) AND damerau_levenshtein(rid_l, rid_r) <= 1",
        "rid_valid_l AND rid_valid_r",
        "ELSE"]),
    "name": ("name_l IS NULL OR name_r IS NULL", [
        "name_l = name_r",
        "py_l = py_r",
        f"{_JW}(py_l, py_r) >= 0.92 OR (family_l = family_r AND {_JW}(given_l, given_r) >= 0.9) OR "
        f"(given_l = given_r AND {_JW}(family_l, family_r) >= 0.9) OR "
        f"({_JW}(family_l, given_r) >= 0.9 AND {_JW}(given_l, family_r) >= 0.9)",
        "family_l = family_r OR given_l = given_r OR family_l = given_r OR given_l = family_r OR "
        f"greatest({_JW}(family_l, family_r), {_JW}(given_l, given_r), {_JW}(family_l, given_r), "
        f"{_JW}(given_l, family_r)) >= 0.9",
        "ELSE"]),
    "birth": ("birth_l IS NULL OR birth_r IS NULL", [
        "birth_l = birth_r",
        "substr(birth_l, 1, 4) = substr(birth_r, 1, 4) AND substr(birth_l, 6, 2) = substr(birth_r, 9, 2) "
        "AND substr(birth_l, 9, 2) = substr(birth_r, 6, 2)",
        "abs(date_diff('day', try_cast(birth_l AS DATE), try_cast(birth_r AS DATE))) <= 1 OR "
        "damerau_levenshtein(birth_l, birth_r) <= 1",
        "substr(birth_l, 1, 4) = substr(birth_r, 1, 4)",
        "ELSE"]),
    "sex": ("sex_l IS NULL OR sex_r IS NULL", ["sex_l = sex_r", "ELSE"]),
    "phone": ("phone_l IS NULL OR phone_r IS NULL", ["phone_l = phone_r", "ELSE"]),
    "address": ("(area_l IS NULL AND addr_l IS NULL) OR (area_r IS NULL AND addr_r IS NULL)", [
        "addr_l = addr_r AND (area_l = area_r OR area_l IS NULL OR area_r IS NULL)",
        f"addr_l = addr_r OR {_JW}(addr_l, addr_r) >= 0.9 OR "
        f"len(list_intersect({_tri('addr_l')}, {_tri('addr_r')}))::DOUBLE / "
        f"greatest(len(list_distinct(list_concat({_tri('addr_l')}, {_tri('addr_r')}))), 1) >= 0.6",
        "area_l = area_r",
        "ELSE"]),
    "doc": ("doc_l IS NULL OR doc_r IS NULL OR split_part(doc_l, '|', 1) <> split_part(doc_r, '|', 1)", [
        "doc_l = doc_r",
        "damerau_levenshtein(doc_l, doc_r) <= 1",
        "ELSE"]),
}


class TrainError(RuntimeError):
    pass


def records_frame(conn: sa.Connection, codec: Any = None) -> Any:
    """The indexed records as a DataFrame (``codec``: the store's, to open sealed features)."""
    import pandas as pd

    from phip.empi.sealed import open_features

    rows: list[dict[str, Any]] = []
    for pid, fj in conn.execute(sa.select(T.record.c.patient_id, T.record.c.features)):
        f = open_features(codec, pid, fj)
        rows.append({
            "unique_id": pid, "name": f.name, "py": f.py, "family": f.family, "given": f.given,
            "birth": f.birth if f.birth and len(f.birth) == 10 else None, "sex": f.sex,
            "phone": f.phones[0] if f.phones else None, "area": f.area, "addr": f.addr,
            "rid": f.rid if f.rid and f.rid_own else None, "rid_valid": bool(f.rid_valid),
            "doc": f"{f.docs[0][0]}|{f.docs[0][1]}" if f.docs else None,
        })
    return pd.DataFrame(rows)


def _comparisons(names: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        null, levels = SPLINK_LEVELS[name]
        cl: list[dict[str, Any]] = [{"sql_condition": null, "label_for_charts": "null", "is_null_level": True}]
        for label, cond in zip(LEVELS[name], levels, strict=True):
            cl.append({"sql_condition": cond, "label_for_charts": label})
        out.append({"output_column_name": name, "comparison_levels": cl})
    return out


def train(conn: sa.Connection, base: Rules, *, max_pairs: float = 2e6, seed: int = 42,
          log: Any = print, codec: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Estimate m/u on the node's records; returns (new rules JSON, Splink model JSON)."""
    import logging

    from splink import Linker, SettingsCreator, block_on
    from splink.backends.duckdb import DuckDBAPI

    logging.getLogger("splink").setLevel(logging.WARNING)
    df = records_frame(conn, codec)
    if len(df) < 100:
        raise TrainError(f"only {len(df)} indexed records: training needs at least 100 (import Patients first)")
    names = [n for n in base.weights if df[_col(n)].notna().sum() > 0]
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=_comparisons(names),
        blocking_rules_to_generate_predictions=[block_on("birth"), block_on("py")],
        probability_two_random_records_match=base.prior,
        retain_matching_columns=False,
    )
    db = DuckDBAPI()
    linker = Linker(db.register(df), settings)
    deterministic = ["l.rid = r.rid", "l.py = r.py AND l.birth = r.birth"]
    if "doc" in names:
        deterministic.append("l.doc = r.doc")
    try:
        linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.8)
    except Exception as e:  # pragma: no cover - depends on the data
        log(f"prior kept at {base.prior}: {e}")
    log(f"estimating u on up to {max_pairs:,.0f} random pairs of {len(df):,} records")
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    for rule in (block_on("birth"), block_on("py")):
        log(f"estimating m by EM, blocked on {rule.get_blocking_rule('duckdb').blocking_rule_sql}")
        linker.training.estimate_parameters_using_expectation_maximisation(rule, max_pairs=max_pairs)
    model = linker.misc.save_model_to_json()
    return merge_model(base, model), model


def _col(name: str) -> str:
    return {"address": "addr"}.get(name, name)


def merge_model(base: Rules, model: dict[str, Any]) -> dict[str, Any]:
    """phip rules with the m/u Splink estimated (levels Splink could not estimate keep theirs)."""
    raw = copy.deepcopy(base.raw)
    prior = model.get("probability_two_random_records_match")
    if isinstance(prior, int | float) and 0 < prior < 1:
        raw["prior"] = float(prior)  # thresholds stay posterior log-odds (match weight with the prior)
    if isinstance(raw.get("trained_thresholds"), dict):  # calibrated weights may use a lower auto-link bar
        raw["thresholds"] = dict(raw["trained_thresholds"])
    for comp in model.get("comparisons") or []:
        name = comp.get("output_column_name")
        if name not in raw["comparisons"]:
            continue
        levels = [lv for lv in comp.get("comparison_levels") or [] if not lv.get("is_null_level")]
        for label, lv in zip(LEVELS[name], levels, strict=False):
            dst = raw["comparisons"][name]["levels"][label]
            m, u = lv.get("m_probability"), lv.get("u_probability")
            if isinstance(m, int | float) and 0 < m <= 1:
                dst["m"] = max(float(m), 1e-6)
            if isinstance(u, int | float) and 0 < u <= 1:
                dst["u"] = max(float(u), 1e-9)
    return raw


def next_rules_path(folder: Path) -> Path:
    import re

    folder.mkdir(parents=True, exist_ok=True)
    nums = [int(m.group(1)) for p in folder.iterdir() if (m := re.match(r"^rules-v(\d+)\.json$", p.name))]
    return folder / f"rules-v{max(nums, default=0) + 1}.json"


def write_rules(folder: Path, raw: dict[str, Any], model: dict[str, Any], note: str) -> Path:
    path = next_rules_path(folder)
    raw = dict(raw)
    raw["version"] = path.stem.split("-v")[1]
    raw["name"] = note
    parse_rules(raw, str(path))  # never write a file the node could not open
    path.write_bytes(orjson.dumps(raw, option=orjson.OPT_INDENT_2))
    path.with_suffix(".splink.json").write_bytes(orjson.dumps(model, option=orjson.OPT_INDENT_2))
    return path
