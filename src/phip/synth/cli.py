"""``phip synth``: the Typer command of the synthetic region generator.

The lead registers :func:`synth` in the main CLI (``app.command("synth")(synth)``); it can also be
mounted on any ``typer.Typer()`` for tests.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer

from phip.synth.defects import DefectRates


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from e


def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (must not exist or be empty, unless --force)."),
    persons: int = typer.Option(..., "--persons", min=1, help="Residents at the start of the run."),
    seed: int = typer.Option(..., "--seed", help="Random seed: the same seed gives the same bytes."),
    province: str = typer.Option("51", "--province", help="GB/T 2260 province code (2 or 6 digits)."),
    years: int = typer.Option(10, "--years", min=1, help="Length of the run in years."),
    end: str | None = typer.Option(None, "--end", help="Last simulated day, YYYY-MM-DD (default 2025-12-31)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes (default: CPU count)."),
    defects: bool = typer.Option(True, "--defects/--no-defects", help="Inject the data-quality defects."),
    defect_rates: Path | None = typer.Option(
        None, "--defect-rates", exists=True, dir_okay=False, help="JSON object overriding defect rates."
    ),
    force: bool = typer.Option(False, "--force", help="Delete the output folder first."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate a synthetic Chinese region as FHIR R4 NDJSON, one folder per institution, plus truth/."""
    from phip.synth.engine import clear, run

    rates = DefectRates() if defects else DefectRates.none()
    if defect_rates is not None:
        try:
            overrides = json.loads(defect_rates.read_text(encoding="utf-8"))
            rates = DefectRates.from_dict({**rates.to_dict(), **overrides})
        except (ValueError, TypeError) as e:
            raise typer.BadParameter(str(e), param_hint="--defect-rates") from e
    if force:
        clear(out)
    try:
        s = run(
            out,
            persons,
            seed,
            province=province,
            years=years,
            end=_parse_date(end),
            progress=progress,
            defects=rates,
            workers=workers,
        )
    except (FileExistsError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    rate = s.total_resources / s.seconds if s.seconds else 0.0
    typer.echo(
        f"{s.out}: {s.counties} counties, {s.townships} townships, {s.institutions} institutions, "
        f"{s.practitioners} practitioners; {s.residents} residents ({s.people} people with {s.births} births "
        f"and {s.in_migrants} arrivals; {s.deaths} deaths, {s.moved_out} moved out) {s.start} to {s.end}; "
        f"{s.total_resources} resources, {s.bytes / 1e6:.1f} MB in {s.seconds:.1f} s ({rate:.0f} resources/s)"
    )


__all__ = ["synth"]
