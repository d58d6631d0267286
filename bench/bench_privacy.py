"""Cost of audit and encryption at rest, against a baseline measured in the same run.

    .venv/bin/python bench/bench_privacy.py [--persons 2000] [--reads 3000] [--work DIR]

Makes a synthetic region (``phip synth``), imports it into two SQLite nodes — encryption at rest
off and on — and prints:

- import: resources/s with encryption off and on (the ratio is the cost of sealing + blind indexes);
- reads by id through the whole ASGI app in-process (no sockets: CPU µs per read, the cost the
  server pays), for Patients (sealed) and Observations (not sealed), in three set-ups: without the
  audit capability (baseline), with audit, with audit and encryption;
- the audit chain: records appended per second in batches, and verified per second.

CPU time is process time (it includes the audit flush thread).  The machine is shared with other
work; compare the ratios, not the absolute figures, across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHIP = str(Path(sys.executable).parent / "phip")


def synth(out: Path, persons: int) -> None:
    subprocess.run([PHIP, "synth", "--out", str(out), "--persons", str(persons), "--seed", "1",
                    "--force", "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)


def make_node(folder: Path, encrypt: bool) -> None:
    subprocess.run([PHIP, "init", "--data", str(folder), "--region", "510104"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not encrypt:
        cfg = folder / "phip.toml"
        cfg.write_text(cfg.read_text().replace("encrypt_at_rest = true", "encrypt_at_rest = false"))


def open_node(folder: Path, without: tuple[str, ...] = ()) -> Any:
    import phip.capabilities as C
    from phip.node.node import Node

    full = C.load()
    C.load = lambda: tuple(c for c in full if c.name not in without)  # type: ignore[assignment]
    try:
        return Node.open(folder)
    finally:
        C.load = lambda: full  # type: ignore[assignment]


def import_all(folder: Path, src: Path) -> tuple[int, float]:
    from phip.importer.loader import Importer, collect

    node = open_node(folder)
    imp = Importer(node.store)
    t = time.perf_counter()
    for f in collect([src]):
        imp.import_file(f)
    imp.finish()
    took = time.perf_counter() - t
    imp.close()
    n = imp.report.loaded
    node.close()
    return n, took


def ids(folder: Path, rtype: str, k: int) -> list[str]:
    import sqlalchemy as sa

    from phip.store import schema as S

    node = open_node(folder)
    with node.store.engine.connect() as conn:
        got = [r.id for r in conn.execute(sa.select(S.resources.c.id).where(S.resources.c.type == rtype))]
    node.close()
    random.Random(7).shuffle(got)
    return got[:k]


def asgi_reads(folder: Path, paths: list[str], without: tuple[str, ...]) -> float:
    """CPU µs per GET by id through the whole app, called in-process."""
    from phip.api.app import create_app

    node = open_node(folder, without)
    app = create_app(node)
    auth = f"Bearer {node.tokens.issue('admin', 'bench')}".encode()

    async def call(path: str) -> None:
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(m: dict[str, Any]) -> None:
            nonlocal status
            if m["type"] == "http.response.start":
                status = m["status"]

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1"), (b"authorization", auth)],
                 "client": ("10.0.0.9", 9), "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}")

    async def run(ps: list[str]) -> None:
        for p in ps:
            await call(p)

    asyncio.run(run(paths[:200]))
    c = time.process_time()
    asyncio.run(run(paths))
    if "audit" in node.ext:
        node.ext["audit"].flush()  # what the reads recorded is paid for in this measurement
    us = (time.process_time() - c) / len(paths) * 1e6
    node.close()
    return us


def chain_speed(folder: Path, n: int) -> tuple[float, float]:
    from phip.audit import chain
    from phip.audit.events import Pending
    from phip.fhir.datetimes import now_us

    node = open_node(folder)
    svc = node.ext["audit"]
    batch = [Pending(now_us(), "read", 0, f"p{i}", f"Patient/p{i}", None, f"dr-{i % 50}", "clinician",
                     "Organization/h1", None, "TREAT", None, "10.0.0.9") for i in range(n)]
    t = time.perf_counter()
    for k in range(0, n, 2000):
        chain.append(node.store.engine, batch[k:k + 2000], "bench", svc.key)
    append = n / (time.perf_counter() - t)
    t = time.perf_counter()
    v = chain.verify(node.store.engine, svc.public_keys)
    assert v.ok, v.message()
    verify = v.checked / (time.perf_counter() - t)
    node.close()
    return append, verify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--persons", type=int, default=2000)
    ap.add_argument("--reads", type=int, default=3000)
    ap.add_argument("--chain", type=int, default=20000, help="audit records appended/verified")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="reuse the nodes of an earlier run in --work")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="phip-bench-privacy-"))
    plain, sealed = work / "plain", work / "sealed"
    if a.reuse and (plain / "phip.toml").exists() and (sealed / "phip.toml").exists():
        print(f"reusing the nodes in {work} (no import figures)")
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        src = work / "synth"
        print(f"synthetic region of {a.persons} persons → {src}")
        synth(src, a.persons)
        make_node(plain, encrypt=False)
        make_node(sealed, encrypt=True)
        n0, t0 = import_all(plain, src)
        n1, t1 = import_all(sealed, src)
        print(f"\nimport, encryption off: {n0} resources in {t0:.1f} s = {n0 / t0:,.0f}/s")
        print(f"import, encryption on:  {n1} resources in {t1:.1f} s = {n1 / t1:,.0f}/s  "
              f"(ratio {t0 / t1:.2f} of the baseline's throughput)")
    print(f"\nreads by id, in-process ASGI, CPU µs per read ({a.reads} reads each):")
    rows = []
    for rtype in ("Patient", "Observation"):
        paths = [f"/fhir/{rtype}/{i}" for i in ids(plain, rtype, a.reads)]
        base = asgi_reads(plain, paths, ("audit",))
        audit = asgi_reads(plain, paths, ())
        both = asgi_reads(sealed, paths, ())
        rows.append((rtype, base, audit, both))
        print(f"  {rtype:12s} baseline (no audit) {base:7.1f} µs | + audit {audit:7.1f} µs ({audit / base:.2f}×)"
              f" | + audit + encryption {both:7.1f} µs ({both / base:.2f}×)")
    app, ver = chain_speed(plain, a.chain)
    print(f"\naudit chain: {app:,.0f} records/s appended (batches of 2000), {ver:,.0f} records/s verified")
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
