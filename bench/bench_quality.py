"""Data quality engine: its cost at import, and how well it finds injected defects.

Generates a synthetic region (``phip synth``, defects on) or uses ``--region DIR``, then imports
it into two fresh nodes of the same backend, in the same run:

- baseline: every capability installed, but the quality engine's hooks taken off;
- quality: everything, including the engine (per-batch checks + the batch phase).

and prints both times and the overhead (the target is ≤ 15%; with ``--repeat`` the best of each
side, then each quality run against the baseline run next to it — the order alternates from one
repeat to the next, so that a steady drift of the machine favours neither side — and the medians,
which show how far the machine drifted), then the recall on the injected
defects (``truth/quality_defects.csv``, mapping in ``phip.quality.evaluate``) and the share of
clean records flagged (targets ≥ 99% and ≤ 1%).  The engine's cost on live ingest (transaction
Bundles through the REST path) is ``bench_quality_rest.py``'s.

    python bench/bench_quality.py --persons 3000 --years 3 [--backend sqlite|postgresql] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK, create_node, describe, drop_node, import_dir, loadavg, open_node, save


def _strip_quality(node: Any) -> None:
    """Take the quality engine's hook functions off the node (the baseline)."""
    svc = node.ext["quality"]
    hooks = node.store.hooks
    for fns in hooks._fns.values():
        fns[:] = [(f, o) for f, o in fns
                  if getattr(f, "__self__", None) is not svc and getattr(f, "name", None) != "quality"]
    # (a transaction Bundle's checks before its write lock: not used by an import)
    hooks._prepare[:] = [(n, f) for n, f in hooks._prepare if getattr(f, "__self__", None) is not svc]


def _run(backend: str, region: Path, name: str, quality: bool) -> tuple[float, float, Any, Any]:
    data = WORK / name
    node = create_node(backend, data)
    if not quality:
        _strip_quality(node)
    cpu: dict[str, float] = {}
    report, dt = import_dir(node, region, cpu=cpu)
    return dt, cpu.get("cpu_s", 0.0) + cpu.get("worker_cpu_s", 0.0), report, node


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=3000)
    ap.add_argument("--years", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--region", type=Path, default=None, help="use this synthetic region instead of generating")
    ap.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    ap.add_argument("--repeat", type=int, default=1, help="import each way this many times (best time kept)")
    ap.add_argument("--keep", action="store_true", help="keep the nodes under /tmp/phip-bench")
    a = ap.parse_args()
    print(describe(), flush=True)
    region = a.region
    if region is None:
        from phip.synth import run as synth

        region = WORK / f"quality-region-{a.persons}-{a.years}-{a.seed}"
        if not (region / "truth" / "quality_defects.csv").exists():
            shutil.rmtree(region, ignore_errors=True)
            t = time.perf_counter()
            synth(region, a.persons, a.seed, years=a.years, progress=False)
            print(f"synthetic region: {a.persons:,} residents × {a.years} years in {time.perf_counter() - t:.0f}s",
                  flush=True)
    n_lines = sum(1 for f in region.rglob("*.ndjson") for _ in f.open("rb"))
    print(f"region {region}: {n_lines:,} resources", flush=True)
    times: dict[str, list[float]] = {"baseline": [], "quality": []}
    cpus: dict[str, list[float]] = {"baseline": [], "quality": []}
    for i in range(a.repeat):
        # the order alternates (baseline first, then quality first, …): a machine that drifts steadily
        # faster or slower during the series does not favour either side in the pairs below
        for mode in ("baseline", "quality") if i % 2 == 0 else ("quality", "baseline"):
            # the previous run's files written out and dropped before the clock starts (not after it, in
            # the next run's time)
            os.sync()
            dt, cpu, report, node = _run(a.backend, region, f"quality-{mode}-{a.backend}", mode == "quality")
            times[mode].append(dt)
            cpus[mode].append(cpu)
            print(f"  {mode:<8} run {i + 1}: {dt:7.1f}s wall, {cpu:7.1f}s CPU (this process + worker)  "
                  f"{report.loaded / dt:8,.0f} resources/s  (rejected {len(report.rejected)}, "
                  f"load average {loadavg():.1f})", flush=True)
            # closed at once (an open node's WAL checkpointer must not run during the next import); the
            # last quality node is opened again for the recall below
            node.close()
            if not a.keep and not (mode == "quality" and i == a.repeat - 1):
                drop_node(WORK / f"quality-{mode}-{a.backend}")
    base, qual = min(times["baseline"]), min(times["quality"])
    overhead = (qual - base) / base
    cbase, cqual = min(cpus["baseline"]), min(cpus["quality"])
    cpu_overhead = (cqual - cbase) / cbase if cbase else float("nan")
    print(f"import, best of {a.repeat}: baseline {base:.1f}s, with quality {qual:.1f}s → wall-clock overhead "
          f"{overhead * 100:+.1f}% (target ≤ 15%)")
    print(f"CPU time (less sensitive to other jobs on the machine): baseline {cbase:.1f}s, with quality "
          f"{cqual:.1f}s → overhead {cpu_overhead * 100:+.1f}%")
    pairs = [q / b - 1 for b, q in zip(times["baseline"], times["quality"], strict=True)]
    if len(pairs) > 1:  # how far the runs drift: the best of each side may come from different moments
        medians = statistics.median(times["quality"]) / statistics.median(times["baseline"]) - 1
        print(f"each quality run's overhead against the baseline run next to it (the order alternates): "
              f"{', '.join(f'{p * 100:+.1f}%' for p in pairs)}; median {statistics.median(pairs) * 100:+.1f}%; "
              f"median against median {medians * 100:+.1f}%")
    from phip.quality.evaluate import evaluate

    node_q = open_node(WORK / f"quality-quality-{a.backend}")

    qs = node_q.ext["quality"]
    ev = evaluate(node_q.store, region, qs.rules, linked=qs.same_person is not None)
    for line in ev.lines():
        print(line)
    ok = ev.recall >= 0.99 and ev.fp_rate <= 0.01
    print(f"targets: recall ≥ 99% and false positives ≤ 1%: {'met' if ok else 'NOT met'}; "
          f"overhead ≤ 15%: {'met' if overhead <= 0.15 else 'NOT met'}")
    save(f"quality-{a.backend}-{a.persons}.json", {
        "machine": describe(), "resources": n_lines, "baseline_s": times["baseline"], "quality_s": times["quality"],
        "overhead": overhead, "baseline_cpu_s": cpus["baseline"], "quality_cpu_s": cpus["quality"],
        "cpu_overhead": cpu_overhead, "pair_overheads": pairs, "recall": ev.recall, "fp_rate": ev.fp_rate,
        "defects": ev.defects,
        "in_scope": ev.in_scope, "found": ev.found, "clean": ev.clean, "clean_flagged": ev.clean_flagged,
        "by_kind": ev.by_kind, "out_of_scope": dict(ev.out_of_scope)})
    node_q.close()
    if not a.keep:
        drop_node(WORK / f"quality-quality-{a.backend}")


if __name__ == "__main__":
    main()
