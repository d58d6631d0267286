"""One catalogue of hook points (after HAPI's ``Pointcut``).

Capabilities that must see every write or read — the master patient index, audit,
consent, data quality — register a function for a named point instead of being
called from routes.  The repository fires the points; the order of registration
is the order of calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Point(StrEnum):
    #: before a resource is stored: ``fn(tx, resource_type, resource: dict, method)`` may
    #: change the resource or raise FhirError; issues it returns are warnings in the response
    BEFORE_WRITE = "before_write"
    #: after a resource is stored in the open transaction: ``fn(tx, event: WriteEvent)``
    AFTER_WRITE = "after_write"


@dataclass(slots=True)
class WriteEvent:
    resource_type: str
    id: str
    version: int
    method: str  # POST | PUT | PATCH | DELETE
    resource: dict[str, Any] | None


class Hooks:
    def __init__(self) -> None:
        self._fns: dict[Point, list[Callable[..., Any]]] = {p: [] for p in Point}

    def register(self, point: Point, fn: Callable[..., Any]) -> None:
        self._fns[point].append(fn)

    def fire(self, point: Point, *args: Any) -> list[Any]:
        return [fn(*args) for fn in self._fns[point]]

    def has(self, point: Point) -> bool:
        return bool(self._fns[point])
