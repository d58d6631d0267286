"""NDJSON output: one folder per institution, one file per resource type.

Chunks run in parallel, so each writes a private shard (``<out>/.shards/<chunk>/<org>/<Type>.ndjson``);
:func:`merge` then appends the shards to the final files in chunk order, which makes the output
byte-identical whatever the number of worker processes.  Lines are compact JSON from orjson,
keys in the order the builders wrote them.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

_OPT = orjson.OPT_APPEND_NEWLINE
MAX_OPEN = 512


class ShardWriter:
    """Appends resources to ``<root>/<org>/<Type>.ndjson``, keeping a bounded set of files open."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[tuple[str, str], IO[bytes]] = {}
        self._n: dict[tuple[str, str], int] = {}

    def write(self, org: str, resource: dict[str, Any]) -> None:
        key = (org, resource["resourceType"])
        f = self._files.get(key)
        if f is None:
            f = self._open(key)
        f.write(orjson.dumps(resource, option=_OPT))
        self._n[key] += 1

    def _open(self, key: tuple[str, str]) -> IO[bytes]:
        if len(self._files) >= MAX_OPEN:
            self._close_all()
        d = self.root / key[0]
        d.mkdir(parents=True, exist_ok=True)
        f = open(d / f"{key[1]}.ndjson", "ab", buffering=1 << 16)  # noqa: SIM115 - kept open across calls
        self._files[key] = f
        self._n.setdefault(key, 0)
        return f

    def size(self) -> int:
        """Bytes written so far (flushes the open files)."""
        for f in self._files.values():
            f.flush()
        return sum((self.root / org / f"{rtype}.ndjson").stat().st_size for org, rtype in self._n)

    @property
    def files(self) -> Counter[tuple[str, str]]:
        """Resources written, by (institution, resource type)."""
        return Counter(self._n)

    def _close_all(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def close(self) -> None:
        self._close_all()


def merge(shards: Iterable[Path], out: Path) -> None:
    """Append every file of each shard, in the given shard order, to the same path under ``out``.

    A file that does not exist yet is moved instead of copied; otherwise the bytes are appended
    in the kernel (``copy_file_range``) where the platform allows.  Shards are removed as they go.
    The engine calls this for each township as soon as all earlier ones are done, so merging
    overlaps the simulation.
    """
    for shard in shards:
        if not shard.exists():
            continue
        for src in sorted(p for p in shard.rglob("*") if p.is_file()):
            dest = out / src.relative_to(shard)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                _append(src, dest)
                src.unlink()
            else:
                src.replace(dest)
        shutil.rmtree(shard)


def _append(src: Path, dest: Path) -> None:
    with open(src, "rb") as fi, open(dest, "r+b") as fo:
        fo.seek(0, os.SEEK_END)
        left = os.fstat(fi.fileno()).st_size
        copy = getattr(os, "copy_file_range", None)
        try:
            while copy is not None and left > 0:
                n = copy(fi.fileno(), fo.fileno(), left)
                if n == 0:
                    break
                left -= n
        except OSError:
            pass  # not supported here: copy in user space from where we got to
        if left > 0:
            fi.seek(-left, os.SEEK_END)
            fo.seek(0, os.SEEK_END)
            shutil.copyfileobj(fi, fo, 1 << 20)
