"""``phip keys``: the node's data keys (encryption at rest)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

keys_app = typer.Typer(help="Keys protecting stored data: rotate the data key and re-encrypt online.",
                       no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@keys_app.command()
def rotate(
    data: Path = typer.Option(..., "--data", help="The node's data folder."),
    retire: bool = typer.Option(False, "--retire", help="Delete older data keys once no row uses them"),
) -> None:
    """Make a new data key and re-encrypt every sealed record with it, while the node keeps serving."""
    from phip.node.config import NodeError
    from phip.node.node import Node
    from phip.privacy import keystore
    from phip.privacy import rotate as R

    try:
        node = Node.open(data)
    except NodeError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from None
    try:
        svc = node.ext["privacy"]
        if svc.codec is None:
            console.print("[bold red]error:[/] encryption at rest is off for this node "
                          "(set encrypt_at_rest = true under [privacy] in phip.toml)")
            raise typer.Exit(1)
        new = keystore.generate(data, "data")
        svc.reload_keys()
        total = R.count_rows(node.store, sorted(svc.codec.types))
        with Progress(TextColumn("[bold]re-encrypt"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console) as progress:
            task = progress.add_task("rotate", total=total)
            rep = R.reseal(node.store, svc.codec, lambda n: progress.update(task, completed=n))
            progress.update(task, completed=total)
        console.print(f"[green]new data key {new.kid}[/]: {rep.resealed} records re-encrypted, "
                      f"{rep.newly_sealed} sealed for the first time, {rep.skipped} changed meanwhile")
        old = {k: n for k, n in rep.by_key_left.items() if k != new.kid}
        if old:
            console.print("still sealed with older keys (a server that has not restarted since): "
                          + ", ".join(f"{k}: {n}" for k, n in old.items()))
        if retire:
            keep = set(rep.by_key_left)
            for k in keystore.load(data, "data"):
                if k.kid != new.kid and k.kid not in keep:
                    (Path(data) / "keys" / f"data-{k.kid}.key").unlink()
                    console.print(f"retired data key {k.kid}")
    finally:
        node.close()


def export_deidentified(node: object, out: Path, profile_name: str, types: list[str] | None,
                        since_us: int | None) -> None:
    """``phip export --deidentify PROFILE`` (called by the export command)."""
    from rich.table import Table

    from phip.privacy import deidentify as D
    from phip.privacy import keystore

    try:
        profile = D.load_profile(profile_name)
    except D.ProfileError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from None
    key = keystore.current(node.data, "pseudonym").key  # type: ignore[attr-defined]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}"),
                  console=console) as progress:
        task = progress.add_task("de-identify", total=None)
        rep = D.run(node.store, out, profile, key, types=types, since_us=since_us,  # type: ignore[attr-defined]
                    progress=lambda t, n: progress.update(task, description=f"de-identify {t}", completed=n))
    table = Table(title=f"de-identified export ({rep.profile}, k = {rep.k})")
    table.add_column("type")
    table.add_column("exported", justify="right")
    for t, n in sorted(rep.resources.items()):
        table.add_row(t, str(n))
    console.print(table)
    console.print(f"patients {rep.patients}; suppressed {rep.patients_suppressed} in {len(rep.classes_suppressed)} "
                  f"of {rep.classes} quasi-identifier classes (smaller than k); smallest class kept: "
                  f"{rep.k_reached}; resources suppressed {rep.resources_suppressed}; types not exported: "
                  + (", ".join(f"{t} ({n})" for t, n in sorted(rep.dropped_types.items())) or "none"))
    console.print(f"report: {out / 'deidentification-report.json'}")
