"""Audit (issue 5): IHE BALP AuditEvents in an append-only hash chain with signed checkpoints.

Every access to personal data through the API — a read, each patient in a search result, a
create, update, delete, export, merge, a login and a failed authentication — becomes one
AuditEvent, kept in ``audit_events`` (not in ``resources``: auditing must not feed the history or
the change feed).  See docs/audit.md.
"""

from __future__ import annotations

from typing import Any

from phip.core.capability import Capability


def _install(node: Any) -> None:
    from phip.audit.service import AuditService
    from phip.core.hooks import Point

    svc = AuditService(node)
    node.ext["audit"] = svc
    hooks = node.store.hooks
    hooks.register(Point.AFTER_READ, svc.on_read)
    # bracket the other capabilities' AFTER_WRITE hooks: writes they make in turn (the EMPI's
    # derived Person…) are the node's own work, not the caller's
    hooks.register(Point.AFTER_WRITE, svc.on_write, on_import=False, first=True)
    hooks.register(Point.AFTER_WRITE, svc.after_others, on_import=False)
    hooks.register(Point.AFTER_IMPORT, svc.on_import)
    if hasattr(Point, "AUTHENTICATE"):  # logins and failed authentication (the security capability)
        hooks.register(Point.AUTHENTICATE, svc.on_auth)


def _routers() -> list[Any]:
    from phip.audit.routes import router

    return [router]


def _cli() -> dict[str, Any]:
    from phip.audit.cli import app

    return {"audit": app}


def _tables() -> None:
    import phip.audit.schema  # noqa: F401


def _middleware() -> list[Any]:
    from phip.audit.middleware import AuditMiddleware

    return [AuditMiddleware]


CAPABILITY = Capability(
    name="audit",
    summary="Tamper-evident audit trail (IHE BALP AuditEvents, hash chain, signed checkpoints)",
    install=_install,
    routers=_routers,
    cli=_cli,
    tables=_tables,
    extras={"middleware": _middleware, "owns_types": ("AuditEvent",)},
)
