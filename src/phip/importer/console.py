"""Importing files with a Rich progress bar (shared by ``phip import`` and ``phip demo``)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from phip.importer.loader import Importer, ImportReport
from phip.store.repository import Store


def import_files(store: Store, files: list[Path], console: Console) -> ImportReport:
    """Import ``files`` in order, showing bytes done, speed and time left."""
    total = sum(f.stat().st_size for f in files)
    progress = Progress(TextColumn("[bold]import"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=console, disable=not files,
                        refresh_per_second=4)
    with progress:
        task = progress.add_task("import", total=total)
        imp = Importer(store, on_progress=lambda n: progress.advance(task, n))
        started = time.monotonic()
        imp.import_all(files, on_phase=lambda what: console.print(
            f"[bold]import[/] {what} … ({imp.report.loaded:,} resources in {time.monotonic() - started:.0f} s)"))
    return imp.report
