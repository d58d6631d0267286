"""``phip empi …``: status, review queue, manual link/unlink, Splink training, batch rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Master patient index: review, link/unlink, train, rebuild.", no_args_is_help=True)
review_app = typer.Typer(help="The review queue of potential matches.", no_args_is_help=True)
app.add_typer(review_app, name="review")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
DataOpt = typer.Option(..., "--data", help="The node's data folder.")
ByOpt = typer.Option("operator", "--by", help="Who takes the decision (recorded).")
WhyOpt = typer.Option(None, "--reason", help="Why (recorded).")


def _open(data: Path) -> Any:
    from phip.empi.rules import RulesError
    from phip.node.config import NodeError
    from phip.node.node import Node

    try:
        return Node.open(data)
    except (NodeError, RulesError) as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from None


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(1)


@app.command()
def status(data: Path = DataOpt) -> None:
    """Records, Persons, links by kind, open reviews and the active rules."""
    import sqlalchemy as sa

    from phip.empi import tables as T
    from phip.empi.service import active_rules_path

    node = _open(data)
    empi = node.ext["empi"]
    with node.store.engine.connect() as conn:
        kinds = conn.execute(sa.select(T.record.c.link_kind, sa.func.count()).group_by(T.record.c.link_kind)).all()
        persons = conn.execute(sa.select(sa.func.count(sa.distinct(T.record.c.person_id)))).scalar_one()
        reviews = conn.execute(sa.select(sa.func.count()).select_from(T.review)
                               .where(T.review.c.status == "open")).scalar_one()
    t = Table(title="master patient index")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("records", str(sum(n for _k, n in kinds)))
    t.add_row("persons", str(persons))
    for k, n in sorted(kinds):
        t.add_row(f"  linked: {k}", str(n))
    t.add_row("open reviews", str(reviews))
    out.print(t)
    out.print(f"rules: version {empi.rules.version} ({active_rules_path(data) or 'packaged default'}), "
              f"auto-link ≥ {empi.rules.auto_link}, review ≥ {empi.rules.review}")
    node.close()


@review_app.command("list")
def review_list(data: Path = DataOpt, status: str = typer.Option("open", "--status"),
                count: int = typer.Option(20, "--count")) -> None:
    """Potential matches with their per-field levels and weights."""
    from phip.empi.steward import review_items

    node = _open(data)
    with node.store.engine.connect() as conn:
        items = review_items(conn, status, count)
    t = Table(title=f"review queue ({status})")
    for c in ("id", "patient", "candidate", "weight", "fields", "veto", "status"):
        t.add_column(c)
    for it in items:
        fields = ", ".join(f"{k}={v['level']}({v['weight']:+.1f})" for k, v in (it["fields"] or {}).items())
        t.add_row(str(it["id"]), it["patient"], it["candidate"], f"{it['score']:.1f}", fields, it["veto"] or "",
                  it["status"])
    out.print(t)
    node.close()


def _decide(data: Path, item: int, decision: str, by: str, reason: str | None) -> None:
    from phip.empi.steward import decide_review
    from phip.fhir.errors import FhirError

    node = _open(data)
    try:
        with node.store.write_tx() as tx:
            res = decide_review(node.ext["empi"], tx.conn, item, decision, by, reason)
    except FhirError as e:
        _fail(e)
        return
    out.print(res)
    node.close()


@review_app.command("link")
def review_link(item: int = typer.Argument(..., help="Review item id."), data: Path = DataOpt, by: str = ByOpt,
                reason: str | None = WhyOpt) -> None:
    """Decide that a review item is one person (link)."""
    _decide(data, item, "link", by, reason)


@review_app.command("reject")
def review_reject(item: int = typer.Argument(..., help="Review item id."), data: Path = DataOpt, by: str = ByOpt,
                  reason: str | None = WhyOpt) -> None:
    """Decide that a review item is two people (never linked again, also by rebuilds)."""
    _decide(data, item, "reject", by, reason)


@app.command()
def link(patient: str, other: str, data: Path = DataOpt, by: str = ByOpt, reason: str | None = WhyOpt) -> None:
    """Link PATIENT to the Person of OTHER (Patient ids)."""
    from phip.empi.steward import link_records
    from phip.fhir.errors import FhirError

    node = _open(data)
    try:
        with node.store.write_tx() as tx:
            person = link_records(node.ext["empi"], tx.conn, patient, other, by, reason)
    except FhirError as e:
        _fail(e)
        return
    out.print(f"Patient/{patient} → Person/{person}")
    node.close()


@app.command()
def unlink(patient: str, data: Path = DataOpt, by: str = ByOpt, reason: str | None = WhyOpt) -> None:
    """Take PATIENT out of its Person into a new one."""
    from phip.empi.steward import unlink_record
    from phip.fhir.errors import FhirError

    node = _open(data)
    try:
        with node.store.write_tx() as tx:
            person = unlink_record(node.ext["empi"], tx.conn, patient, by, reason)
    except FhirError as e:
        _fail(e)
        return
    out.print(f"Patient/{patient} → Person/{person}")
    node.close()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


@app.command()
def rebuild(data: Path = DataOpt) -> None:
    """Re-match every Patient with the active rules (manual decisions and Person ids are kept)."""
    from phip.empi.batch import rebuild as run

    node = _open(data)
    tasks: dict[str, Any] = {}
    with _progress() as bar:
        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        rep = run(node.ext["empi"], progress)
    out.print(f"{rep.records} records, {rep.pairs} candidate pairs, {rep.links} links → {rep.persons} persons "
              f"({rep.persons_created} created, {rep.persons_updated} updated, {rep.persons_deleted} deleted), "
              f"{rep.reviews} open reviews in {rep.seconds.get('total', 0):.1f} s")
    node.close()


@app.command()
def train(data: Path = DataOpt, max_pairs: float = typer.Option(2e6, "--max-pairs", help="Pairs sampled for u and EM."),
          seed: int = typer.Option(42, "--seed")) -> None:
    """Estimate m/u with Splink on this node's records; write the next rules-v<N>.json (then rebuild)."""
    from phip.empi.service import rules_dir
    from phip.empi.train import TrainError, write_rules
    from phip.empi.train import train as run

    node = _open(data)
    try:
        with node.store.engine.connect() as conn:
            raw, model = run(conn, node.ext["empi"].rules, max_pairs=max_pairs, seed=seed, log=console.print,
                             codec=node.store.codec)
    except TrainError as e:
        _fail(e)
        return
    path = write_rules(rules_dir(data), raw, model, f"trained by Splink on {data}")
    out.print(f"wrote {path} (Splink model: {path.with_suffix('.splink.json').name}); "
              f"run `phip empi rebuild --data {data}` to apply it to the existing records")
    node.close()
