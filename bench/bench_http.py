"""HTTP throughput of ``phip serve`` on a loaded node: reads by id and transaction bundles.

For each ``--workers`` value (default ``1,2``) it starts ``phip serve`` (a subprocess on
127.0.0.1, a free port) on the node and measures:

- **read by id**: ``GET /fhir/<type>/<id>`` of ids drawn at random from the stored resources
  (all types, in their stored proportions), closed loop with ``--connections`` connections for
  ``--duration`` seconds after a short warm-up; requests/s and p50/p90/p99/max latency.  The
  load generator is ``wrk`` (a Lua script picks a random path per request) when it is installed,
  else a small asyncio + httpx client (``--client httpx``), which costs far more CPU per request.
- **transaction bundles**: POSTs of a transaction Bundle of 20 new resources (a new patient's
  visit: Patient, 2 Encounters, Observations, Condition, MedicationRequests, Immunization,
  ``urn:uuid`` references) from 1, then 4 concurrent connections (``--bundle-clients``); bundles/s,
  resources/s and latency.  Bundles are built and serialised before the clock starts, and each is
  posted once.  With ``wrk``: ``--bundle-seconds`` (10) a measurement, every response checked (a
  200 Bundle with 20 entries ``201``); without it (or ``--bundle-seconds 0``), ``--bundles`` posts
  from asyncio + httpx clients.
- **RSS** of the server processes (``/proc/<pid>/status``: total, anonymous, file-backed — SQLite's
  mmap counts as file-backed) when idle before the load, and idle again after it.

The client runs on the same 2 cores as the server: the CPU seconds of the server and of the load
generator during each measurement are printed, so the share is visible.

Run: ``python bench/bench_http.py --data DIR`` (a node kept by ``bench_import.py --keep DIR``), or
``python bench/bench_http.py --backend sqlite --resources 100000`` to build one for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import gen

READ_TARGET = 1500  # requests/s
READ_P99_MS = 10.0
BUNDLE_TARGET = 100  # bundles/s
#: bundles made for each second of a wrk bundle run (each is posted once; more than any rate seen)
BUNDLE_BODIES_PER_S = 250

WRK_LUA = r"""
local paths = {}
local auth = nil
local counter = 0

function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  auth = "Bearer " .. args[2]
  math.randomseed(tonumber(args[3]) + counter)
end

