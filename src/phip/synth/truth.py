"""The truth files: what really happened, for testing the platform against (``truth/*.csv``).

Formats (UTF-8 CSV with a header row; dates ISO 8601; empty cell = none) are documented in
``docs/synth.md``; the column lists are :data:`HEADERS`.  Chunks write their rows without headers
into their shard; :func:`write_headers` starts the final files and :mod:`phip.synth.writer` appends
the shards, so the rows of one chunk stay together and in a fixed order.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

HEADERS: dict[str, tuple[str, ...]] = {
    "persons": ("org_id", "resource_type", "resource_id", "identifier_system", "identifier_value", "person_id"),
    "people": (
        "person_id",
        "id_number",
        "name",
        "sex",
        "birth_date",
        "ethnicity",
        "birth_county",
        "household_id",
        "mother_id",
        "father_id",
        "first_seen",
        "last_seen",
        "end_reason",
    ),
    "households": ("household_id", "person_id", "role", "from_date", "to_date"),
    "moves": ("household_id", "date", "from_village", "to_village"),
    "conditions": ("person_id", "condition", "icd10", "onset_date", "diagnosed_date"),
    "infections": ("person_id", "disease", "icd10", "date", "county", "org_id", "outbreak_id"),
    "outbreaks": (
        "outbreak_id",
        "county",
        "disease",
        "icd10",
        "start_date",
        "end_date",
        "weeks",
        "age_from",
        "age_to",
        "expected_cases",
        "cases",
    ),
    "quality_defects": ("org_id", "resource_type", "resource_id", "element", "defect", "true_value", "recorded_value"),
    "local_codes": (
        "org_id",
        "domain",
        "local_system",
        "local_code",
        "local_display",
        "standard_system",
        "standard_code",
    ),
    "staff": ("practitioner_id", "org_id", "role", "id_number", "name", "sex", "birth_date", "licence"),
}


class TruthWriter:
    """Rows for the truth files of one chunk (or of the main process), under ``<root>/truth/``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "truth"
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, Any] = {}

    def row(self, name: str, *values: object) -> None:
        w = self._writers.get(name)
        if w is None:
            if name not in HEADERS:
                raise KeyError(name)
            self.dir.mkdir(parents=True, exist_ok=True)
            f = open(self.dir / f"{name}.csv", "a", encoding="utf-8", newline="")  # noqa: SIM115
            self._files[name] = f
            w = self._writers[name] = csv.writer(f, lineterminator="\n")
        if len(values) != len(HEADERS[name]):
            raise ValueError(f"{name}: {len(values)} values for {len(HEADERS[name])} columns")
        w.writerow(["" if v is None else v for v in values])

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._writers.clear()


def write_headers(out: Path) -> None:
    """Create every truth file under ``<out>/truth`` with its header row."""
    d = out / "truth"
    d.mkdir(parents=True, exist_ok=True)
    for name, cols in HEADERS.items():
        with open(d / f"{name}.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow(cols)


def read(out: Path, name: str) -> list[dict[str, str]]:
    """All rows of one truth file as dicts (for tests and small runs)."""
    with open(out / "truth" / f"{name}.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
