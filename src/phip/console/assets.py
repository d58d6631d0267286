"""The console's static files: its own stylesheet and script (in this package) and two libraries
from the npm registry, fetched once into the node's package cache (``phip.fhir.package``) and
never committed: htmx (partial page updates) and Apache ECharts (charts).

A page works without the libraries: the filters fall back to ordinary form submissions and the
numbers are in tables; only the charts are missing.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from phip.fhir.package import npm_package

log = logging.getLogger("phip.console")
HERE = Path(__file__).parent / "static"

#: served name → (npm package, pinned version, file inside the package)
NPM: dict[str, tuple[str, str, str]] = {
    "htmx.min.js": ("htmx.org", "2.0.11", "dist/htmx.min.js"),
    "echarts.min.js": ("echarts", "5.6.0", "dist/echarts.min.js"),
}
OWN: tuple[str, ...] = ("console.css", "console.js")
NAMES: tuple[str, ...] = (*OWN, *NPM)
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def path(name: str) -> Path | None:
    """The file to serve for ``/console/static/<name>``, or None when it is not available (a library
    not fetched yet)."""
    if name in OWN:
        return HERE / name
    spec = NPM.get(name)
    if spec is None:
        return None
    pkg, version, rel = spec
    try:
        f = npm_package(pkg, version, fetch=False) / rel
    except RuntimeError:
        return None
    return f if f.is_file() else None


def fetch() -> list[str]:
    """Fetch the libraries that are not cached yet (``npm pack``, under the cache's file lock);
    returns one message per library that could not be fetched."""
    errors = []
    for pkg, version, _rel in NPM.values():
        try:
            npm_package(pkg, version, fetch=True)
        except (RuntimeError, OSError, StopIteration) as e:
            errors.append(f"{pkg}@{version}: {e}")
    return errors


def fetch_in_background() -> None:
    """Start fetching the libraries in a daemon thread (``phip serve``), unless every one is cached
    or ``$PHIP_CONSOLE_FETCH`` is ``0``."""
    if os.environ.get("PHIP_CONSOLE_FETCH", "1") == "0" or all(path(n) is not None for n in NPM):
        return

    def run() -> None:
        for err in fetch():
            log.warning("console: %s; the pages work without it, without charts", err)

    threading.Thread(target=run, name="phip-console-assets", daemon=True).start()
