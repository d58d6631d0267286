"""``phip demo``: a node with a synthetic region, ready to look at, in one command.

Initialises a SQLite node (or reuses the one already in the folder), generates a
synthetic region (:mod:`phip.synth`), imports it with progress, prints what to
open (URLs and an admin token) and serves.  Running it again reuses the node and
its data: nothing is generated or imported twice.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from phip.node.config import NodeConfig
from phip.node.node import Node, init_node

DEMO_REGION = "510000"


def prepare(data: Path, persons: int, seed: int, console: Console, years: int = 1) -> Node:
    """Create (or reuse) the demo node in ``data`` and load its synthetic region."""
    started = time.monotonic()
    if NodeConfig.path(data).exists():
        node = Node.open(data)
        console.print(f"reusing the demo node in {data}")
    else:
        node = init_node(data, level="county", region=DEMO_REGION, name="phip-demo")
        console.print(f"[green]created[/] demo node in {data}")
    _console_assets(console)
    marker = data / ".demo-loaded"
    if marker.exists():
        return node
    from phip.importer.console import import_files
    from phip.importer.loader import collect
    from phip.synth import run as synth_run

    region = data / "synthetic-region"
    if not (region / ".complete").exists():
        if region.exists():  # an interrupted generation: start it again
            import shutil

            shutil.rmtree(region)
        console.print(f"generating a synthetic region of {persons:,} residents over {years} year(s) (seed {seed}) …")
        synth_run(region, persons=persons, seed=seed, years=years, progress=True)
        (region / ".complete").write_text("ok")
        console.print(f"generated in {time.monotonic() - started:.0f} s")
    files = [f for f in collect([region]) if f.suffix == ".ndjson" and "truth" not in f.relative_to(region).parts]
    rep = import_files(node.store, files, console)
    console.print(f"imported {rep.loaded:,} resources from {len(files)} files; rejected {len(rep.rejected)}")
    for r in rep.rejected[:20]:
        console.print(f"  [yellow]rejected[/] {r.file}:{r.line}: {r.reason}")
    marker.write_text(str(rep.loaded))
    console.print(f"ready in {time.monotonic() - started:.0f} s")
    return node


def _console_assets(console: Console) -> None:
    """Fetch the console's scripts (htmx, ECharts) from the npm registry once; without them the
    console still works, without charts."""
    from phip.console import assets

    if all(assets.path(n) is not None for n in assets.NPM):
        return
    console.print("fetching the console's scripts (htmx, ECharts) from the npm registry …")
    for err in assets.fetch():
        console.print(f"  [yellow]not fetched[/] {err}: the console works without charts")


def banner(node: Node, host: str, port: int, console: Console) -> None:
    token = node.tokens.issue("admin", "demo-admin", ttl=7 * 24 * 3600)
    base = f"http://{host}:{port}"
    console.print(Panel.fit(
        f"Console       {base}/console/   (data-quality scorecard: {base}/console/quality)\n"
        f"FHIR API      {base}/fhir\n"
        f"API docs      {base}/docs\n"
        f"Health        {base}/healthz\n\n"
        "Admin token (7 days) below.  Open the console signed in with it:\n"
        f"  {base}/console/login#token=<the token>\n"
        "(or paste the token into the console's login page; accounts: phip user add NAME --data DIR --role manager)\n"
        "Try the API:\n"
        f"  TOKEN=…; curl -H \"Authorization: Bearer $TOKEN\" '{base}/fhir/Patient?_count=5'",
        title=f"phip demo — {node.config.name}",
    ))
    print(token, flush=True)
    print(f"{base}/console/login#token={token}", flush=True)
