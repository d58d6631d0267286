"""Same seed, same bytes: across worker counts and Python hash seeds.  Plus a full validation pass."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from phip.fhir.validation import errors
from phip.synth import run

ARGS = {"persons": 700, "seed": 99, "years": 2}


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("det") / "a"
    run(out, progress=False, workers=1, **ARGS)  # type: ignore[arg-type]
    return out


def test_same_seed_gives_identical_bytes_with_more_workers(small: Path, tmp_path: Path) -> None:
    run(tmp_path / "b", progress=False, workers=2, **ARGS)  # type: ignore[arg-type]
    a, b = _digest(small), _digest(tmp_path / "b")
    assert a == b
    assert not (small / ".shards").exists()
    assert len(a) > 40


def test_output_does_not_depend_on_the_python_hash_seed(small: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from phip.synth import run; "
        f"run(Path(sys.argv[1]), {ARGS['persons']}, {ARGS['seed']}, years={ARGS['years']}, progress=False, workers=1)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], check=True, env=env)
    assert _digest(small) == _digest(tmp_path / "c")


def test_another_seed_gives_other_data(small: Path, tmp_path: Path) -> None:
    run(tmp_path / "d", progress=False, workers=1, **{**ARGS, "seed": 100})  # type: ignore[arg-type]
    a, d = _digest(small), _digest(tmp_path / "d")
    assert a["truth/people.csv"] != d["truth/people.csv"]


def test_every_resource_of_a_small_run_is_valid(small: Path) -> None:
    n = 0
    for f in sorted(small.glob("*/*.ndjson")):
        with open(f, "rb") as fh:
            for line in fh:
                res = orjson.loads(line)
                problems = errors(res)
                assert not problems, (f.parent.name, res["resourceType"], res["id"], problems[:3])
                n += 1
    assert n > 10_000


def test_refuses_to_write_into_a_non_empty_folder(small: Path) -> None:
    with pytest.raises(FileExistsError):
        run(small, progress=False, workers=1, **ARGS)  # type: ignore[arg-type]
