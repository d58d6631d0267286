"""Shared helpers of the phip benchmarks: nodes on either backend, statistics, servers, RSS.

Benchmark nodes live under ``/tmp/phip-bench`` (or ``--work``); a PostgreSQL node gets its own
database ``phipbench_<name>`` on 127.0.0.1:5432 that :func:`drop_node` drops again.  A node that
a benchmark loaded is marked with ``bench.json`` (what was loaded: resources, seed), so the
HTTP and search benchmarks can reuse a node that ``bench_import.py --keep`` left behind.

Also a small command line:

    python bench/common.py drop DIR        # drop a kept node (its PostgreSQL database too)
    python bench/common.py load --backend sqlite --resources N --data DIR   # build a node, keep it
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
WORK = Path(os.environ.get("PHIP_BENCH_WORK", "/tmp/phip-bench"))
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_PREFIX = "phipbench_"
PHIP = Path(sys.executable).with_name("phip")


# -- statistics ---------------------------------------------------------------------------------------
def pct(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank, p in 0..100) of ``samples``."""
    if not samples:
        return float("nan")
    s = sorted(samples)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ms = [x * 1000 for x in samples_s]
    return {"n": len(ms), "p50": pct(ms, 50), "p95": pct(ms, 95), "p99": pct(ms, 99), "max": max(ms),
            "mean": statistics.fmean(ms)}


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def save(name: str, data: Any) -> Path:
    """Write a result JSON into bench/out/ (git-ignored)."""
    OUT.mkdir(parents=True, exist_ok=True)
    p = OUT / name
    p.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return p


def machine() -> dict[str, Any]:
    import platform
    import sqlite3

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(), "code": code_state()}


def code_state() -> dict[str, Any]:
    """Which code was measured: git HEAD, the modified files under src/, a hash of src/phip/**/*.py."""
    import hashlib

    h = hashlib.sha1()
    for p in sorted((ROOT / "src" / "phip").rglob("*.py")):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    out: dict[str, Any] = {"src_sha1": h.hexdigest()[:12]}
    try:
        out["head"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, timeout=10).stdout.strip()
        st = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True,
                            text=True, timeout=10).stdout
        out["src_changes"] = [ln[3:] for ln in st.splitlines()]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def describe() -> str:
    """One line for the head of a benchmark's output."""
    m = machine()
    c = m["code"]
    return (f"{m['cpus']} CPUs, Python {m['python']}, SQLite {m['sqlite']}, load average {loadavg():.1f}; code: "
            f"HEAD {c.get('head', '?')} + {len(c.get('src_changes', []))} changed files in src/ "
            f"(src sha1 {c['src_sha1']})")


def migrate_node(data: Path) -> float:
    """Bring a kept node to the current schema before a server starts on it (phip serve would do it at
    start-up, where a long index rebuild would look like a server that never becomes ready)."""
    from phip.node.node import Node

    t = time.perf_counter()
    node = Node.open(data, migrate=True)
    node.close()
    dt = time.perf_counter() - t
    if dt > 5:
        print(f"migrated {data} to the current schema in {dt:.0f}s", flush=True)
    return dt


