"""Bulk import throughput against its two floors, in one run.

1. Generates N resources of the mixed synthetic load (``gen.py``; reused if already there).
2. **Parse floor**: read every NDJSON line and ``orjson.loads`` it — the least any importer of
   this data can do in Python.
3. **Storage floor**: ``executemany`` of the same rows (type, id, JSON text) into one plain table
   with no index and no key, on the same backend with the same engine settings (SQLite pragmas,
   psycopg), in transactions of the importer's batch size; only the insert + commit is timed.
4. **Import**: the real ``phip import`` fast path (``Importer(store).import_file``) into a fresh
   node, with full validation, versioning, search indexing and the change feed.
5. **Components** (on a sample): ``validate`` and ``index_resource`` alone, µs per resource.
6. **Profile**: cProfile of the import path on a sample (``--profile-resources``) in another fresh
   node; the top 15 by cumulative and by own time go to ``bench/out/profile_import_<backend>.txt``.

Prints resources/s of each, and the ratios import/storage-floor and import/parse-floor (how far
the import is from what the database, resp. JSON parsing, would allow), against the target
(≥ 3,000/s SQLite, ≥ 2,000/s PostgreSQL).

Run: ``python bench/bench_import.py --backend sqlite|postgresql --resources 100000
[--keep DIR] [--no-profile]``.  ``--keep DIR`` leaves the imported node in DIR for
``bench_http.py --data DIR`` and ``bench_search.py --data DIR``; drop it with
``python bench/common.py drop DIR``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import gen

TARGET = {"sqlite": 3000, "postgresql": 2000}


def lines_of(src: Path) -> list[Path]:
    from phip.importer.loader import collect

    return [f for f in collect([src]) if f.suffix == ".ndjson"]


def parse_floor(files: list[Path]) -> tuple[int, float]:
    n = 0
    t = time.perf_counter()
    for f in files:
        with f.open("rb") as fh:
            for line in fh:
                if line.strip():
                    orjson.loads(line)
                    n += 1
    return n, time.perf_counter() - t


def storage_floor(backend: str, files: list[Path], work: Path, batch: int) -> tuple[int, float]:
    """executemany of (type, id, content) rows into one unindexed table; only insert+commit timed."""
    from phip.store.db import make_engine

    floor_dir = work / f"floor-{os.getpid()}"
    common.drop_node(floor_dir)
    floor_dir.mkdir(parents=True)
    dbname = f"{common.PG_PREFIX}floor_{os.getpid()}"
    if backend == "sqlite":
        url = f"sqlite:///{floor_dir}/floor.db"
    else:
        url = common.pg_create(dbname)
    engine, _dialect = make_engine(url, pool_size=1)
    md = sa.MetaData()
    content = sa.Text().with_variant(JSONB(), "postgresql")
    table = sa.Table("floor_rows", md, sa.Column("type", sa.String(64), nullable=False),
                     sa.Column("id", sa.String(64), nullable=False), sa.Column("content", content))
    md.create_all(engine)
    n = 0
    timed = 0.0
    try:
        with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn:
            for f in files:
                with f.open("rb") as fh:
                    while True:
                        chunk = list(itertools.islice(fh, batch))
                        if not chunk:
                            break
                        rows = []
                        for line in chunk:
                            if not line.strip():
                                continue
                            text = line.decode().rstrip("\n")
                            head = orjson.loads(line)  # untimed: the floor is storage only
                            rows.append({"type": head["resourceType"], "id": head["id"], "content": text})
                        t = time.perf_counter()
                        with conn.begin():
                            conn.execute(table.insert(), rows)
                        timed += time.perf_counter() - t
                        n += len(rows)
    finally:
        engine.dispose()
        if backend == "postgresql":
            common.pg_drop(dbname)
        common.drop_node(floor_dir)
    return n, timed


def components(files: list[Path], k: int) -> dict[str, float]:
    """µs per resource of validation and of search-index extraction alone (first k resources)."""
    from phip.fhir.search.extract import index_resource
    from phip.fhir.validation import validate

    docs: list[dict[str, Any]] = []
    per_file = max(1, k // max(1, len(files)))
    for f in files:
        with f.open("rb") as fh:
            docs.extend(orjson.loads(line) for line in itertools.islice(fh, per_file))
    out: dict[str, float] = {"sample": len(docs)}
    for name, fn in (("validate_us", validate), ("index_us", index_resource),
                     ("orjson_dumps_us", orjson.dumps)):
        fn(docs[0])
        t = time.perf_counter()
        for d in docs:
            fn(d)
        out[name] = (time.perf_counter() - t) / len(docs) * 1e6
    return out


def profile_import(backend: str, src: Path, work: Path, n: int, top: int = 15) -> str:
    """cProfile the import of the first ``n`` resources (in another fresh node); a text report."""
    sample = work / f"profile-sample-{n}-{os.getpid()}"
    sample.mkdir(parents=True, exist_ok=True)
    # the same mix: the first n lines of the load, split by type as the generator writes them
    for old in sample.glob("*.ndjson"):
        old.unlink()
    files: dict[str, Any] = {}
    for res in itertools.islice(gen.resources(n, 1), n):
        t = res["resourceType"]
        if t not in files:
            files[t] = (sample / f"{t}.ndjson").open("wb")
        files[t].write(orjson.dumps(res) + b"\n")
    for fh in files.values():
        fh.close()
    node_dir = work / f"node-profile-{backend}-{os.getpid()}"
    node = common.create_node(backend, node_dir)
    try:
        prof = cProfile.Profile()
        prof.enable()
        rep, dt = common.import_dir(node, sample, parallel=False)
        prof.disable()
        node.close()
    finally:
        common.drop_node(node_dir)
        for old in sample.glob("*.ndjson"):
            old.unlink()
        sample.rmdir()
    buf = io.StringIO()
    buf.write(f"cProfile of the import of {rep.loaded:,} resources ({backend}): {dt:.1f}s under the profiler "
              f"({rep.loaded / dt:,.0f}/s; the profiler roughly doubles the time). Run with "
              f"Importer(parallel=False) so that validation and indexing, which the parallel path does in a "
              f"worker process, show up in this one profile.\n\n")
    st = pstats.Stats(prof, stream=buf)
    st.strip_dirs()
    buf.write(f"== top {top} by cumulative time ==\n")
    st.sort_stats("cumulative").print_stats(top)
    buf.write(f"\n== top {top} by own (total) time ==\n")
    st.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description="bulk import vs its parse and storage floors")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--resources", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=common.WORK)
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="import into DIR and keep the node (for bench_http / bench_search --data DIR)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-resources", type=int, default=20_000)
    ap.add_argument("--skip-floors", action="store_true", help="only the import (for quick re-runs)")
    ap.add_argument("--serial-too", action="store_true",
                    help="also import with Importer(parallel=False) (validation and indexing in this process)")
    a = ap.parse_args()

    from phip.importer.loader import BATCH

    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    src = gen.ensure(a.resources, a.seed, work / f"data-{a.resources}-s{a.seed}")
    files = lines_of(src)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"phip bulk import benchmark — backend {a.backend}, {a.resources:,} resources ({size_mb:.0f} MB NDJSON), "
          f"batch {BATCH}, {common.describe()}", flush=True)
    res: dict[str, Any] = {"backend": a.backend, "resources": a.resources, "seed": a.seed, "batch": BATCH,
                           "machine": common.machine(), "ndjson_mb": size_mb}

    if not a.skip_floors:
        n, dt = parse_floor(files)
        res["parse_floor"] = {"n": n, "s": dt, "rate": n / dt}
        print(f"parse floor    (orjson.loads of every line)        {n / dt:>10,.0f} resources/s  ({dt:.1f}s)",
              flush=True)
        n, dt = storage_floor(a.backend, files, work, BATCH)
        res["storage_floor"] = {"n": n, "s": dt, "rate": n / dt}
        print(f"storage floor  (executemany into 1 unindexed table) {n / dt:>10,.0f} resources/s  ({dt:.1f}s)",
              flush=True)

    node_dir = a.keep or work / f"node-import-{a.backend}-{os.getpid()}"
    node = common.create_node(a.backend, node_dir)
    try:
        cpu: dict[str, float] = {}
        la0 = common.loadavg()
        rep, dt = common.import_dir(node, src, cpu)
        node.close()
        rate = rep.loaded / dt
        res["import"] = {"n": rep.loaded, "s": dt, "rate": rate, "rejected": len(rep.rejected),
                         "cpu_s": cpu["cpu_s"], "worker_cpu_s": cpu["worker_cpu_s"], "sql_s": cpu["sql_s"],
                         "sql_statements": cpu["sql_statements"], "loadavg_before": la0,
                         "loadavg_after": common.loadavg(), "by_type": rep.by_type}
        print(f"import         (phip import: validate+index+feed)  {rate:>10,.0f} resources/s  ({dt:.1f}s; "
              f"loaded {rep.loaded:,}, rejected {len(rep.rejected)})", flush=True)
        all_cpu = cpu["cpu_s"] + cpu["worker_cpu_s"]
        print(f"  importer CPU {cpu['cpu_s']:.1f}s + worker processes {cpu['worker_cpu_s']:.1f}s = {all_cpu:.1f}s "
              f"({rep.loaded / all_cpu:,.0f} resources per CPU-second"
              f"{'' if a.backend == 'sqlite' else ', PostgreSQL server CPU not included'}); "
              f"load average {la0:.1f} → {common.loadavg():.1f}", flush=True)
        print(f"  time inside SQL statements (executemany counted once, COMMIT not included): {cpu['sql_s']:.1f}s "
              f"of {dt:.1f}s ({cpu['sql_s'] / dt:.0%}; {cpu['sql_statements']:,} statements)", flush=True)
        for r in rep.rejected[:5]:
            print(f"  REJECTED {r.file}:{r.line}: {r.reason}")
        if a.keep:
            common.mark_loaded(node_dir, {"backend": a.backend, "resources": a.resources, "seed": a.seed,
                                          "loaded": rep.loaded, "import_rate": rate})
        if a.backend == "sqlite":
            dbf = node_dir / "phip.db"
            res["db_mb"] = sum(p.stat().st_size for p in node_dir.glob("phip.db*")) / 1e6
            print(f"  database size {res['db_mb']:,.0f} MB ({dbf})")
    finally:
        if not a.keep:
            common.drop_node(node_dir)

    if a.serial_too:
        node_dir2 = work / f"node-import-serial-{a.backend}-{os.getpid()}"
        node = common.create_node(a.backend, node_dir2)
        try:
            cpu2: dict[str, float] = {}
            rep2, dt2 = common.import_dir(node, src, cpu2, parallel=False)
            node.close()
        finally:
            common.drop_node(node_dir2)
        res["import_serial"] = {"n": rep2.loaded, "s": dt2, "rate": rep2.loaded / dt2, "cpu_s": cpu2["cpu_s"]}
        print(f"import, serial (Importer(parallel=False): one process) {rep2.loaded / dt2:>7,.0f} resources/s  "
              f"({dt2:.1f}s; CPU {cpu2['cpu_s']:.1f}s, {rep2.loaded / cpu2['cpu_s']:,.0f} per CPU-second)", flush=True)

    target = TARGET[a.backend]
    imp = res["import"]["rate"]
    print()
    if not a.skip_floors:
        sf, pf = res["storage_floor"]["rate"], res["parse_floor"]["rate"]
        res["ratio_import_storage"] = imp / sf
        res["ratio_import_parse"] = imp / pf
        print(f"import / storage floor = {imp / sf:.3f}   (import takes {sf / imp:.1f}× the floor's time)")
        print(f"import / parse floor   = {imp / pf:.3f}   (import takes {pf / imp:.1f}× the floor's time)")
    res["target"] = target
    res["target_met"] = imp >= target
    print(f"target ≥ {target:,}/s on {a.backend}: {'MET' if imp >= target else 'NOT MET'} ({imp:,.0f}/s)")

    comp = components(files, 20_000)
    res["components"] = comp
    print(f"components (µs/resource on {comp['sample']:,.0f} resources): validate {comp['validate_us']:.0f}, "
          f"index_resource {comp['index_us']:.0f}, orjson.dumps {comp['orjson_dumps_us']:.1f}; "
          f"import total {1e6 / imp:.0f}")

    if not a.no_profile:
        text = profile_import(a.backend, src, work, min(a.profile_resources, a.resources))
        p = common.OUT / f"profile_import_{a.backend}.txt"
        common.OUT.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        print(f"profile → {p}")
        head = text.split("== top", 2)
        print("== top" + head[1] if len(head) > 1 else text)
    out = common.save(f"import_{a.backend}_{a.resources}.json", res)
    print(f"results → {out}")


if __name__ == "__main__":
    main()
