"""Security (issue 5, part A): authentication, authorization, consent, security labels,
break-glass and role-based masking.  See docs/security.md.

- ``POST /auth/token`` (client credentials with a secret or a signed JWT assertion, password
  login with lockout), short-lived EdDSA JWTs, external OIDC issuers, SMART scopes;
- authorization in one place (:mod:`phip.security.access`), enforced by the per-request
  repository through ``store.access`` (deny by default, the denying rule named), and a route
  guard for routes that declare no access;
- Consent, security labels (rules as data), break-glass, masking.

The per-request principal is ``phip.api.context.current_principal``; the decision API for
other capabilities is :func:`phip.security.access.can_read`.
"""

from __future__ import annotations

from typing import Any

from phip.core.capability import Capability


def _install(node: Any) -> None:
    from phip.security.service import SecurityService

    svc = SecurityService(node)
    svc.install()


def _routers() -> list[Any]:
    from phip.security.oauth import router

    return [router]


def _cli() -> dict[str, Any]:
    from phip.security.cli import client_app, security_app, user_app

    return {"user": user_app, "client": client_app, "security": security_app}


def _tables() -> None:
    import phip.security.tables  # noqa: F401


def _inner_middleware() -> list[Any]:
    from phip.security.guard import RouteGuard

    return [RouteGuard]


CAPABILITY = Capability(
    name="security",
    summary="Authentication, authorization (roles, relationships, SMART scopes), consent, labels, break-glass, "
            "masking",
    install=_install,
    routers=_routers,
    cli=_cli,
    tables=_tables,
    extras={"inner_middleware": _inner_middleware,
            "public_paths": ("/auth/token", "/.well-known/jwks.json", "/.well-known/smart-configuration")},
)
