"""Data quality engine: its cost on live ingest, transaction Bundles written through the REST path.

``bench_quality.py`` measures the engine's cost on ``phip import``; hospitals also push their records
live, as transaction Bundles.  This benchmark copies a loaded SQLite node twice — a baseline with the
quality engine's hooks taken off (as in ``bench_quality``), and the node as it is — opens both in
this process, and writes the same transaction Bundles of 20 (``bench_http``'s live feed of a new
patient's visit) into each through :func:`phip.api.bundles.process` (the ``POST /fhir`` handler
without HTTP, which costs the same on both sides), one Bundle on one node then one on the other, the
order alternating.  Both sides run through the same moments of the machine, so its drift (which
moves separate runs by ±20% on a shared VM) falls on both alike.

Prints the time per Bundle on each side (mean and median of the Bundles) and the overhead of the
quality engine (target ≤ 15%, the same as for an import), with the CPU time beside it.  The mean is
what ingest takes; it includes the odd long Bundle (a WAL checkpoint, the disk's write-back), which
falls on either side by chance: with 600 Bundles a side, the mean's overhead moved between +8% and
+18% from run to run on one build, with 2,000 by about a point.

    python bench/bench_quality_rest.py --data /tmp/phip-bench/node-sqlite-100k [--bundles 2000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from bench_http import node_bundles
from bench_quality import _strip_quality

TARGET = 0.15


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a loaded SQLite node (bench_import.py --keep DIR)")
    ap.add_argument("--bundles", type=int, default=2000, help="Bundles written into each node")
    ap.add_argument("--warmup", type=int, default=20, help="Bundles written into each before the clock starts")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    common.require_sqlite_folder(a.data, "the node is copied for each side")
    print(common.describe(), flush=True)
    from phip.api import bundles

    with tempfile.TemporaryDirectory(prefix="phip-quality-rest-", dir=common.WORK.parent) as tmp:
        nodes: dict[str, Any] = {}
        for side in ("baseline", "quality"):
            shutil.copytree(a.data, Path(tmp) / side)
            nodes[side] = common.open_node(Path(tmp) / side)
        _strip_quality(nodes["baseline"])
        bodies = node_bundles(nodes["quality"].store, a.warmup + a.bundles, a.seed)
        base = "http://127.0.0.1/fhir"

        def get(*_a: Any) -> dict[str, Any]:
            raise AssertionError("the Bundles hold no reads")

        repos = {side: node.store.repository() for side, node in nodes.items()}
        wall: dict[str, list[float]] = {"baseline": [], "quality": []}
        cpu: dict[str, list[float]] = {"baseline": [], "quality": []}
        for i, body in enumerate(bodies):
            for side in ("baseline", "quality") if i % 2 == 0 else ("quality", "baseline"):
                doc = orjson.loads(body)  # (each side gets its own copy: process() may change it)
                c, t = time.thread_time(), time.perf_counter()
                out = bundles.process(repos[side], doc, base, get, raw=True)
                orjson.dumps(out)
                t, c = time.perf_counter() - t, time.thread_time() - c
                if i >= a.warmup:
                    wall[side].append(t)
                    cpu[side].append(c)
        for node in nodes.values():
            node.close()

    def ms(x: float) -> str:
        return f"{x * 1000:.2f} ms"

    print(f"\n{a.bundles} transaction Bundles of 20 into each node, one at a time, alternating "
          f"(after {a.warmup} each to warm up):")
    for side in ("baseline", "quality"):
        print(f"  {side:<8}: mean {ms(statistics.fmean(wall[side]))}, median {ms(statistics.median(wall[side]))} "
              f"a Bundle (CPU mean {ms(statistics.fmean(cpu[side]))})")
    mean_over = statistics.fmean(wall["quality"]) / statistics.fmean(wall["baseline"]) - 1
    med_over = statistics.median(wall["quality"]) / statistics.median(wall["baseline"]) - 1
    cpu_over = statistics.fmean(cpu["quality"]) / statistics.fmean(cpu["baseline"]) - 1
    ok = mean_over <= TARGET
    print(f"overhead of the quality engine on live ingest: {mean_over * 100:+.1f}% (mean), {med_over * 100:+.1f}% "
          f"(median), CPU {cpu_over * 100:+.1f}% — target ≤ {TARGET * 100:.0f}%: {'met' if ok else 'NOT met'}")
    common.save("quality_rest.json", {"machine": common.describe(), "bundles": a.bundles,
                                      "baseline_ms": [x * 1000 for x in wall["baseline"]],
                                      "quality_ms": [x * 1000 for x in wall["quality"]],
                                      "overhead_mean": mean_over, "overhead_median": med_over,
                                      "cpu_overhead": cpu_over})


if __name__ == "__main__":
    main()
