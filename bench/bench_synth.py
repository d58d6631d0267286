"""Benchmark the synthetic region generator (``phip synth``).

Runs :func:`phip.synth.run` for N residents over Y years and prints residents/s, person-years/s,
resources/s, output size, peak memory, and the projected wall time of the issue's target run,
100,000 residents over 10 years.  The work per person-year is constant (townships are
independent; memory is bounded by one township), so the projection scales linearly in
person-years; run the full target with ``--persons 100000 --years 10`` to check it.

The machine's load average is printed too: other processes on a shared machine slow the run.

Run: ``python bench/bench_synth.py [--persons 10000] [--years 10] [--workers N] [--keep]``.
Results also go to ``bench/out/synth.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import orjson

from phip.synth import run

TARGET_PERSON_YEARS = 100_000 * 10
OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=10_000)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("PHIP_BENCH_WORK", "/tmp/phip-bench")))
    ap.add_argument("--keep", action="store_true", help="keep the generated region")
    args = ap.parse_args(argv)
    target = args.work / f"synth-{args.persons}x{args.years}"
    if target.exists():
        shutil.rmtree(target)
    load = os.getloadavg()
    t0 = time.perf_counter()
    s = run(target, args.persons, args.seed, years=args.years, progress=sys.stderr.isatty(), workers=args.workers)
    wall = time.perf_counter() - t0
    person_years = args.persons * args.years
    rss_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    projected = wall * TARGET_PERSON_YEARS / person_years
    result = {
        "persons": args.persons,
        "years": args.years,
        "workers": s.workers,
        "townships": s.townships,
        "people": s.people,
        "resources": s.total_resources,
        "bytes": s.bytes,
        "seconds": round(wall, 2),
        "residents_per_s": round(args.persons / wall, 1),
        "person_years_per_s": round(person_years / wall, 1),
        "resources_per_s": round(s.total_resources / wall, 1),
        "resources_per_person_year": round(s.total_resources / person_years, 2),
        "bytes_per_person_year": round(s.bytes / person_years),
        "projected_100k_10y_s": round(projected, 1),
        "projected_100k_10y_gb": round(s.bytes * TARGET_PERSON_YEARS / person_years / 1e9, 1),
        "peak_rss_main_mb": round(rss_main),
        "peak_rss_worker_mb": round(rss_child),
        "load_average_at_start": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
    }
    print(f"synth {args.persons:,} residents x {args.years} years, {s.workers} workers, {s.townships} townships")
    print(
        f"  {wall:,.1f} s wall; {result['residents_per_s']:,} residents/s; "
        f"{result['person_years_per_s']:,} person-years/s"
    )
    print(
        f"  {s.total_resources:,} resources ({result['resources_per_person_year']} per person-year), "
        f"{result['resources_per_s']:,} resources/s, {s.bytes / 1e9:.2f} GB"
    )
    print(
        f"  projected 100,000 residents x 10 years: {projected:,.0f} s ({projected / 60:.1f} min), "
        f"{result['projected_100k_10y_gb']} GB"
    )
    print(
        f"  peak RSS: main {rss_main:,.0f} MB, largest worker {rss_child:,.0f} MB; "
        f"load average at start {load[0]:.2f} on {os.cpu_count()} CPUs"
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "synth.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if not args.keep:
        shutil.rmtree(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
