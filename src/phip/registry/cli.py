"""``phip registry …``: rebuild the population index, population counts, health-card revocation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Population registry, institution registries, electronic health code.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)
DataOpt = typer.Option(..., "--data", help="The node's data folder.")


def _open(data: Path) -> Any:
    from phip.node.config import NodeError
    from phip.node.node import Node

    try:
        return Node.open(data)
    except NodeError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from None


@app.command()
def reindex(data: Path = DataOpt) -> None:
    """Rebuild the population index from the registry authorities' Patients."""
    node = _open(data)
    try:
        with Progress(TextColumn("[bold]population index"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("index", total=None)
            n = node.ext["registry"].index.rebuild(
                progress=lambda done, total: progress.update(task, completed=done, total=total))
        console.print(f"{n} residents indexed")
    finally:
        node.close()


@app.command()
def population(
    data: Path = DataOpt,
    region: str = typer.Option("", "--region", help="GB/T 2260 code or prefix (5101 = 成都市)"),
    by: str = typer.Option("", "--by", help="sex, age, province, prefecture, county, township (comma-separated)"),
    bands: str = typer.Option("", "--bands", help="age band lower bounds, e.g. 0,15,65"),
    as_of: str = typer.Option("", "--as-of", help="date for ages (default today)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Population counts of current residents, as GET /registry/population."""
    from phip.fhir.errors import FhirError
    from phip.registry.population import parse_query
    from phip.registry.population import population as count

    node = _open(data)
    try:
        try:
            res = count(node.store, parse_query(region or None, by or None, bands or None, as_of or None))
        except FhirError as e:
            console.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(2) from None
    finally:
        node.close()
    if json_out:
        typer.echo(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"{res['regionName'] or res['region'] or 'all regions'} — {res['total']} residents "
                        f"(as of {res['asOf']})")
    for d in res["by"]:
        table.add_column(d)
    table.add_column("count", justify="right")
    for cell in res["cells"]:
        table.add_row(*[str(cell.get(d + "Name", cell[d])) if d not in ("sex", "age") else str(cell[d])
                        for d in res["by"]], str(cell["count"]))
    Console().print(table)


@app.command("revoke-card")
def revoke_card(
    card: str = typer.Argument(..., help="the health-card number"),
    data: Path = DataOpt,
    reason: str = typer.Option("", "--reason", help="why (lost, replaced, …)"),
) -> None:
    """Revoke an electronic health card."""
    from phip.fhir.errors import FhirError

    node = _open(data)
    try:
        res = node.ext["registry"].cards.revoke(card, reason, "cli")
    except FhirError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    finally:
        node.close()
    console.print(f"card {card}: revoked" + ("" if res["changed"] else " (already)"))
