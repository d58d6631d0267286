"""Traditional → simplified conversion (OpenCC tables, via ``opencc-python-reimplemented``)."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _conv() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


def t2s(text: str) -> str:
    return str(_conv().convert(text))