function request()
  local p = paths[math.random(#paths)]
  return wrk.format("GET", p, {["Authorization"] = auth, ["Accept"] = "application/fhir+json"})
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%f,' ..
    '"status_errors":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
end
"""


#: transaction bundles from a file (one JSON document a line), each posted once; when they run out, a
#: GET /healthz stands in (counted as ``spare``: then the run had too few bundles for its duration)
WRK_BUNDLE_LUA = r"""
local bodies = {}
local auth = nil
local next_i = 1
ok, bad, entries, spare = 0, 0, 0, 0  -- globals: done() reads them through thread:get
first_bad = ""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  auth = "Bearer " .. args[2]
end

function request()
  if next_i > #bodies then
    return wrk.format("GET", "/healthz", {})
  end
  local b = bodies[next_i]
  next_i = next_i + 1
  return wrk.format("POST", "/fhir", {["Authorization"] = auth, ["Content-Type"] = "application/fhir+json",
                                      ["Accept"] = "application/fhir+json"}, b)
end

function response(status, headers, body)
  if string.sub(body, 1, 1) ~= "{" or string.find(body, '"resourceType":"Bundle"', 1, true) == nil then
    if status == 200 then
      spare = spare + 1
    else
      bad = bad + 1
      if first_bad == "" then first_bad = status .. " " .. string.sub(body, 1, 300) end
    end
    return
  end
  local _, n = string.gsub(body, '"status":"201', "")
  if status == 200 and n == 20 then
    ok = ok + 1
    entries = entries + n
  else
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body, 1, 300) end
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%f,' ..
    '"ok":%d,"bad":%d,"spare":%d,"status_errors":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, t:get("ok"), t:get("bad"), t:get("spare"), summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
  io.write("WRKBAD " .. t:get("first_bad") .. "\n")
end
"""


def proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tck
        except (OSError, IndexError):
            pass
    return total


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# -- reads ----------------------------------------------------------------------------------------------
def reads_wrk(srv: common.Server, paths_file: Path, token: str, connections: int, duration: int,
              threads: int) -> dict[str, Any]:
    lua = common.OUT / "read_by_id.lua"
    lua.write_text(WRK_LUA)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s",
           "-s", str(lua), srv.base, "--", str(paths_file), token, str(random.randrange(1 << 20))]
    w, _stdout, server_cpu, client_cpu = _run_wrk(srv, cmd, duration + 60)
    secs = w["duration_us"] / 1e6
    errors = w["status_errors"] + w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"]
    return {"client": "wrk", "connections": connections, "seconds": secs, "requests": w["requests"],
            "rps": w["requests"] / secs, "p50_ms": w["p50"] / 1000, "p90_ms": w["p90"] / 1000,
            "p99_ms": w["p99"] / 1000, "max_ms": w["max"] / 1000, "mean_ms": w["mean"] / 1000, "errors": errors,
            "server_cpu_s": server_cpu, "client_cpu_s": client_cpu}


def _run_wrk(srv: common.Server, cmd: list[str], timeout: int) -> tuple[dict[str, Any], str, float, float]:
    """Run wrk (its Lua script prints a ``WRKJSON {…}`` line): that JSON, wrk's output, and the CPU
    seconds the server's processes and wrk used meanwhile."""
    s0, c0 = proc_cpu(srv.pids()), children_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    s1, c1 = proc_cpu(srv.pids()), children_cpu()
    m = re.search(r"WRKJSON (\{.*\})", out.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    return orjson.loads(m.group(1)), out.stdout, s1 - s0, c1 - c0


def reads_httpx(srv: common.Server, paths: list[str], token: str, connections: int, duration: int,
                max_requests: int = 200_000) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration
    rng = random.Random(11)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < deadline and len(lat) < max_requests:
            p = paths[rng.randrange(len(paths))]
            t = time.perf_counter()
            r = await client.get(p)
            lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors += 1

    async def run() -> float:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=srv.base, limits=limits, timeout=10,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            t = time.perf_counter()
            await asyncio.gather(*[worker(client) for _ in range(connections)])
            return time.perf_counter() - t

    s0, c0 = proc_cpu(srv.pids()), time.process_time()
    secs = asyncio.run(run())
    s1, c1 = proc_cpu(srv.pids()), time.process_time()
    st = common.summary_ms(lat)
    return {"client": "httpx", "connections": connections, "seconds": secs, "requests": len(lat),
            "rps": len(lat) / secs, "p50_ms": st["p50"], "p90_ms": common.pct([x * 1000 for x in lat], 90),
            "p99_ms": st["p99"], "max_ms": st["max"], "mean_ms": st["mean"], "errors": errors,
            "server_cpu_s": s1 - s0, "client_cpu_s": c1 - c0}


# -- bundles ---------------------------------------------------------------------------------------------
def make_bundles(n: int, seed: int, orgs: list[str], pracs: list[str], *, raw: bool = False) -> list[bytes]:
    """The bundles of a live EMR feed, as a hospital whose records meet the national dataset's
    required elements posts today's visits: every event of a bundle falls within the last 12 hours,
    in its order (so the data-quality timeliness rules judge them on time), and each record carries
    the elements the quality engine's completeness rules ask of it that ``gen`` leaves out (the
    encounter's department, the diagnosing doctor, the injection site).  ``raw``: ``gen``'s bundles
    as they are, the latest event an hour ago (about 15 findings, hence 15 Tasks, a bundle)."""
    g = gen.Gen(20 * n, seed + 1000)
    if orgs:
        g.orgs = orgs
    if pracs:
        g.pracs = pracs
    now = datetime.now(UTC) - timedelta(hours=1)
    if raw:
        return [orjson.dumps(_live(g.visit_bundle(k), now, None)) for k in range(n)]
    return [orjson.dumps(_compliant(_live(g.visit_bundle(k), now, timedelta(hours=12)))) for k in range(n)]


def node_bundles(store: Any, n: int, seed: int, *, raw: bool = False) -> list[bytes]:
    """:func:`make_bundles` for the Organizations and Practitioners stored in a node."""
    orgs = [i for _t, i, _r in common.sample_rows(store, "Organization", 50)]
    pracs = [i for _t, i, _r in common.sample_rows(store, "Practitioner", 200)]
    return make_bundles(n, seed, orgs, pracs, raw=raw)


_DT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _live(bundle: dict[str, Any], end: datetime, span: timedelta | None) -> dict[str, Any]:
    """Move every dateTime of the bundle so that the latest is ``end``: by one delta (``span``
    None), or into the ``span`` before ``end``, order kept (a bundle whose events are further apart
    is compressed)."""
    found: list[datetime] = []

    def walk(v: Any, fn: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x, fn) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, fn) for x in v]
        if isinstance(v, str) and _DT.match(v):
            return fn(v)
        return v

    walk(bundle, lambda v: found.append(datetime.fromisoformat(v.replace("Z", "+00:00"))) or v)
    if not found:
        return bundle
    last = max(found)
    width = last - min(found)
    scale = 1.0 if span is None or width <= span else span / width

    def move(v: str) -> str:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        return (end - (last - t) * scale).isoformat()

    return walk(bundle, move)  # type: ignore[no-any-return]


