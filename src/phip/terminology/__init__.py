"""Terminology service (issue 6): Chinese code tables as FHIR CodeSystem/ValueSet/ConceptMap,
``$lookup``/``$validate-code``/``$expand``/``$subsumes``/``$translate``, local-to-standard mapping
at ingest, and the CN profiles checked on write.  See docs/terminology.md.

In-process API for other capabilities: ``node.ext["terminology"]`` is a
:class:`phip.terminology.service.TerminologyService` (``validate_code``, ``lookup``, ``translate``,
``check``, ``notifiable``, ``unmapped``).
"""

from __future__ import annotations

from typing import Any

from phip.core.capability import Capability


def _install(node: Any) -> None:
    from phip.core.hooks import Point
    from phip.terminology.ingest import IngestHooks
    from phip.terminology.service import TerminologyService
    from phip.terminology.settings import TerminologySettings

    settings = TerminologySettings.from_node(node)
    svc = TerminologyService(node.store, refresh_seconds=settings.refresh_seconds)
    svc.settings = settings
    hooks = IngestHooks(svc, settings)
    node.store.hooks.register(Point.BEFORE_WRITE, hooks.before_write)
    node.store.hooks.register(Point.BEFORE_WRITE, hooks.before_write_profiles, on_import=False)
    node.store.hooks.register(Point.AFTER_WRITE, hooks.after_write)
    validate_point = getattr(Point, "VALIDATE", None)
    if validate_point is not None:
        from phip.terminology.api import validate_hook

        node.store.hooks.register(validate_point, validate_hook(svc))
    node.store.search_compiler.code_sets = svc  # token :in, :not-in, :below, :above
    node.ext["terminology"] = svc


def _on_init(node: Any) -> None:
    svc = node.ext.get("terminology")
    if svc is None or not svc.settings.load_on_init:
        return
    from phip.terminology.loader import load_shipped

    load_shipped(node.store)
    svc.invalidate()


def _warm(node: Any) -> None:
    """The code tables into the in-process cache (the shipped content and the WHO ICD-10 tree:
    ~0.5 s and ~30 MB): otherwise the first write with a code to check loads them, holding the
    database's write lock meanwhile."""
    svc = node.ext.get("terminology")
    if svc is not None:
        svc.refresh()


def _routers() -> list[Any]:
    from phip.terminology.api import fhir_router, router

    return [fhir_router, router]


def _cli() -> dict[str, Any]:
    from phip.terminology.cli import app

    return {"terminology": app}


def _tables() -> None:
    import phip.terminology.tables  # noqa: F401


_OPS = "http://hl7.org/fhir/OperationDefinition/"
CAPABILITY = Capability(
    name="terminology",
    summary="Code systems, value sets, concept maps; $lookup, $validate-code, $expand, $subsumes, $translate; "
            "local code mapping; CN profiles",
    install=_install,
    on_init=_on_init,
    routers=_routers,
    cli=_cli,
    tables=_tables,
    extras={"warm": _warm, "fhir_operations": {
        "CodeSystem": [{"name": "lookup", "definition": f"{_OPS}CodeSystem-lookup"},
                       {"name": "validate-code", "definition": f"{_OPS}CodeSystem-validate-code"},
                       {"name": "subsumes", "definition": f"{_OPS}CodeSystem-subsumes"}],
        "ValueSet": [{"name": "expand", "definition": f"{_OPS}ValueSet-expand"},
                     {"name": "validate-code", "definition": f"{_OPS}ValueSet-validate-code"}],
        "ConceptMap": [{"name": "translate", "definition": f"{_OPS}ConceptMap-translate"}],
    }},
)
