"""``phip terminology …``: load code tables, register local codes, look codes up, list unmapped codes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

app = typer.Typer(help="Terminology: code tables, value sets, concept maps, local code mapping.",
                  no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
DataOpt = typer.Option(..., "--data", help="The node's data folder.")


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def _node(data: Path) -> Iterator[Any]:
    from phip.node.config import NodeError
    from phip.node.node import Node

    try:
        node = Node.open(data)
    except NodeError as e:
        _fail(str(e))
    try:
        yield node
    finally:
        node.close()


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(label, total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield step


def _report(report: Any) -> None:
    console.print(f"[green]{report.summary()}[/]")


def _guard(fn: Callable[[], Any]) -> Any:
    from phip.fhir.errors import FhirError

    try:
        return fn()
    except FhirError as e:
        _fail("; ".join(i.diagnostics for i in e.issues))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError) as e:
        _fail(str(e))


@app.command()
def load(
    data: Path = DataOpt,
    source: Path | None = typer.Option(None, "--source", help="Also load the FHIR resources (JSON, Bundle, NDJSON) "
                                                               "in this folder: corrected or regional tables"),
    force: bool = typer.Option(False, "--force", help="Rewrite the shipped tables even if loaded at this version"),
) -> None:
    """Load the shipped code tables (GB/T, WS 364, ICD-10, notifiable diseases, vaccines, UCUM, …)."""
    from phip.terminology.loader import load_dir, load_shipped

    with _node(data) as node:
        with _progress("shipped tables") as step:
            _report(_guard(lambda: load_shipped(node.store, force=force, progress=step)))
        if source is not None:
            if not source.is_dir():
                _fail(f"--source {source} is not a folder")
            with _progress(f"{source}") as step:
                _report(_guard(lambda: load_dir(node.store, source, progress=step)))


@app.command("load-icd10")
def load_icd10(
    file: Path = typer.Argument(..., help="CSV/TSV with code,name[,parent] (or 编码,名称)"),
    data: Path = DataOpt,
    version: str = typer.Option(..., "--version", help="Edition label, e.g. 国家临床版2.0"),
    title: str | None = typer.Option(None, "--title"),
    effective: str | None = typer.Option(None, "--effective", help="Date in force (YYYY-MM-DD); default today"),
) -> None:
    """Load a national clinical edition of ICD-10; it becomes the current urn:oid:2.16.156.10011.2.3.3.11."""
    from phip.terminology.loader import load_icd10 as run

    with _node(data) as node:
        _report(_guard(lambda: run(node.store, file, version=version, title=title, effective=effective)))


@app.command("load-drugs")
def load_drugs(
    file: Path = typer.Argument(..., help="CSV/TSV with code,name[,atc,category,dosage_form]"),
    data: Path = DataOpt,
    version: str = typer.Option(..., "--version", help="Edition of the list, e.g. 2018"),
) -> None:
    """Load an essential-drug list (国家基本药物目录) as urn:phip:cs:essential-drug."""
    from phip.terminology.loader import load_drugs as run

    with _node(data) as node:
        _report(_guard(lambda: run(node.store, file, version=version)))


@app.command("load-divisions")
def load_divisions(
    file: Path = typer.Argument(..., help="CSV with code,name,valid_from,valid_to,successor[,successor_name]"),
    data: Path = DataOpt,
    version: str = typer.Option(..., "--version", help="Edition label of the history"),
) -> None:
    """Load GB/T 2260 history: retired division codes and their successors."""
    from phip.terminology.loader import load_divisions as run

    with _node(data) as node:
        _report(_guard(lambda: run(node.store, file, version=version)))


@app.command("load-local")
def load_local(
    file: Path = typer.Argument(..., help="CSV: institution,domain,system,code,display,std_system,std_code "
                                          "(e.g. a synthetic region's truth/local_codes.csv)"),
    data: Path = DataOpt,
    institution: str | None = typer.Option(None, "--institution", help="Only this institution's rows"),
) -> None:
    """Register institutions' local code systems and their maps to the standard codes."""
    from phip.terminology.loader import load_local as run

    with _node(data) as node:
        _report(_guard(lambda: run(node.store, file, institution=institution)))


@app.command()
def unmapped(
    data: Path = DataOpt,
    system: str | None = typer.Option(None, "--system", help="Only this local system"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    """Local codes seen at ingest without a mapping to a standard code (most frequent first)."""
    with _node(data) as node:
        rows = node.ext["terminology"].unmapped(system, limit=limit)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    t = Table("system", "code", "display", "count", "last resource")
    for r in rows:
        t.add_row(r["system"], r["code"], r.get("display") or "", str(r["count"]), r.get("last_resource") or "")
    out.print(t)
    console.print(f"{len(rows)} unmapped code(s)")


@app.command()
def lookup(
    system: str = typer.Argument(..., help="Code system URL or urn:oid:…"),
    code: str = typer.Argument(...),
    data: Path = DataOpt,
    valueset: str | None = typer.Option(None, "--valueset", help="Also check membership of this value set"),
) -> None:
    """Look a code up and validate it (exit status 1 when it is not valid)."""
    with _node(data) as node:
        svc = node.ext["terminology"]
        chk = svc.check(system, code, valueset)
        concept = svc.concept(system, code)
    out.print(json.dumps({"system": system, "code": code, "valid": chk.result, "display": chk.display,
                          "message": chk.message,
                          "properties": concept.properties if concept is not None else None,
                          "parents": list(concept.parents) if concept is not None else None},
                         ensure_ascii=False, indent=1))
    if not chk.result:
        raise typer.Exit(1)


@app.command()
def status(data: Path = DataOpt) -> None:
    """The loaded content versions and the code systems the service answers for."""
    import sqlalchemy as sa

    from phip.terminology.tables import loads

    with _node(data) as node:
        svc = node.ext["terminology"]
        with node.store.read_conn() as conn:
            rows = conn.execute(sa.select(loads).order_by(loads.c.name)).all()
        systems = svc.summary()
    t = Table("loaded", "version", "detail")
    for r in rows:
        t.add_row(r.name, r.version, r.detail or "")
    out.print(t)
    t = Table("code system", "current version", "versions", "content", "concepts")
    for s in systems:
        t.add_row(s["url"], s["version"] or "", ", ".join(s["versions"]), s["content"], str(s["concepts"]))
    out.print(t)
