"""The spec package is fetched once even when several processes ask for it at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path


def _fake_npm(bin_dir: Path, payload: Path, calls: Path) -> None:
    """An ``npm`` whose ``pack`` is slow and counts its calls: it copies a prepared tarball."""
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo pack >> {calls}
        sleep 1
        cp {payload} ./hl7.fhir.r4.examples-4.0.1.tgz
        """))
    npm.chmod(0o755)


def test_concurrent_fetches_share_one_download(tmp_path: Path) -> None:
    src = tmp_path / "src" / "package"
    src.mkdir(parents=True)
    for i in range(50):
        (src / f"Patient-{i}.json").write_text('{"resourceType": "Patient"}')
    payload = tmp_path / "pkg.tgz"
    with tarfile.open(payload, "w:gz") as tar:
        tar.add(src, arcname="package")
    calls = tmp_path / "calls"
    _fake_npm(tmp_path / "bin", payload, calls)
    env = {**os.environ, "PHIP_CACHE": str(tmp_path / "cache"),
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    # each process fetches, then reads every file: a folder replaced under a reader would fail here
    code = ("from phip.fhir.package import package_dir\n"
            "d = package_dir()\n"
            "print(sum(len(p.read_bytes()) > 0 for p in sorted(d.glob('*.json'))))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["50", "50", "50"]
    assert calls.read_text().split() == ["pack"]
