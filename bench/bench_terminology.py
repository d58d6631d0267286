"""Benchmark the terminology service (``node.ext["terminology"]``) in-process and over HTTP.

Prints operations per second for, against a baseline measured in the same run (a bare Python set
membership test on the same codes — the floor any cache-backed validation is compared with):

- ``validate_code(system, code)`` — the path the data-quality engine calls per coded element
  (target: at least 20,000/s);
- ``validate_code(system, code, valueset_url)`` — value-set membership (memoised per node);
- ``lookup``, ``check`` (with a message), ``translate``, ``notifiable`` (ICD-10 → 法定传染病);
- ``$validate-code`` over HTTP (TestClient: no network, the whole FastAPI stack);
- the cost of ``phip init`` with and without loading the shipped tables (median of --inits runs).

The codes are a mix of valid and invalid codes from GB/T 2261.1, GB 3304, ICD-10 and GB/T 2260.

Run: ``python bench/bench_terminology.py [--seconds 1.0] [--backend sqlite|postgresql] [--inits 5]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PG_ADMIN, fmt_rate

SEX = "urn:oid:2.16.156.10011.2.3.3.4"
ETH = "urn:oid:2.16.156.10011.2.3.3.3"
ICD = "urn:oid:2.16.156.10011.2.3.3.11"
DIV = "urn:phip:cs:gbt2260"


def rate(fn: Callable[[], Any], seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(1000):
            fn()
        n += 1000
        now = time.perf_counter()
        if now >= end:
            return n / (now - t0)


def sample_codes(svc: Any, k: int = 5000) -> list[tuple[str, str]]:
    rnd = random.Random(7)
    icd = list(svc.codesystem(ICD).concepts)
    div = list(svc.codesystem(DIV).concepts)
    out = []
    for _ in range(k):
        r = rnd.random()
        if r < 0.2:
            out.append((SEX, rnd.choice(["0", "1", "2", "9", "3"])))
        elif r < 0.4:
            out.append((ETH, f"{rnd.randint(1, 60):02d}"))
        elif r < 0.8:
            out.append((ICD, rnd.choice(icd) if rnd.random() < 0.9 else "Z99.99X"))
        else:
            out.append((DIV, rnd.choice(div) if rnd.random() < 0.9 else "999999"))
    return out


def make_node(root: Path, backend: str, load: bool) -> Any:
    from phip.node.node import init_node

    if load:
        os.environ.pop("PHIP_TERMINOLOGY_ON_INIT", None)
    else:
        os.environ["PHIP_TERMINOLOGY_ON_INIT"] = "0"
    db = None
    if backend == "postgresql":
        import uuid

        import sqlalchemy as sa

        name = f"phipbench_term_{uuid.uuid4().hex[:8]}"
        eng = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        eng.dispose()
        db = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        return init_node(root / f"n{time.monotonic_ns()}", db=db, region="510104")
    finally:
        os.environ.pop("PHIP_TERMINOLOGY_ON_INIT", None)


def drop(node: Any) -> None:
    url = node.store.url
    node.close()
    if url.startswith("postgresql"):
        import sqlalchemy as sa

        eng = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        eng.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--inits", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="phip-bench-term-"))

    node = make_node(root, args.backend, load=True)
    svc = node.ext["terminology"]
    svc.refresh()
    codes = sample_codes(svc)
    n = len(codes)
    valid = {(s, c) for s, c in codes if svc.validate_code(s, c)}
    it = iter(range(1 << 62))

    def pick() -> tuple[str, str]:
        return codes[next(it) % n]

    def baseline() -> bool:
        return pick() in valid

    def vc() -> bool:
        s, c = pick()
        return svc.validate_code(s, c)

    def vc_vs() -> bool:
        return svc.validate_code(SEX, codes[next(it) % n][1], "urn:phip:vs:gbt2261-1")

    def lk() -> Any:
        s, c = pick()
        return svc.lookup(s, c)

    def chk() -> Any:
        s, c = pick()
        return svc.check(s, c)

    def tr() -> Any:
        return svc.translate(DIV, "510122")

    def nt() -> Any:
        return svc.notifiable("A01.0")

    print(f"backend {args.backend}; {n} sample codes ({len(valid)} distinct valid ones); "
          f"{args.seconds:.1f} s per figure")
    print("(the machine is shared with other jobs: figures vary run to run)")
    base = rate(baseline, args.seconds)
    print(f"  baseline: set membership            {fmt_rate(base):>14}")
    rows = [("validate_code(system, code)", vc), ("validate_code(.., valueset)", vc_vs), ("lookup", lk),
            ("check (with message)", chk), ("translate (ConceptMap)", tr), ("notifiable (ICD-10)", nt)]
    for label, fn in rows:
        r = rate(fn, args.seconds)
        print(f"  {label:<34}{fmt_rate(r):>14}   {base / r:5.1f}x baseline")
        if label.startswith("validate_code(system"):
            print(f"    target >= 20,000/s: {'met' if r >= 20_000 else 'NOT met'}")

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from phip.api.app import create_app

    with TestClient(create_app(node)) as client:
        h = {"Authorization": f"Bearer {node.tokens.issue('admin', 'bench')}"}
        urls = [f"/fhir/CodeSystem/$validate-code?url={s}&code={c}" for s, c in codes[:500]]
        for u in urls[:20]:
            client.get(u, headers=h)
        t0 = time.perf_counter()
        for u in urls:
            assert client.get(u, headers=h).status_code == 200
        dt = time.perf_counter() - t0
        each = dt / len(urls) * 1000
        print(f"  HTTP $validate-code (TestClient)  {fmt_rate(len(urls) / dt):>14}   {each:.2f} ms each")
    drop(node)

    with_load: list[float] = []
    without: list[float] = []
    for i in range(args.inits + 1):
        for load, acc in ((True, with_load), (False, without)):
            t0 = time.perf_counter()
            nd = make_node(root, args.backend, load=load)
            dt = time.perf_counter() - t0
            drop(nd)
            if i:  # the first round warms the process (imports, parsing the shipped tables)
                acc.append(dt)
    if with_load:
        a, b = statistics.median(with_load), statistics.median(without)
        print(f"  init_node with the shipped tables   {a * 1000:8.0f} ms (median of {len(with_load)})")
        print(f"  init_node without (opt-out)         {b * 1000:8.0f} ms  → loading adds {(a - b) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
