"""Registry capability: what its hooks cost a Patient write, and how fast its own requests are.

In one run, on one fresh node (``--backend sqlite|postgresql``), at the repository level (no HTTP):

1. Patient create latency with the registry's hooks (validation + population index) against the
   same node with the registry's hook functions taken off (baseline, same run), alternating;
2. population counts (``by=county,sex,age``) over ``--residents`` index rows, against a plain
   ``count(*)`` of the same table (baseline), and at a tenth of the size (growth);
3. birth registration, death registration, health-card issue and verify latency.

    python bench/bench_registry.py [--backend sqlite] [--creates 1000] [--residents 200000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import WORK, create_node, describe, drop_node, loadavg, save, summary_ms


def _registry_fns(node: Any) -> set[Any]:
    from phip.registry import validate

    svc = node.ext["registry"]
    return {validate.before_write, svc.index.after_write}


def _toggle(node: Any, saved: dict[Any, list[Any]] | None) -> dict[Any, list[Any]]:
    """Take the registry's per-write hooks off (returns what was there) or put them back."""
    hooks = node.store.hooks._fns
    if saved is not None:
        for p, fns in saved.items():
            hooks[p][:] = fns
        return {}
    out = {p: list(fns) for p, fns in hooks.items()}
    mine = _registry_fns(node)
    for fns in hooks.values():
        fns[:] = [(f, o) for f, o in fns if f not in mine]
    return out


def _fmt(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.2f} ms  p95 {s['p95']:.2f} ms  (n={s['n']})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    ap.add_argument("--creates", type=int, default=1000)
    ap.add_argument("--residents", type=int, default=200_000)
    args = ap.parse_args()
    from tests.registry.builders import birth_bundle, hospital, id_number, patient, person_for, registry_org

    data = WORK / f"registry-{args.backend}"
    node = create_node(args.backend, data)
    repo = node.store.repository()
    print(describe())
    print(f"load average {loadavg():.1f} (the machine is shared)")
    repo.update("Organization", "wjj", registry_org("wjj", "510104") | {"id": "wjj"})
    repo.update("Organization", "h1", hospital("h1", "510104") | {"id": "h1"})
    rng = random.Random(5)

    # 1. Patient creates, with and without the registry's hooks, alternating
    on: list[float] = []
    off: list[float] = []
    for i in range(args.creates * 2):
        with_hooks = i % 2 == 0
        saved = None if with_hooks else _toggle(node, None)
        born = f"{rng.randint(1930, 2024)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
        doc = patient("张三丰", rng.choice(["male", "female"]), born, "510104", "wjj",
                      idn=id_number("510104", born, rng.randint(1, 999)))
        t = time.perf_counter()
        repo.create("Patient", doc)
        (on if with_hooks else off).append(time.perf_counter() - t)
        if saved is not None:
            _toggle(node, saved)
    s_on, s_off = summary_ms(on), summary_ms(off)
    print(f"Patient create, registry hooks on : {_fmt(s_on)}")
    print(f"Patient create, registry hooks off: {_fmt(s_off)}   ratio p50 {s_on['p50'] / s_off['p50']:.2f}x")

    # 2. population counts over a large index
    import sqlalchemy as sa

    from phip.registry.population import parse_query, population
    from phip.registry.schema import resident

    counties = ["510104", "510105", "510106", "510107", "510108", "510112", "510181", "510182"]
    results: dict[str, Any] = {"creates_on": s_on, "creates_off": s_off}
    for size in (args.residents // 10, args.residents):
        with node.store.engine.begin() as conn:
            conn.execute(resident.delete())
            rows = []
            for k in range(size):
                y = rng.randint(1925, 2025)
                rows.append({"patient_id": f"bench-{k}", "region": rng.choice(counties) + f"{rng.randint(1, 30):03d}",
                             "sex": rng.choice(["male", "female"]), "birth": y * 10000 + rng.randint(1, 12) * 100 + 1,
                             "alive": rng.random() > 0.02, "active": True, "organization": "wjj"})
                if len(rows) == 20000:
                    conn.execute(resident.insert(), rows)
                    rows = []
            if rows:
                conn.execute(resident.insert(), rows)
        q = parse_query("5101", "county,sex,age", None, "2025-12-31")
        qs, base = [], []
        for _ in range(7):
            t = time.perf_counter()
            out = population(node.store, q)
            qs.append(time.perf_counter() - t)
            t = time.perf_counter()
            with node.store.read_conn() as conn:
                conn.execute(sa.select(sa.func.count()).select_from(resident)).scalar_one()
            base.append(time.perf_counter() - t)
        sq, sb = summary_ms(qs), summary_ms(base)
        print(f"population by county,sex,age over {size:,} residents: {_fmt(sq)}  ({len(out['cells'])} cells); "
              f"baseline count(*): p50 {sb['p50']:.2f} ms, ratio {sq['p50'] / max(sb['p50'], 1e-6):.1f}x")
        results[f"population_{size}"] = sq
        results[f"count_{size}"] = sb
    node.ext["registry"].index.rebuild()

    # 3. registry events and the health code
    mothers = []
    for k in range(50):
        born = f"199{k % 10}-03-0{1 + k % 9}"
        mothers.append(repo.create("Patient", patient(f"王芳{k}", "female", born, "510104", "wjj",
                                                      idn=id_number("510104", born, 400 + k))).row.id)
    births, deaths, issues, verifies = [], [], [], []
    from phip.security.tokens import Principal

    who = Principal("bench", "admin")
    reg = node.ext["registry"].registry
    cards = node.ext["registry"].cards
    for k, m in enumerate(mothers):
        t = time.perf_counter()
        status, _ = reg.register_birth(repo, birth_bundle(m, cert=f"B{k:06d}", born=date(2025, 2, 1).isoformat()),
                                       who)
        births.append(time.perf_counter() - t)
        assert status == 201
        persons = repo.find("Person", f"link=Patient/{m}", limit=1)
        person = persons[0].id if persons else repo.create("Person", person_for(m)).row.id
        t = time.perf_counter()
        card = cards.issue(repo, person, "bench")
        issues.append(time.perf_counter() - t)
        t = time.perf_counter()
        cards.verify(repo, card["token"])
        verifies.append(time.perf_counter() - t)
    for m in mothers[:25]:
        t = time.perf_counter()
        reg.register_death(repo, m, {"resourceType": "Parameters",
                                     "parameter": [{"name": "date", "valueDate": "2025-06-01"}]}, who)
        deaths.append(time.perf_counter() - t)
    for name, xs in (("birth registration", births), ("death registration", deaths),
                     ("health card issue", issues), ("health card verify", verifies)):
        s = summary_ms(xs)
        results[name] = s
        print(f"{name:20s}: {_fmt(s)}")
    save("bench_registry", {"backend": args.backend, **results})
    node.close()
    drop_node(data)


if __name__ == "__main__":
    main()
