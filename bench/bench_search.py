"""Search latency on a loaded node: p50/p95/p99 per query, in-process and over HTTP.

Queries (parameters drawn at random, per run, from resources actually stored):

- ``Patient?identifier=urn:oid:2.16.156.10011.1.3|<id number>``
- ``Patient?name=<full name>`` and ``Patient?name=<family name>`` (broad: 王 alone is ~7% of people)
- ``Observation?subject=Patient/<id>&code=http://loinc.org|<code>&date=ge<date>``
- ``Encounter?patient=Patient/<id>&_sort=-date&_count=20``
- ``Observation?patient=Patient/<id>&_include=Observation:encounter`` (one ``_include``)

Each query runs ``--runs`` times (default 200; fewer, but at least 10, once ``--budget`` seconds
are spent on it) after a short warm-up: first in-process through
``Repository.search`` (parse + SQL + rows), then over HTTP against ``phip serve --workers 1`` with
one sequential client (so the latency is the server's, plus a little client time).  The target
is p95 < 50 ms at 1M resources.  With ``--explain`` the SQL each query sends and its plan
(SQLite ``EXPLAIN QUERY PLAN`` / PostgreSQL ``EXPLAIN ANALYZE``) go to
``bench/out/search_plans_<backend>.txt``.

Run: ``python bench/bench_search.py --data DIR`` (a node kept by ``bench_import.py --keep DIR``) or
``python bench/bench_search.py --backend sqlite --resources 100000``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import gen

TARGET_P95_MS = 50.0
Query = tuple[str, list[tuple[str, str]]]


def builders(patients: list[dict[str, Any]], observations: list[dict[str, Any]],
             rng: random.Random) -> dict[str, Callable[[], Query]]:
    def ident() -> Query:
        p = rng.choice(patients)
        v = next(i["value"] for i in p["identifier"] if i["system"] == gen.ID_SYSTEM)
        return "Patient", [("identifier", f"{gen.ID_SYSTEM}|{v}")]

    def name_full() -> Query:
        return "Patient", [("name", rng.choice(patients)["name"][0]["text"])]

    def name_family() -> Query:
        return "Patient", [("name", rng.choice(patients)["name"][0]["family"])]

    def obs() -> Query:
        o = rng.choice(observations)
        day = date.fromisoformat(o["effectiveDateTime"][:10]) - timedelta(days=rng.randrange(0, 365))
        code = o["code"]["coding"][0]["code"]
        return "Observation", [("subject", o["subject"]["reference"]), ("code", f"{gen.LOINC}|{code}"),
                               ("date", f"ge{day.isoformat()}")]

    def enc() -> Query:
        return "Encounter", [("patient", f"Patient/{rng.choice(patients)['id']}"), ("_sort", "-date"),
                             ("_count", "20")]

    def include() -> Query:
        return "Observation", [("patient", f"Patient/{rng.choice(patients)['id']}"),
                               ("_include", "Observation:encounter")]

    return {
        "Patient?identifier=": ident,
        "Patient?name=<full name>": name_full,
        "Patient?name=<family>": name_family,
        "Observation?subject&code&date=ge": obs,
        "Encounter?patient&_sort=-date&_count=20": enc,
        "Observation?patient&_include=Observation:encounter": include,
    }


def run_inprocess(store: Any, build: Callable[[], Query], runs: int, warmup: int,
                  budget: float) -> dict[str, Any]:
    repo = store.repository()
    lat: list[float] = []
    counts: list[int] = []
    deadline = time.monotonic() + budget
    for i in range(warmup + runs):
        if time.monotonic() > deadline and len(lat) >= 10:
            break
        rtype, params = build()
        t = time.perf_counter()
        req = repo.parser().parse(rtype, params)
        res = repo.search(req)
        dt = time.perf_counter() - t
        if i >= warmup:
            lat.append(dt)
            counts.append(len(res.rows) + len(res.included))
    st = common.summary_ms(lat)
    st["mean_results"] = sum(counts) / len(counts)
    st["empty"] = sum(1 for c in counts if c == 0)
    return st


def run_http(base: str, token: str, build: Callable[[], Query], runs: int, warmup: int,
             budget: float) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    counts: list[int] = []
    errors = 0
    deadline = time.monotonic() + budget
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        for i in range(warmup + runs):
            if time.monotonic() > deadline and len(lat) >= 10:
                break
            rtype, params = build()
            url = f"/fhir/{rtype}?{urlencode(params)}"
            t = time.perf_counter()
            r = client.get(url)
            dt = time.perf_counter() - t
            if r.status_code != 200:
                errors += 1
                if errors <= 3:
                    print(f"  HTTP {r.status_code} for {url}: {r.text[:300]}")
                continue
            if i >= warmup:
                lat.append(dt)
                counts.append(len(r.json().get("entry", [])))
    st = common.summary_ms(lat) if lat else {"n": 0, "p50": float("nan"), "p95": float("nan"),
                                             "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    st["mean_results"] = sum(counts) / len(counts) if counts else 0
    st["empty"] = sum(1 for c in counts if c == 0)
    st["errors"] = errors
    return st


def explain(store: Any, queries: dict[str, Callable[[], Query]]) -> str:
    """The SQL statements each query sends, with their plans."""
    import sqlalchemy as sa

    captured: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        captured.append((statement, params))

    lines: list[str] = []
    repo = store.repository()
    sqlite = store.dialect.name == "sqlite"
    for name, build in queries.items():
        rtype, params = build()
        captured.clear()
        sa.event.listen(store.engine, "before_cursor_execute", grab)
        try:
            t = time.perf_counter()
            repo.search(repo.parser().parse(rtype, params))
            dt = time.perf_counter() - t
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", grab)
        lines.append(f"==== {name}: {rtype}?{urlencode(params)}  ({dt * 1000:.1f} ms, {len(captured)} statements)")
        for stmt, p in captured:
            if not stmt.lstrip().upper().startswith("SELECT"):
                continue
            lines.append(stmt.strip())
            lines.append(f"-- params: {p!r}"[:2000])
            with store.engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                cur = raw.cursor()
                if sqlite:
                    cur.execute("EXPLAIN QUERY PLAN " + stmt, p)
                    plan = [f"   {r[0]:>3} {r[1]:>3}  {r[3]}" for r in cur.fetchall()]
                else:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + stmt, p)
                    plan = ["   " + r[0] for r in cur.fetchall()]
                cur.close()
            lines.append("-- plan:")
            lines.extend(plan)
            lines.append("")
    return "\n".join(lines)


def fmt_row(name: str, st: dict[str, Any]) -> str:
    return (f"{name:<52} {st['n']:>5} {st['p50']:>8.2f} {st['p95']:>8.2f} {st['p99']:>8.2f} {st['max']:>8.1f} "
            f"{st['mean_results']:>8.1f}  {'MET' if st['p95'] < TARGET_P95_MS else 'NOT MET'}")


def main() -> None:
    ap = argparse.ArgumentParser(description="search latency, in-process and over HTTP")
    common.add_node_args(ap)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--budget", type=float, default=120,
                    help="seconds per query and mode; fewer runs (at least 10) when a query is slow")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--explain", action="store_true", help="write SQL and plans to bench/out/")
    ap.add_argument("--only", default=None, help="substring: run only the matching queries")
    ap.add_argument("--tag", default=None, help="suffix of the results file name (default: 'only' with --only)")
    a = ap.parse_args()
    if a.only and not a.tag:
        a.tag = "only"

    with common.node_for(a) as data:
        info = common.loaded_info(data) or {}
        node = common.open_node(data)
        store = node.store
        patients = [r for _t, _i, r in common.sample_rows(store, "Patient", 500, seed=3)]
        observations = [r for _t, _i, r in common.sample_rows(store, "Observation", 500, seed=4)]
        queries = builders(patients, observations, random.Random(5))
        if a.only:
            queries = {k: v for k, v in queries.items() if a.only in k}
        print(f"phip search benchmark — node {data} ({info.get('backend')}, {info.get('loaded', 0):,} resources), "
              f"{a.runs} runs per query, {common.describe()}", flush=True)
        results: dict[str, Any] = {"node": str(data), "info": info, "machine": common.machine(),
                                   "inprocess": {}, "http": {}}
        if a.explain:
            text = explain(store, queries)
            p = common.OUT / f"search_plans_{info.get('backend')}.txt"
            common.OUT.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            print(f"plans → {p}")
        hdr = (f"{'query':<52} {'runs':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'results':>8}"
               "  target p95<50")
        print("\nin-process (Repository.search)\n" + hdr, flush=True)
        for name, build in queries.items():
            st = run_inprocess(store, build, a.runs, a.warmup, a.budget)
            results["inprocess"][name] = st
            print(fmt_row(name, st), flush=True)
        node.close()
        if not a.no_http:
            token = common.admin_token(data)
            with common.Server(data, workers=1) as srv:
                print(f"\nover HTTP (phip serve --workers 1, one sequential httpx client)\n{hdr}", flush=True)
                for name, build in queries.items():
                    st = run_http(srv.base, token, build, a.runs, a.warmup, a.budget)
                    results["http"][name] = st
                    print(fmt_row(name, st), flush=True)
                time.sleep(3)
                rss = srv.rss()
                results["rss_idle_after"] = rss
                print(f"\nserver RSS idle after the searches: {rss['total_mb']:.0f} MB (anon {rss['anon_mb']:.0f}, "
                      f"file-backed {rss['file_mb']:.0f})")
        tag = f"_{a.tag}" if a.tag else ""
        out = common.save(f"search_{info.get('backend')}_{info.get('resources')}{tag}.json", results)
        print(f"results → {out}")


if __name__ == "__main__":
    main()
