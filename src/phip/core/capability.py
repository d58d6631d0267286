"""What a capability (EMPI, terminology, quality, security, audit, …) offers the node.

Each capability is one package under ``phip/`` exposing ``CAPABILITY: Capability``.  The
node installs them in the order of :data:`phip.capabilities.ENABLED`; the HTTP application
mounts their routers and the ``phip`` command their sub-commands.  Arrows point down: a
capability imports the core (``phip.core``, ``phip.fhir``, ``phip.store``); the core never
imports a capability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Capability:
    #: short name: the key of its service in ``node.ext`` and the default CLI group name
    name: str
    summary: str
    #: ``fn(node)``: register hooks on ``node.store.hooks``, put services in ``node.ext[name]``
    install: Callable[[Any], None] | None = None
    #: ``fn(node)``: one-time set-up when ``phip init`` creates a node (e.g. loading code tables)
    on_init: Callable[[Any], None] | None = None
    #: ``fn() -> list[fastapi.APIRouter]``: routes mounted by ``create_app``
    routers: Callable[[], list[Any]] | None = None
    #: ``fn() -> dict[str, typer.Typer]``: sub-command groups of ``phip`` (``{"empi": typer_app}``)
    cli: Callable[[], dict[str, Any]] | None = None
    #: ``fn() -> None``: import the modules that declare this capability's tables on
    #: ``phip.store.schema.metadata`` (so migrations and tests see them)
    tables: Callable[[], None] | None = None
    #: ``extras``: what other parts look up by key, e.g. ``"warm"``: ``fn(node)`` loading caches before a
    #: server worker takes requests (:meth:`phip.node.node.Node.warm`)
    extras: dict[str, Any] = field(default_factory=dict)
