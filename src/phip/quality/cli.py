"""``phip quality report|rules|recheck``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Data quality: scorecards and findings.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


def _node(data: Path) -> Any:
    from phip.node.config import NodeError
    from phip.node.node import Node

    try:
        return Node.open(data)
    except NodeError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from None


def _day(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    import re

    if not re.match(r"^\d{4}-\d{2}-\d{2}$", text):
        console.print(f"[bold red]error:[/] {name} must be YYYY-MM-DD, not {text!r}")
        raise typer.Exit(2)
    return int(text.replace("-", ""))


def _pct(v: float | None, thr: float) -> str:
    if v is None:
        return "–"
    s = f"{v * 100:.2f}%"
    return f"[red]{s}[/]" if v < thr else s


@app.command()
def report(
    data: Path = typer.Option(..., "--data", help="The node's data folder."),
    date_from: str | None = typer.Option(None, "--from", help="First receipt day (YYYY-MM-DD)"),
    date_to: str | None = typer.Option(None, "--to", help="Last receipt day (YYYY-MM-DD)"),
    threshold: float | None = typer.Option(None, "--threshold", help="Target rate (default: the rules', 0.98)"),
    as_json: bool = typer.Option(False, "--json", help="Print the scorecard as JSON on stdout"),
) -> None:
    """Rates per dimension per institution, with the threshold and the institutions below it."""
    node = _node(data)
    try:
        sc = node.ext["quality"].scorecard(day_from=_day(date_from, "--from"), day_to=_day(date_to, "--to"),
                                           threshold=threshold)
    finally:
        node.close()
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(sc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    thr = sc["threshold"]
    dims = ("completeness", "conformance", "consistency", "timeliness", "uniqueness", "upload")
    t = Table(title=f"Data quality scorecard (rules {sc['rulesVersion']}, threshold {thr * 100:.0f}%)")
    t.add_column("Institution")
    t.add_column("Received", justify="right")
    for d in dims:
        t.add_column(d.capitalize(), justify="right")
    for r in sc["institutions"]:
        name = f"[red]{r['institution']}[/]" if r["below"] else r["institution"]
        t.add_row(name, f"{r['received']:,}", *[_pct(r["rates"].get(d), thr) for d in dims])
    o = sc["overall"]
    t.add_row("[bold]all[/]", f"{o['received']:,}", *[_pct(o["rates"].get(d), thr) for d in dims[:-1]], "")
    out = Console()
    if not out.is_terminal:  # piped or captured: wide enough for every column
        out = Console(width=160)
    out.print(t)
    below = sc["below"]
    console.print(f"{len(below)} of {len(sc['institutions'])} institutions below {thr * 100:.0f}%"
                  + (f": {', '.join(below)}" if below else ""))


@app.command()
def rules(path: Path | None = typer.Option(None, "--file", help="Validate this rules file instead")) -> None:
    """Validate the rules and list them (id, dimension, resource, element)."""
    from phip.quality import rules as R

    try:
        rs = R.parse(path.read_bytes(), str(path)) if path else R.load()
    except (R.RulesError, OSError) as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from None
    t = Table(title=f"Quality rules {rs.version}")
    for c in ("Rule", "Dimension", "Resource", "Element", "Title"):
        t.add_column(c)
    for r in rs.catalogue.values():
        t.add_row(r.id, r.dimension, r.resource, r.path, r.title)
    Console().print(t)


@app.command()
def recheck(
    data: Path = typer.Option(..., "--data", help="The node's data folder."),
    types: list[str] = typer.Option([], "--type", help="Only these resource types (repeatable)"),
) -> None:
    """Check every stored record again (after editing the rules): resolves and opens findings."""
    import sqlalchemy as sa
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from phip.store import schema as S

    node = _node(data)
    try:
        svc = node.ext["quality"]
        with node.store.read_conn() as conn:
            q = sa.select(sa.func.count()).select_from(S.resources).where(S.resources.c.deleted == sa.false())
            if types:
                q = q.where(S.resources.c.type.in_(types))
            total = conn.execute(q).scalar_one()
        with Progress(TextColumn("recheck"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
            task = bar.add_task("recheck", total=total)
            n = svc.recheck(types or None, on_progress=lambda k: bar.advance(task, k))
    finally:
        node.close()
    console.print(f"[green]rechecked[/] {n:,} records")
