"""The audit journal: no access is lost between its response and the chain.

Each process appends every access it records to a journal file of its own
(``DATA/audit/journal-<pid>-<n>.jsonl``, one JSON line, one ``write`` call: it reaches the
operating system before the response is sent, so a process killed even with SIGKILL keeps it).
When the service writes its buffer to the chain it starts a new journal file and, once the chain's
transaction has committed, deletes the files whose records it held.  A process holds an exclusive
``flock`` on its open journal; at start-up every other journal whose lock can be taken belongs
to a process that died, and its records are written to the chain then (those already there —
the process died between the chain's commit and the file's deletion — are recognised by their
time, kind, user and patient, and not written twice).  Queries are journaled masked, as the
chain keeps them (ID numbers, mobile numbers).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from phip.audit.events import Pending, mask_query

log = logging.getLogger("phip.audit")


class Journal:
    """The open journal file of this process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._n = 0
        self.path, self.fd = self._open()

    def _open(self) -> tuple[Path, int]:
        self._n += 1
        path = self.folder / f"journal-{os.getpid()}-{self._n}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return path, fd

    def write(self, p: Pending) -> None:
        if p.query:
            p = replace(p, query=mask_query(p.query))
        os.write(self.fd, orjson.dumps(p) + b"\n")  # orjson writes the dataclass itself (asdict: 10× slower)

    def rotate(self) -> tuple[Path, int]:
        """Start a new file; the old one (path, fd) is retired once its records are in the chain."""
        old = self.path, self.fd
        self.path, self.fd = self._open()
        return old

    @staticmethod
    def retire(old: tuple[Path, int]) -> None:
        path, fd = old
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)

    def close(self) -> None:
        """At a clean shutdown, after the last flush: nothing left to recover."""
        self.retire((self.path, self.fd))


def orphans(folder: Path) -> Iterator[tuple[Path, list[Pending]]]:
    """The journals of processes that died (their lock can be taken), with their records; each
    is yielded while locked, and deleted by the caller once its records are in the chain."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("journal-*.jsonl")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process's journal
            recs: list[Pending] = []
            with open(fd, "rb", closefd=False) as f:
                for line in f:
                    try:
                        recs.append(Pending(**orjson.loads(line)))
                    except (orjson.JSONDecodeError, TypeError):
                        log.warning("audit: skipping an unreadable journal line in %s", path.name)  # torn write
            yield path, recs
        finally:
            os.close(fd)


def key(p: Pending | Any) -> tuple[Any, ...]:
    """What recognises a journaled record already written to the chain."""
    return (p.recorded, p.kind, p.who, p.patient)