def _compliant(bundle: dict[str, Any]) -> dict[str, Any]:
    """Add what the completeness rules require and ``gen``'s visit records lack."""
    entries = bundle["entry"]
    doctor = {e["fullUrl"]: e["resource"].get("participant", [{}])[0].get("individual")
              for e in entries if e["resource"]["resourceType"] == "Encounter"}
    for e in entries:
        r = e["resource"]
        if r["resourceType"] == "Encounter":
            r.setdefault("serviceType", {"coding": [{"system": "urn:phip:cs:department", "code": "03",
                                                     "display": "内科"}], "text": "内科"})
        elif r["resourceType"] == "Condition" and "recorder" not in r:
            who = doctor.get((r.get("encounter") or {}).get("reference", ""))
            if who:
                r["recorder"] = who
        elif r["resourceType"] == "Immunization":
            r.setdefault("site", {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActSite",
                                              "code": "LA", "display": "left arm"}]})
    return bundle


def post_bundles(srv: common.Server, bodies: list[bytes], token: str, clients: int,
                 time_limit: float = 300) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    failures: list[str] = []
    queue = list(reversed(bodies))
    deadline = time.monotonic() + time_limit

    async def worker(client: httpx.AsyncClient) -> None:
        while queue and time.monotonic() < deadline:
            body = queue.pop()
            t = time.perf_counter()
            r = await client.post("/fhir", content=body)
            lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:300]}")
                continue
            statuses = [e.get("response", {}).get("status", "") for e in r.json().get("entry", [])]
            if len(statuses) != 20 or not all(s.startswith("201") for s in statuses):
                failures.append(f"entry statuses {statuses[:3]}…")

    async def run() -> float:
        async with httpx.AsyncClient(base_url=srv.base, timeout=60, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}) as client:
            t = time.perf_counter()
            await asyncio.gather(*[worker(client) for _ in range(clients)])
            return time.perf_counter() - t

    s0, c0 = proc_cpu(srv.pids()), time.process_time()
    secs = asyncio.run(run())
    s1, c1 = proc_cpu(srv.pids()), time.process_time()
    st = common.summary_ms(lat)
    done = len(lat)
    return {"clients": clients, "bundles": done, "seconds": secs, "bundles_per_s": done / secs,
            "resources_per_s": 20 * done / secs, "p50_ms": st["p50"], "p99_ms": st["p99"], "max_ms": st["max"],
            "failures": len(failures), "first_failures": failures[:3], "server_cpu_s": s1 - s0,
            "client_cpu_s": c1 - c0}


