"""Access to the generator's data tables (``data/*.json``, edited by hand; see each file's ``_about``)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson


@cache
def table(name: str) -> Any:
    """The parsed JSON table ``data/<name>.json`` (loaded once per process)."""
    return orjson.loads(resources.files("phip.synth").joinpath("data", f"{name}.json").read_bytes())
