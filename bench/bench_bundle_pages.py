"""Where a transaction Bundle's time goes in the store, and which SQLite B-trees it writes.

Runs ``bench_http``'s transaction Bundles of 20 (a new patient's visit) in this process, straight
through :func:`phip.api.bundles.process` (no HTTP), on a copy of a loaded SQLite node, and prints:

- **CPU per Bundle** over ``--bundles`` Bundles, and the wall time of its parts: the work before the
  write lock (references rewritten, validation, index rows, PREPARE_WRITE hooks), the entries'
  writes with their hooks, each BEFORE_WRITE / AFTER_WRITE hook function, the search index rows
  written at the end of the transaction, and the commit;
- **pages written per Bundle, by B-tree**: for ``--pages`` more Bundles, the WAL is emptied before
  each and read after it (a frame header names its page), and the pages are mapped to their table or
  index with SQLite's ``dbstat``.  Every page a commit writes is written a second time when the WAL is
  checkpointed, so these are what the commit and the checkpointer cost; a random key in a big index
  costs about one page a row, rows appended at a table's end share pages.

The node is copied first (``--data`` is not changed).  Run:

    python bench/bench_bundle_pages.py --data /tmp/phip-bench/node-sqlite-100k [--bundles 300] [--pages 20]
"""

from __future__ import annotations

import argparse
import collections
import functools
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from bench_http import node_bundles

WAL_HEADER = 32
FRAME_HEADER = 24


def _timed(acc: collections.Counter[str], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[name] += time.perf_counter() - t

    return wrapper


def wal_pages(wal: Path, page_size: int) -> set[int]:
    """The page numbers of the valid frames in a WAL file: those that carry the salts of its header
    (a checkpoint that restarts the log leaves the older frames behind, with older salts)."""
    data = wal.read_bytes() if wal.exists() else b""
    out: set[int] = set()
    if len(data) < WAL_HEADER:
        return out
    salts = data[16:24]
    off = WAL_HEADER
    while off + FRAME_HEADER + page_size <= len(data):
        if data[off + 8:off + 16] != salts:
            break
        out.add(struct.unpack(">I", data[off:off + 4])[0])
        off += FRAME_HEADER + page_size
    return out


def empty_wal(raw: sqlite3.Connection, wal: Path) -> None:
    """Checkpoint the WAL and truncate it to nothing (retried while a reader or the node's own
    checkpointer is busy with it)."""
    for _ in range(200):
        busy = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy == 0 and (not wal.exists() or wal.stat().st_size == 0):
            return
        time.sleep(0.01)
    raise RuntimeError("the WAL could not be emptied before a Bundle")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a loaded SQLite node (bench_import.py --keep DIR)")
    ap.add_argument("--bundles", type=int, default=300, help="Bundles timed")
    ap.add_argument("--pages", type=int, default=20, help="Bundles whose written pages are counted")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    common.require_sqlite_folder(a.data, "the pages counted are SQLite's")
    print(common.describe(), flush=True)
    with tempfile.TemporaryDirectory(prefix="phip-bundle-pages-", dir=common.WORK.parent) as tmp:
        data = Path(tmp) / "node"
        shutil.copytree(a.data, data)
        node = common.open_node(data)
        warm = 10
        bodies = [orjson.loads(b) for b in node_bundles(node.store, warm + a.bundles + a.pages, a.seed)]
        from phip.api import bundles
        from phip.store import repository as R

        repo = node.store.repository()
        base = "http://127.0.0.1/fhir"

        def get(*_a: Any) -> dict[str, Any]:
            raise AssertionError("the Bundles hold no reads")

        for b in bodies[:warm]:
            bundles.process(repo, b, base, get, raw=True)

        # -- time ------------------------------------------------------------------------------------------
        acc: collections.Counter[str] = collections.Counter()
        saved = (bundles._precheck, bundles._one, R.insert_index_rows, dict(node.store.hooks._fns))
        bundles._precheck = _timed(acc, "before the write lock (rewrite, validate, index, prepare)",
                                   bundles._precheck)
        bundles._one = _timed(acc, "the entries' writes (with their hooks)", bundles._one)
        R.insert_index_rows = _timed(acc, "search index rows (at the end of the transaction)", R.insert_index_rows)
        for point, fns in list(node.store.hooks._fns.items()):
            node.store.hooks._fns[point] = [
                (_timed(acc, f"  hook {point.value}: {getattr(fn, '__qualname__', repr(fn))}", fn), on_import)
                for fn, on_import in fns]
        from sqlalchemy.engine import default  # (the driver's commit is a C method: timed around its caller)

        commit0 = default.DefaultDialect.do_commit
        default.DefaultDialect.do_commit = _timed(acc, "commit", commit0)  # type: ignore[method-assign]
        cpu, wall = time.process_time(), time.perf_counter()
        for b in bodies[warm:warm + a.bundles]:
            orjson.dumps(bundles.process(repo, b, base, get, raw=True))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        default.DefaultDialect.do_commit = commit0  # type: ignore[method-assign]
        bundles._precheck, bundles._one, R.insert_index_rows, fns0 = saved
        node.store.hooks._fns.clear()
        node.store.hooks._fns.update(fns0)
        n = a.bundles
        print(f"\n{n} transaction Bundles of 20 in-process: CPU {cpu / n * 1000:.1f} ms a Bundle, wall "
              f"{wall / n * 1000:.1f} ms ({n / wall:.1f}/s in one thread; target over HTTP ≥ 100/s)")
        for k, v in sorted(acc.items(), key=lambda kv: (kv[0].startswith("  "), -kv[1])):
            if v / n >= 0.00001:
                print(f"  {v / n * 1000:6.2f} ms  {k}")

        # -- pages ------------------------------------------------------------------------------------------
        db = Path(node.store.engine.url.database or "")
        wal = db.with_name(db.name + "-wal")
        raw = sqlite3.connect(db)
        page_size = int(raw.execute("PRAGMA page_size").fetchone()[0])
        written: collections.Counter[int] = collections.Counter()
        for b in bodies[warm + a.bundles:]:
            empty_wal(raw, wal)
            bundles.process(repo, b, base, get, raw=True)
            for p in wal_pages(wal, page_size):
                written[p] += 1
        node.close()
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        try:
            owner = dict(raw.execute("SELECT pageno, name FROM dbstat"))
        except sqlite3.OperationalError:  # a Python whose SQLite lacks dbstat
            owner = {}
        raw.close()
        by: collections.Counter[str] = collections.Counter()
        for p, k in written.items():
            by[owner.get(p, "(dbstat not available)" if not owner else "(freed since)")] += k
        m = a.pages
        total = sum(by.values()) / m
        print(f"\npages written per Bundle ({m} Bundles, {page_size}-byte pages): {total:.0f} "
              f"({total * page_size / 1e6:.1f} MB into the WAL, the same again at the checkpoint)")
        for name, k in by.most_common():
            if k / m >= 1:
                print(f"  {k / m:6.1f}  {name}")
        common.save("bundle_pages.json", {"machine": common.describe(), "bundles": n,
                                          "cpu_ms": cpu / n * 1000, "wall_ms": wall / n * 1000,
                                          "parts_ms": {k.strip(): v / n * 1000 for k, v in acc.items()},
                                          "pages_per_bundle": total,
                                          "pages_by_btree": {k: v / m for k, v in by.items()}})


if __name__ == "__main__":
    main()
