"""What access control costs: reads by id and searches as admin (the baseline: no access scope)
and as a clinician whose treating relationships are SQL sets, measured in the same run.

    python bench/bench_security.py [--resources 20000] [--seed 1] [--n 300] [--data DIR]

Uses the synthetic load of ``gen.py`` (imported into a SQLite node under /tmp/phip-bench, reused
when present).  Prints p50/p95 per case and the ratio to the admin baseline; saves
``bench/out/security.json``.  Reads by id go through the HTTP application in process (middleware,
route guard, read fast path), so they include the access check and its decision cache.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def timed(fn: Any, items: list[Any]) -> list[float]:
    out = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--resources", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=300, help="requests per case")
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args()

    import warnings

    import sqlalchemy as sa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient

    from phip.api.app import create_app
    from phip.store import schema as S

    data, created = common.ensure_loaded("sqlite", args.resources, args.seed, args.data)
    if args.data is not None:
        args.resources = int((common.loaded_info(data) or {}).get("resources", args.resources))
    node = common.open_node(data)
    store = node.store
    # the organization with the most encounters: its clinician's treating relationships
    x = S.idx_ref
    with store.engine.connect() as conn:
        org = conn.execute(sa.select(x.c.target_id, sa.func.count()).where(
            x.c.param == S.param_key("Encounter", "service-provider")).group_by(x.c.target_id)
            .order_by(sa.func.count().desc()).limit(1)).first()[0]
        n_pat = conn.execute(sa.select(sa.func.count()).select_from(S.resources).where(
            S.resources.c.type == "Patient")).scalar_one()
    admin = node.tokens.issue("admin", "bench")
    doc = node.tokens.issue("clinician", "bench-dr", org=f"Organization/{org}")
    results: dict[str, Any] = {"machine": common.machine(), "resources": args.resources, "patients": n_pat,
                               "org": org}
    with TestClient(create_app(node)) as client:
        ha = {"Authorization": f"Bearer {admin}"}
        hd = {"Authorization": f"Bearer {doc}"}
        # observations the clinician may see (of patients treated at the organization)
        seen = client.get("/fhir/Observation?_count=1000&_elements=id,subject", headers=hd).json()
        visible = [e["resource"]["id"] for e in seen.get("entry", [])][: args.n]
        patients = [e["resource"]["subject"]["reference"].split("/")[1] for e in seen.get("entry", [])]
        pats = [p for p, _n in Counter(patients).most_common(args.n // 5 or 1)]
        total_admin = client.get("/fhir/Observation?_summary=count", headers=ha).json()["total"]
        total_doc = client.get("/fhir/Observation?_summary=count", headers=hd).json()["total"]
        print(f"{args.resources:,} resources, {n_pat:,} patients; clinician at Organization/{org} sees "
              f"{total_doc:,} of {total_admin:,} Observations")
        if not visible:
            raise SystemExit("the clinician sees no Observation; nothing to measure")

        def read(h: dict[str, str]) -> Any:
            def f(i: str) -> None:
                r = client.get(f"/fhir/Observation/{i}", headers=h)
                assert r.status_code == 200, r.text

            return f

        cases: list[tuple[str, Any, list[Any]]] = [
            ("read by id, admin (baseline)", read(ha), visible),
            ("read by id, clinician, first read", read(hd), visible),
            ("read by id, clinician, cached decision", read(hd), visible),
        ]
        for label, fn, items in cases:
            results[label] = common.summary_ms(timed(fn, items))

        def search(h: dict[str, str], q: str) -> Any:
            def f(p: str) -> None:
                r = client.get(q.format(p=p), headers=h)
                assert r.status_code == 200, r.text

            return f

        for label, q in (("search Observation?patient=X", "/fhir/Observation?patient={p}&_count=50"),
                         ("search Observation?code (broad), _total", "/fhir/Observation?code=8867-4&_count=50"
                                                                     "&_total=accurate&x={p}")):
            items = pats if "patient" in q else pats[:20]
            q2 = q.replace("&x={p}", "") if "x={p}" in q else q
            results[f"{label}, admin (baseline)"] = common.summary_ms(timed(search(ha, q2), items))
            results[f"{label}, clinician"] = common.summary_ms(timed(search(hd, q2), items))
    node.close()
    if created:
        common.drop_node(data)
    base = {"read": results["read by id, admin (baseline)"]["p50"]}
    print(f"{'case':58} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'ratio p50':>10}")
    for k, v in results.items():
        if not isinstance(v, dict) or "p50" not in v:
            continue
        ref = base["read"] if k.startswith("read") else results[k.rsplit(",", 1)[0] + ", admin (baseline)"]["p50"]
        print(f"{k:58} {v['n']:>5} {v['p50']:>8.2f} {v['p95']:>8.2f} {v['p50'] / ref:>9.2f}x")
    print("(the machine is shared with other agents: absolute figures are noisy; compare ratios)")
    print(f"saved {common.save('security.json', results)}")


if __name__ == "__main__":
    main()