def post_bundles_wrk(srv: common.Server, bodies: list[bytes], token: str, clients: int,
                     duration: int) -> dict[str, Any]:
    """Transaction bundles from wrk (C: a fraction of httpx's CPU on the cores the server shares):
    ``clients`` connections for ``duration`` seconds, each bundle posted once; every response must
    be a 200 Bundle with 20 entries ``201``."""
    lua = common.OUT / "bundles.lua"
    lua.write_text(WRK_BUNDLE_LUA)
    body_file = common.OUT / "bundles.ndjson"
    body_file.write_bytes(b"\n".join(bodies) + b"\n")
    cmd = ["wrk", "-t", "1", "-c", str(clients), "-d", f"{duration}s", "--timeout", "30s", "-s", str(lua),
           srv.base, "--", str(body_file), token]
    w, stdout, server_cpu, client_cpu = _run_wrk(srv, cmd, duration + 120)
    bad = re.search(r"WRKBAD (.*)", stdout)
    secs = w["duration_us"] / 1e6
    errors = w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"]
    done = w["ok"]
    failures = w["bad"] + errors
    first = [bad.group(1)] if bad and bad.group(1).strip() else []
    if w["spare"]:
        failures += 1
        first.append(f"the {len(bodies)} bundles ran out before {duration}s: {w['spare']} stand-in requests")
    return {"client": "wrk", "clients": clients, "bundles": done, "seconds": secs, "bundles_per_s": done / secs,
            "resources_per_s": 20 * done / secs, "p50_ms": w["p50"] / 1000, "p99_ms": w["p99"] / 1000,
            "max_ms": w["max"] / 1000, "failures": failures, "first_failures": first[:3],
            "server_cpu_s": server_cpu, "client_cpu_s": client_cpu}


# -- server-side profile -----------------------------------------------------------------------------------
def profile_server_main(data: str, port: int, out: str) -> None:
    """(subprocess) uvicorn in this process under cProfile until SIGTERM; sync endpoints run on the
    event-loop thread (not the thread pool) so that the one profiler sees all the work."""
    import cProfile

    import anyio.to_thread

    async def run_sync(func: Any, *args: Any, **_kw: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]
    os.environ["PHIP_DATA"] = data
    import uvicorn

    from phip.api.server import app

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    import signal

    # uvicorn re-raises the signal it stopped on once it has shut down: make that a no-op here
    signal.signal(signal.SIGTERM, lambda *_a: None)
    prof = cProfile.Profile()
    prof.enable()
    server.run()
    prof.disable()
    prof.dump_stats(out)


