"""The registry's service object, put in ``node.ext["registry"]`` by :func:`install`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phip.core.hooks import Point
from phip.registry.events import Registry
from phip.registry.healthcard import HealthCards
from phip.registry.population import PopulationIndex
from phip.registry.validate import before_write


@dataclass
class RegistryService:
    index: PopulationIndex
    registry: Registry
    cards: HealthCards


def install(node: Any) -> None:
    store = node.store
    index = PopulationIndex(store)
    cards = HealthCards(store, node.tokens, node.config.region)
    svc = RegistryService(index, Registry(store, index, cards), cards)
    # validation of registry resources: not during `phip import` (the bulk path stays parallel);
    # imported registry resources are checked at AFTER_IMPORT and reported in the log
    store.hooks.register(Point.BEFORE_WRITE, before_write, on_import=False)
    store.hooks.register(Point.AFTER_WRITE, index.after_write, on_import=False)
    store.hooks.register(Point.AFTER_IMPORT, _after_import(index))
    node.ext["registry"] = svc


def _after_import(index: PopulationIndex) -> Any:
    def run(store: Any, loaded: dict[str, int]) -> None:
        from phip.registry.validate import TYPES, report_stored

        if any(loaded.get(t) for t in TYPES):
            report_stored(store, [t for t in TYPES if loaded.get(t)])
        index.after_import(store, loaded)

    return run