# -- databases and nodes ------------------------------------------------------------------------------
def pg_url(dbname: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(sql)


def pg_create(dbname: str) -> str:
    assert dbname.startswith(PG_PREFIX) and dbname.replace("_", "").isalnum(), dbname
    _pg_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    _pg_admin(f'CREATE DATABASE "{dbname}"')
    return pg_url(dbname)


def pg_drop(dbname: str) -> None:
    assert dbname.startswith(PG_PREFIX), dbname
    _pg_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def db_url_for(backend: str, data: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{data.resolve()}/phip.db"
    if backend == "postgresql":
        return pg_create(PG_PREFIX + data.name.replace("-", "_").lower())
    raise SystemExit(f"--backend must be sqlite or postgresql, not {backend!r}")


def create_node(backend: str, data: Path) -> Any:
    """A fresh, empty node in ``data`` (whatever was there is dropped first)."""
    from phip.node.node import init_node

    drop_node(data)
    data.parent.mkdir(parents=True, exist_ok=True)
    # SQLite: the node's own default, relative to its folder ({data}), so a copied node is its own
    url = None if backend == "sqlite" else db_url_for(backend, data)
    return init_node(data, db=url, region="510100", name="bench")


def node_db(data: Path) -> str | None:
    from phip.node.config import NodeConfig

    try:
        return NodeConfig.load(data).db
    except Exception:
        return None


def drop_node(data: Path) -> None:
    """Remove a benchmark node: its folder and, on PostgreSQL, its database."""
    url = node_db(data) if data.exists() else None
    if url and url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        if name.startswith(PG_PREFIX):
            pg_drop(name)
    if data.exists():
        shutil.rmtree(data)


def require_sqlite_folder(data: Path, why: str) -> None:
    """Exit with a message unless ``data`` is a SQLite node whose database file is in its own folder
    (a benchmark that copies the node, or reads SQLite's own files, needs that)."""
    url = node_db(data)
    if url is None or not url.startswith("sqlite:///") or Path(url[10:]).parent != data.resolve():
        raise SystemExit(f"--data must be a SQLite node with its database in its own folder, not {url!r} ({why})")


def mark_loaded(data: Path, info: dict[str, Any]) -> None:
    (data / "bench.json").write_bytes(orjson.dumps(info))


def loaded_info(data: Path) -> dict[str, Any] | None:
    p = data / "bench.json"
    return orjson.loads(p.read_bytes()) if p.exists() else None


def open_node(data: Path, pool_size: int = 8) -> Any:
    from phip.node.node import Node

    return Node.open(data, pool_size=pool_size, migrate=False)


def import_dir(node: Any, src: Path, cpu: dict[str, float] | None = None,
               parallel: bool | None = None) -> tuple[Any, float]:
    """Run the bulk import fast path (``phip import``) over every file of ``src``; returns (report, seconds).

    ``cpu``, when given, receives the CPU seconds of this process (``cpu_s``) and of its child
    processes (``worker_cpu_s``: the importer's validation/indexing worker, if it starts one), and
    the wall time spent inside SQL statements (``sql_s``, ``sql_statements``: executemany calls
    count once; COMMIT is not a statement and is not included).
    ``parallel`` is passed to ``Importer`` when given (``False``: everything in this process).
    """
    import inspect

    from phip.importer.loader import Importer, collect

    files = [f for f in collect([src]) if f.suffix == ".ndjson"]
    total = sum(f.stat().st_size for f in files)
    state = {"bytes": 0, "next": 0.1}

    def progress(n: int) -> None:  # a line every 10% of the bytes (long runs are polled from a log)
        state["bytes"] += n
        if state["bytes"] >= state["next"] * total:
            state["next"] += 0.1
            dt = time.perf_counter() - t
            done = imp.report.loaded + imp.report.updated + imp.report.unchanged
            print(f"  … {state['bytes'] / total:4.0%} of the bytes, {done:,} resources in {dt:.0f}s "
                  f"({done / max(dt, 1e-9):,.0f}/s), load average {loadavg():.1f}", flush=True)

    kw: dict[str, Any] = {"on_progress": progress if total > 50_000_000 else None}
    if parallel is not None and "parallel" in inspect.signature(Importer).parameters:
        kw["parallel"] = parallel
    imp = Importer(node.store, **kw)
    sql = {"s": 0.0, "n": 0}
    starts: list[float] = []

    def before(*_a: Any) -> None:
        starts.append(time.perf_counter())

    def after(*_a: Any) -> None:
        if starts:
            sql["s"] += time.perf_counter() - starts.pop()
            sql["n"] += 1

    import sqlalchemy as sa

    sa.event.listen(node.store.engine, "before_cursor_execute", before)
    sa.event.listen(node.store.engine, "after_cursor_execute", after)
    kids0 = descendants_cpu() + reaped_children_cpu()
    t = time.perf_counter()
    c = time.process_time()
    try:
        if hasattr(imp, "import_all"):  # as ``phip import``: deferred indexes, batch phase, ANALYZE
            imp.import_all(files, on_phase=lambda what: print(f"  … {what} ({time.perf_counter() - t:.0f}s)",
                                                               flush=True))
        else:
            for f in files:
                imp.import_file(f)
        dt = time.perf_counter() - t
        if cpu is not None:
            cpu["cpu_s"] = time.process_time() - c
            # (the importer stops its worker before it returns: a reaped child counts in RUSAGE_CHILDREN,
            # one not reaped yet still in /proc)
            cpu["worker_cpu_s"] = descendants_cpu() + reaped_children_cpu() - kids0
        if cpu is not None:
            cpu["sql_s"] = sql["s"]
            cpu["sql_statements"] = sql["n"]
    finally:
        sa.event.remove(node.store.engine, "before_cursor_execute", before)
        sa.event.remove(node.store.engine, "after_cursor_execute", after)
        close = getattr(imp, "close", None)
        if close is not None:
            close()
    return imp.report, dt


def descendants_cpu() -> float:
    """CPU seconds (user + system) so far of this process's live descendants (from /proc)."""
    tck = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(f[1])
        cpu[int(d.name)] = (int(f[11]) + int(f[12])) / tck
    me = os.getpid()
    total = 0.0
    for pid in parent:
        p = parent.get(pid)
        while p and p != me and p != 1:
            p = parent.get(p)
        if p == me:
            total += cpu[pid]
    return total


def reaped_children_cpu() -> float:
    """CPU seconds (user + system) of this process's children that have ended and been waited for."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def loadavg() -> float:
    """The 1-minute load average (other work on the 2 cores skews wall-clock figures)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def ensure_loaded(backend: str, resources: int, seed: int, data: Path | None, work: Path = WORK) -> tuple[Path, bool]:
    """A node holding the synthetic load; returns (folder, created_here).

    With ``data`` naming a node loaded by a benchmark, it is reused as it is.  Otherwise a node is
    built in ``work`` and loaded (the caller drops it when ``created_here``).
    """
    from gen import ensure

    if data is not None:
        if loaded_info(data) is None:
            raise SystemExit(f"{data} is not a node loaded by the benchmarks (no bench.json)")
        migrate_node(data)
        return data, False
    d = work / f"node-{backend}-{resources}"
    node = create_node(backend, d)
    src = ensure(resources, seed, work / f"data-{resources}-s{seed}")
    print(f"loading {resources:,} resources into a {backend} node at {d} …", flush=True)
    rep, dt = import_dir(node, src)
    node.close()
    print(f"  loaded {rep.loaded:,} in {dt:.0f}s ({rep.loaded / dt:,.0f}/s), rejected {len(rep.rejected)}",
          flush=True)
    mark_loaded(d, {"backend": backend, "resources": resources, "seed": seed, "loaded": rep.loaded})
    return d, True


def admin_token(data: Path, ttl: int = 24 * 3600) -> str:
    from phip.node.config import NodeConfig
    from phip.security import keys
    from phip.security.tokens import TokenService

    cfg = NodeConfig.load(data)
    svc = TokenService(keys.load_all(data), issuer=f"urn:phip:node:{cfg.region}:{cfg.name}")
    return svc.issue("admin", "bench", ttl=ttl)


# -- samples drawn from the loaded data ----------------------------------------------------------------
def sample_rows(store: Any, rtype: str | None, k: int, seed: int = 7) -> list[tuple[str, str, dict[str, Any]]]:
    """``k`` random (type, id, resource) of the store (uniform over rows; one type or all)."""
    import random

    import sqlalchemy as sa

    from phip.store import schema as S
    from phip.store.repository import content_bytes

    R = S.resources
    rng = random.Random(seed)
    with store.engine.connect() as conn:
        cond = [R.c.deleted == sa.false()] + ([R.c.type == rtype] if rtype else [])
        lo, hi = conn.execute(sa.select(sa.func.min(R.c.rid), sa.func.max(R.c.rid)).where(*cond)).one()
        if lo is None:
            return []
        out: dict[int, tuple[str, str, dict[str, Any]]] = {}
        tries = 0
        while len(out) < k and tries < 50:
            tries += 1
            want = sorted({rng.randint(lo, hi) for _ in range(max(k * 2, 100))})
            for i in range(0, len(want), 500):
                q = sa.select(R.c.rid, R.c.type, R.c.id, R.c.content).where(R.c.rid.in_(want[i : i + 500]), *cond)
                for rec in conn.execute(q):
                    if len(out) < k:
                        out[rec.rid] = (rec.type, rec.id, orjson.loads(content_bytes(rec.content) or b"{}"))
    vals = list(out.values())
    rng.shuffle(vals)
    return vals


# -- servers ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``phip serve`` in a subprocess on 127.0.0.1 (its own process group, stopped on exit)."""

    def __init__(self, data: Path, workers: int = 1, port: int | None = None) -> None:
        self.data = data
        self.workers = workers
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = OUT / f"server-{self.port}.log"

    def __enter__(self) -> Server:
        OUT.mkdir(parents=True, exist_ok=True)
        cmd = [str(PHIP), "serve", "--data", str(self.data), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(self.workers)]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        ready = 0
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"phip serve exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    ready += 1
                    # with several workers, give each a moment to import and open the node
                    if ready >= 3 and len(self.pids()) >= self.workers + (1 if self.workers > 1 else 0):
                        time.sleep(1.0)
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"phip serve did not become ready in {timeout}s; see {self.log}")

    def pids(self) -> list[int]:
        """The server's process and its descendants (uvicorn's worker processes)."""
        if self.proc is None:
            return []
        root = self.proc.pid
        kids: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            kids.setdefault(int(fields[1]), []).append(int(d.name))
        out, todo = [], [root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(kids.get(p, []))
        return out

    def rss(self) -> dict[str, Any]:
        """RSS of every server process (MB): total, and anonymous vs file-backed (SQLite mmap)."""
        procs = []
        for p in self.pids():
            try:
                st = Path(f"/proc/{p}/status").read_text()
            except OSError:
                continue
            kv = {ln.split(":")[0]: ln.split(":")[1].strip() for ln in st.splitlines() if ":" in ln}

            def mb(key: str, kv: dict[str, str] = kv) -> float:
                return int(kv.get(key, "0 kB").split()[0]) / 1024

            procs.append({"pid": p, "rss": mb("VmRSS"), "anon": mb("RssAnon"), "file": mb("RssFile"),
                          "hwm": mb("VmHWM")})
        return {"total_mb": sum(x["rss"] for x in procs), "anon_mb": sum(x["anon"] for x in procs),
                "file_mb": sum(x["file"] for x in procs), "processes": procs}

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@contextlib.contextmanager
def node_for(args: Any) -> Iterator[Path]:
    """The loaded node a benchmark runs on (``--data`` or one built for ``--resources``), dropped after."""
    data, created = ensure_loaded(args.backend, args.resources, args.seed, args.data, Path(args.work))
    try:
        yield data
    finally:
        if created and not getattr(args, "keep", False):
            drop_node(data)


def add_node_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, default=None,
                    help="a node already loaded by bench_import.py --keep / common.py load (reused, kept)")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--resources", type=int, default=100_000, help="size of the node to build without --data")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default=str(WORK), help="where generated data and nodes go")
    ap.add_argument("--keep", action="store_true", help="keep the node built here (default: drop it)")


def main() -> None:
    sys.path.insert(0, str(BENCH))
    ap = argparse.ArgumentParser(description="benchmark node helpers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drop", help="drop a benchmark node (folder and PostgreSQL database)")
    d.add_argument("data", type=Path)
    ld = sub.add_parser("load", help="build and load a node, and keep it")
    ld.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ld.add_argument("--resources", type=int, default=100_000)
    ld.add_argument("--seed", type=int, default=1)
    ld.add_argument("--data", type=Path, required=True)
    a = ap.parse_args()
    if a.cmd == "drop":
        drop_node(a.data)
        print(f"dropped {a.data}")
    else:
        from gen import ensure

        node = create_node(a.backend, a.data)
        src = ensure(a.resources, a.seed, WORK / f"data-{a.resources}-s{a.seed}")
        rep, dt = import_dir(node, src)
        node.close()
        mark_loaded(a.data, {"backend": a.backend, "resources": a.resources, "seed": a.seed, "loaded": rep.loaded})
        print(f"loaded {rep.loaded:,} in {dt:.0f}s ({rep.loaded / dt:,.0f}/s) into {a.data}")


if __name__ == "__main__":
    main()
