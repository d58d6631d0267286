"""One generated region shared by the synth tests (a few thousand residents, four years)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson
import pytest

from phip.synth import Summary, run

PERSONS = 3000
SEED = 20240601
YEARS = 4
END = date(2024, 12, 31)


@dataclass
class Region:
    """A generated output folder with lazy, cached readers."""

    root: Path
    summary: Summary
    _cache: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def folders(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != "truth")

    def files(self, rtype: str | None = None) -> list[Path]:
        pattern = f"{rtype}.ndjson" if rtype else "*.ndjson"
        return sorted(self.root.glob(f"*/{pattern}"))

    def iter(self, rtype: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(institution folder, resource) for every resource of a type (or all)."""
        for f in self.files(rtype):
            with open(f, "rb") as fh:
                for line in fh:
                    yield f.parent.name, orjson.loads(line)

    def load(self, rtype: str) -> dict[str, dict[str, Any]]:
        """Resources of one type by id (cached)."""
        if rtype not in self._cache:
            self._cache[rtype] = {r["id"]: r for _org, r in self.iter(rtype)}
        return self._cache[rtype]

    def truth(self, name: str) -> list[dict[str, str]]:
        with open(self.root / "truth" / f"{name}.csv", encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    @cached_property
    def people(self) -> dict[str, dict[str, str]]:
        return {r["person_id"]: r for r in self.truth("people")}

    @cached_property
    def record_person(self) -> dict[str, str]:
        """'Type/id' of every person record -> true person id."""
        return {f"{r['resource_type']}/{r['resource_id']}": r["person_id"] for r in self.truth("persons")}

    def person_of(self, reference: str) -> str:
        return self.record_person[reference]


@pytest.fixture(scope="session")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    out = tmp_path_factory.mktemp("synth") / "region"
    summary = run(out, PERSONS, SEED, years=YEARS, end=END, progress=False, workers=2)
    return Region(out, summary)
