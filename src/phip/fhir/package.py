"""Fetch and cache npm packages: the FHIR R4 (4.0.1) spec package, and the console's scripts.

The npm package ``hl7.fhir.r4.examples@4.0.1`` carries every resource the R4
specification publishes: the examples, and the conformance resources (the
StructureDefinitions, the 1,400 SearchParameters, ValueSets, CodeSystems,
CompartmentDefinitions).  We fetch it with the ordinary ``npm`` client and unpack
it into a cache folder; ``scripts/gen_spec.py`` turns it into the compact tables
under ``phip/fhir/spec/`` and the test-suite reads the examples from it.

:func:`npm_package` does the same for any pinned package (the web console's ``htmx.org`` and
``echarts``): fetched once, under a file lock, into ``cache_root()/<name>-<version>/``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "hl7.fhir.r4.examples"
VERSION = "4.0.1"


def cache_root() -> Path:
    """Where downloaded packages live (``$PHIP_CACHE`` or ``~/.cache/phip``)."""
    root = os.environ.get("PHIP_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "phip"


def package_dir(fetch: bool = True) -> Path:
    """Return the unpacked ``package/`` folder of the FHIR R4 examples, fetching it once if needed.

    Raises ``RuntimeError`` with a clear message when the package is not cached
    and cannot be fetched (no ``npm`` on the PATH, or no registry).
    """
    return npm_package(PACKAGE, VERSION, fetch=fetch)


def npm_package(name: str, version: str, *, fetch: bool = True) -> Path:
    """Return the unpacked ``package/`` folder of ``name@version``, fetching it once if needed
    (``RuntimeError`` when it is not cached and cannot be fetched, or ``fetch`` is False)."""
    target = cache_root() / f"{name}-{version}"
    done = target / ".complete"
    if done.exists():
        return target / "package"
    if not fetch:
        raise RuntimeError(f"{name}@{version} is not cached in {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # several processes (pytest-xdist workers, two nodes on one machine) may ask at once: one fetches,
    # the others wait on the lock and then find the finished folder, never a half-replaced one
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _fetch(name, version, target)
            done.write_text(version)
    return target / "package"


def _fetch(name: str, version: str, target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"fetching {name}@{version} needs npm on the PATH")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        proc = subprocess.run(
            [npm, "pack", f"{name}@{version}", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"npm pack {name}@{version} failed: {proc.stderr.strip()}")
        tgz = next(Path(tmp).glob("*.tgz"))
        unpack = Path(tmp) / "unpacked"
        with tarfile.open(tgz) as tar:
            tar.extractall(unpack, filter="data")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(unpack), str(target))