def profile_phase(data: Path, phase: str, paths_file: Path, token: str, bodies: list[bytes],
                  seconds: int, top: int = 15) -> str:
    import io
    import pstats
    import signal

    port = common.free_port()
    stats = common.OUT / f"profile_{phase}.pstats"
    stats.unlink(missing_ok=True)
    log = (common.OUT / f"profile-server-{phase}.log").open("wb")
    proc = subprocess.Popen([sys.executable, __file__, "--_profile-server", str(data), str(port), str(stats)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    srv = common.Server(data, port=port)
    srv.proc = proc  # type: ignore[assignment]
    try:
        srv.wait_ready()
        if phase == "read":
            r = reads_wrk(srv, paths_file, token, 8, seconds, 1)
            what = f"{r['requests']:,} reads by id in {r['seconds']:.0f}s ({r['rps']:,.0f}/s under the profiler)"
        else:
            b = post_bundles(srv, bodies, token, 4, time_limit=seconds * 4)
            what = f"{b['bundles']} transaction bundles of 20 ({b['bundles_per_s']:.1f}/s under the profiler)"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    buf = io.StringIO()
    buf.write(f"cProfile of phip serve (1 process, endpoints on the loop thread) over {what}\n\n")
    st = pstats.Stats(str(stats), stream=buf)
    st.strip_dirs()
    buf.write(f"== top {top} by cumulative time ==\n")
    st.sort_stats("cumulative").print_stats(top)
    buf.write(f"\n== top {top} by own (total) time ==\n")
    st.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# -- in-process cost per layer ---------------------------------------------------------------------------
def layers(data: Path, paths: list[str], token: str, n: int = 2000) -> dict[str, float]:
    """CPU µs per read by id: the repository alone, and the whole ASGI app (middleware, routing,
    thread-pool hop, rendering) called directly, without sockets or HTTP parsing."""
    from phip.api.app import create_app

    node = common.open_node(data)
    repo = node.store.repository()
    keys = [tuple(p.split("/")[2:4]) for p in paths[:n]]
    out: dict[str, float] = {}
    for t, i in keys[:100]:
        repo.read(t, i)
    c = time.process_time()
    for t, i in keys:
        repo.read(t, i)
    out["repository_read_us"] = (time.process_time() - c) / len(keys) * 1e6
    app = create_app(node)
    auth = f"Bearer {token}".encode()

    async def call(path: str) -> int:
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
                 "client": ("127.0.0.1", 9), "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)
        return status

    async def run(ps: list[str]) -> None:
        for p in ps:
            if await call(p) != 200:
                raise RuntimeError(f"in-process GET {p} failed")

    asyncio.run(run(paths[:100]))
    c = time.process_time()
    asyncio.run(run(paths[:n]))
    out["asgi_app_read_us"] = (time.process_time() - c) / n * 1e6
    node.close()
    return out


def fmt_rss(r: dict[str, Any]) -> str:
    per = ", ".join(f"{p['pid']}: {p['rss']:.0f}" for p in r["processes"])
    return (f"{r['total_mb']:.0f} MB total (anon {r['anon_mb']:.0f}, file-backed {r['file_mb']:.0f}; "
            f"per process MB {per})")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--_profile-server":
        profile_server_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    ap = argparse.ArgumentParser(description="phip serve: read-by-id and transaction bundle throughput")
    common.add_node_args(ap)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    ap.add_argument("--connections", default="8", help="comma-separated connection counts for reads")
    ap.add_argument("--duration", type=int, default=15, help="seconds per read measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto")
    ap.add_argument("--bundles", type=int, default=300, help="transaction bundles per worker setting")
    ap.add_argument("--bundle-seconds", type=int, default=10,
                    help="with wrk: seconds per bundle measurement (0: the httpx client and --bundles)")
    ap.add_argument("--raw-bundles", action="store_true",
                    help="post gen's visit bundles as they are (events up to years apart, elements the quality "
                         "rules require missing: ~15 findings and Tasks a bundle) instead of a compliant live feed")
    ap.add_argument("--bundle-clients", default="1,4",
                    help="comma-separated numbers of concurrent clients (the bundles are split between them)")
    ap.add_argument("--ids", type=int, default=20_000, help="how many random ids to read from")
    ap.add_argument("--tag", default=None, help="suffix of the results file name")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile the server over reads and over bundles (needs wrk; bench/out/profile_*.txt)")
    ap.add_argument("--profile-only", action="store_true", help="only the profiles")
    a = ap.parse_args()
    use_wrk = a.client == "wrk" or (a.client == "auto" and shutil.which("wrk") is not None)
    if a.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk), use --client httpx")

    with common.node_for(a) as data:
        info = common.loaded_info(data) or {}
        node = common.open_node(data)
        sample = common.sample_rows(node.store, None, a.ids)
        orgs = [i for _t, i, _r in common.sample_rows(node.store, "Organization", 50)]
        pracs = [i for _t, i, _r in common.sample_rows(node.store, "Practitioner", 200)]
        node.close()
        paths = [f"/fhir/{t}/{i}" for t, i, _r in sample]
        paths_file = common.OUT / "read_paths.txt"
        common.OUT.mkdir(parents=True, exist_ok=True)
        paths_file.write_text("\n".join(paths) + "\n")
        token = common.admin_token(data)
        workers = [int(x) for x in a.workers.split(",")]
        conns = [int(x) for x in a.connections.split(",")]
        bclients = [int(x) for x in a.bundle_clients.split(",")]
        bundles_all = make_bundles(a.bundles * len(workers), a.seed, orgs, pracs, raw=a.raw_bundles)
        print(f"phip HTTP benchmark — node {data} ({info.get('backend')}, {info.get('loaded', '?'):,} resources), "
              f"read client {'wrk' if use_wrk else 'asyncio+httpx'}, {common.describe()}", flush=True)
        print("note: client and server share the 2 cores; CPU seconds of each are shown per measurement")
        results: dict[str, Any] = {"node": str(data), "info": info, "machine": common.machine(),
                                   "client": "wrk" if use_wrk else "httpx", "runs": []}
        lay = layers(data, paths, token)
        results["layers"] = lay
        print(f"in-process CPU per read by id: repository {lay['repository_read_us']:.0f} µs, whole ASGI app "
              f"(no sockets/HTTP parsing) {lay['asgi_app_read_us']:.0f} µs — 1,500/s on 2 cores leaves ≤ 1,300 µs "
              f"per request for server + client", flush=True)
        if a.profile or a.profile_only:
            extra = make_bundles(60, a.seed + 7, orgs, pracs, raw=a.raw_bundles)
            for phase in ("read", "bundle"):
                text = profile_phase(data, phase, paths_file, token, extra, 10)
                p = common.OUT / f"profile_{phase}_{info.get('backend')}.txt"
                p.write_text(text)
                print(f"\nprofile of {phase} → {p}")
                print(text.split("\n\n", 1)[1][:6000])
            if a.profile_only:
                return
        for wi, w in enumerate(workers):
            with common.Server(data, workers=w) as srv:
                time.sleep(2)
                run: dict[str, Any] = {"workers": w, "rss_idle_start": srv.rss(), "reads": []}
                print(f"\n== phip serve --workers {w} (pid {srv.proc.pid if srv.proc else '?'}) ==")
                print(f"RSS idle at start: {fmt_rss(run['rss_idle_start'])}", flush=True)
                for c in conns:
                    if use_wrk:
                        reads_wrk(srv, paths_file, token, c, a.warmup, a.wrk_threads)
                        r = reads_wrk(srv, paths_file, token, c, a.duration, a.wrk_threads)
                    else:
                        reads_httpx(srv, paths, token, c, a.warmup)
                        r = reads_httpx(srv, paths, token, c, a.duration)
                    run["reads"].append(r)
                    ok = r["rps"] >= READ_TARGET and r["p99_ms"] < READ_P99_MS
                    print(f"read by id, {c} connections: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                          f"p90 {r['p90_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms, "
                          f"errors {r['errors']} ({r['requests']:,} requests in {r['seconds']:.1f}s; CPU server "
                          f"{r['server_cpu_s']:.1f}s, client {r['client_cpu_s']:.1f}s) — target ≥ {READ_TARGET:,}/s "
                          f"p99 < {READ_P99_MS:.0f} ms: {'MET' if ok else 'NOT MET'}", flush=True)
                chunk = bundles_all[wi * a.bundles : (wi + 1) * a.bundles]
                if chunk:
                    post_bundles(srv, chunk[:10], token, 1)  # warm-up
                chunk = chunk[10:]
                per = len(chunk) // len(bclients)
                run["bundles"] = []
                for k, nc in enumerate(bclients if per else []):
                    if use_wrk and a.bundle_seconds > 0:
                        # enough distinct bundles for the run at up to BUNDLE_BODIES_PER_S, each posted once
                        bodies = make_bundles(a.bundle_seconds * BUNDLE_BODIES_PER_S,
                                              a.seed + 1000 * (wi * len(bclients) + k + 1), orgs, pracs,
                                              raw=a.raw_bundles)
                        b = post_bundles_wrk(srv, bodies, token, nc, a.bundle_seconds)
                    else:
                        b = post_bundles(srv, chunk[k * per : (k + 1) * per], token, nc)
                    run["bundles"].append(b)
                    print(f"transaction bundles of 20, {nc} client(s) ({b.get('client', 'httpx')}): "
                          f"{b['bundles_per_s']:,.1f} bundles/s "
                          f"({b['resources_per_s']:,.0f} resources/s), p50 {b['p50_ms']:.0f} ms, p99 "
                          f"{b['p99_ms']:.0f} ms, {b['bundles']} bundles in {b['seconds']:.1f}s, failures "
                          f"{b['failures']} (CPU server {b['server_cpu_s']:.1f}s, client {b['client_cpu_s']:.1f}s) — "
                          f"target ≥ {BUNDLE_TARGET}/s: {'MET' if b['bundles_per_s'] >= BUNDLE_TARGET else 'NOT MET'}",
                          flush=True)
                    for f in b["first_failures"]:
                        print(f"  failure: {f}")
                time.sleep(5)
                run["rss_idle_after"] = srv.rss()
                print(f"RSS idle after the load: {fmt_rss(run['rss_idle_after'])} — target < 500 MB: "
                      f"{'MET' if run['rss_idle_after']['total_mb'] < 500 else 'NOT MET'}", flush=True)
                results["runs"].append(run)
        tag = f"_{a.tag}" if a.tag else ""
        out = common.save(f"http_{info.get('backend')}_{info.get('resources')}{tag}.json", results)
        print(f"\nresults → {out}")


if __name__ == "__main__":
    main()
