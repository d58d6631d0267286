"""``phip audit``: verify the chain, archive old records, sign a checkpoint now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

app = typer.Typer(help="The tamper-evident audit trail: verify, archive, checkpoint.", no_args_is_help=True)
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
def verify(
    data: Path = DataOpt,
    archive: list[Path] = typer.Option([], "--archive", help="Also verify these archive files"),
) -> None:
    """Check the whole chain; name the first bad record (exit status 1 if any)."""
    from phip.audit import chain

    node = _open(data)
    svc = node.ext["audit"]
    bad = False
    try:
        for path in archive:
            v = chain.verify_archive(path, svc.public_keys)
            console.print(f"{path.name}: " + ("[green]intact[/] " if v.ok else "[bold red]BROKEN[/] ")
                          + (f"{v.checked} records" if v.ok else v.message()))
            bad |= not v.ok
        with Progress(TextColumn("[bold]verify"), BarColumn(), TextColumn("{task.completed} records"),
                      console=console, transient=True) as progress:
            task = progress.add_task("verify", total=None)
            v = chain.verify(node.store.engine, svc.public_keys, lambda n: progress.update(task, completed=n))
    finally:
        node.close()
    if v.ok:
        console.print(f"[green]{v.message()}[/]")
    else:
        console.print(f"[bold red]{v.message()}[/]")
        print(f"FIRST BAD RECORD {v.first_bad}: {v.reason}")
    if bad or not v.ok:
        raise typer.Exit(1)


@app.command("archive")
def archive_(
    data: Path = DataOpt,
    before: str | None = typer.Option(None, "--before", help="Archive records recorded before this date/instant"),
    upto: int | None = typer.Option(None, "--upto", help="Archive records up to this sequence number"),
    out: Path | None = typer.Option(None, "--out", help="Folder for the archive (default DATA/audit-archive)"),
) -> None:
    """Move the oldest records to a signed, verifiable archive file; the chain stays verifiable."""
    from phip.audit import chain
    from phip.fhir.datetimes import date_range

    if before is None and upto is None:
        console.print("[bold red]error:[/] give --before DATE or --upto SEQ")
        raise typer.Exit(1)
    try:
        before_us = date_range(before)[0] if before else None
    except ValueError:
        console.print(f"[bold red]error:[/] --before {before!r} is not a FHIR date or instant")
        raise typer.Exit(1) from None
    node = _open(data)
    try:
        svc = node.ext["audit"]
        v = chain.verify(node.store.engine, svc.public_keys)
        if not v.ok:
            console.print(f"[bold red]refusing to archive a broken chain:[/] {v.message()}")
            raise typer.Exit(1)
        if svc.key is None:
            console.print("[bold red]error:[/] the node has no signing key")
            raise typer.Exit(1)
        with node.store.queued_write():  # queued with a serving node's writers
            got = chain.archive(node.store.engine, svc.key, out or Path(data) / "audit-archive",
                                before_us=before_us, upto=upto)
    finally:
        node.close()
    if got is None:
        console.print("nothing to archive")
        return
    path, first, last = got
    console.print(f"[green]archived records {first}–{last}[/] → {path} (manifest beside it); "
                  f"the chain is now anchored at record {last}")


@app.command()
def checkpoint(data: Path = DataOpt) -> None:
    """Sign a checkpoint at the newest record now."""
    import sqlalchemy as sa

    from phip.audit import chain
    from phip.audit.schema import audit_checkpoints as CP

    node = _open(data)
    try:
        svc = node.ext["audit"]
        with node.store.engine.begin() as conn:
            head = chain.read_head(conn)
            if head.last_seq == 0 or svc.key is None:
                console.print("nothing to sign")
                return
            if conn.execute(sa.select(CP.c.seq).where(CP.c.seq == head.last_seq)).first() is None:
                chain.sign_checkpoint(conn, svc.key, head.last_seq, head.last_hash)
        console.print(f"signed checkpoint at record {head.last_seq}")
    finally:
        node.close()
