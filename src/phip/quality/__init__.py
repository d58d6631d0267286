"""Data quality engine (issue 6): rules as data, incremental findings at ingest, scorecards.

``node.ext["quality"]`` is a :class:`phip.quality.engine.QualityService`; routes
``GET /quality/findings`` and ``GET /quality/scorecard``; command ``phip quality report``.
See docs/quality.md.
"""

from __future__ import annotations

from typing import Any

from phip.core.capability import Capability


def _install(node: Any) -> None:
    from phip.core.hooks import Point
    from phip.quality import rules
    from phip.quality.checks import CodeValidator
    from phip.quality.engine import PREPARED, Prepare, QualityService

    term = node.ext.get("terminology")
    empi = node.ext.get("empi")  # installed before quality: the registry comparison may go through it
    svc = QualityService(node.store, rules.load(), term if isinstance(term, CodeValidator) else None,
                         same_person=getattr(empi, "same_person_join", None))
    node.ext["quality"] = svc
    hooks = node.store.hooks
    hooks.register(Point.AFTER_WRITE, svc.on_write, on_import=False)
    hooks.register_prepare(PREPARED, svc.prepare_write)  # a transaction Bundle's checks, before its lock
    hooks.register(Point.IMPORT_BATCH, svc.on_import_batch)
    hooks.register(Point.IMPORT_PREPARE, Prepare(svc))  # the checks run in the importer's worker
    hooks.register(Point.IMPORT_LOADED, svc.on_loaded)
    hooks.register(Point.AFTER_IMPORT, svc.on_after_import)


def _routers() -> list[Any]:
    from phip.quality.api import router

    return [router]


def _cli() -> dict[str, Any]:
    from phip.quality.cli import app

    return {"quality": app}


def _tables() -> None:
    import phip.quality.tables  # noqa: F401


CAPABILITY = Capability(
    name="quality",
    summary="Data quality: completeness, conformance, consistency, timeliness, uniqueness, upload rate",
    install=_install,
    routers=_routers,
    cli=_cli,
    tables=_tables,
)
