"""The node's OAuth2 token endpoint and discovery documents.

``POST /auth/token`` (RFC 6749, form-encoded):

- ``grant_type=client_credentials`` for institutions and systems, authenticated by
  ``client_id`` + ``client_secret`` (form or HTTP Basic) or by a signed JWT assertion
  (``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``,
  ``client_assertion``; RFC 7523, SMART Backend Services);
- ``grant_type=password`` (``username``, ``password``) for console users, with lockout.

Answers ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``: a short-lived
JWT signed with the node's newest key (``kid`` in the header).  Errors follow RFC 6749 §5.2
(``{"error", "error_description"}``, 400, or 401 for a bad client).  Every attempt fires the
``AUTHENTICATE`` hook point (audit records logins and failures).

``GET /.well-known/jwks.json``: the node's public signing keys (other nodes verify its tokens);
``GET /.well-known/smart-configuration``: SMART discovery.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from phip.core.hooks import AuthEvent, Point
from phip.security import accounts, scopes
from phip.security.accounts import AuthError

router = APIRouter(tags=["authentication"])
PUBLIC_PATHS = ("/auth/token", "/.well-known/jwks.json", "/.well-known/smart-configuration")


def _error(status: int, error: str, description: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="phip"'
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _basic(request: Request) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, _, pw = base64.b64decode(value).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return unquote(user), unquote(pw)


class TokenRefused(Exception):
    """A refused token request: the RFC 6749 §5.2 error code, its description and HTTP status."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


async def exchange(node: Any, f: dict[str, str], basic: tuple[str, str] | None, source: str | None,
                   audiences: list[str]) -> dict[str, Any]:
    """The token logic of ``POST /auth/token``, for any front door (the endpoint, the web
    console's login form): authenticate the grant in ``f``, fire the ``AUTHENTICATE`` hook
    point, and return the token answer, or raise :class:`TokenRefused`."""
    svc = node.ext["security"]
    grant = f.get("grant_type")

    def work() -> tuple[accounts.Account, str]:
        failed: AuthError | None = None
        with node.store.write_tx() as tx:  # queues with the node's other writers (SQLite has one)
            try:
                return _authenticate(tx.conn, f, basic, svc.config, audiences)
            except AuthError as e:  # the failure count must be committed, not rolled back
                failed = e
        raise failed

    claimed = f.get("username") or f.get("client_id") or ((basic or ("", ""))[0] or None)
    try:
        acct, method = await run_in_threadpool(work)
        granted = scopes.narrow(f.get("scope"), acct.scope)
    except AuthError as e:
        _fire(node, AuthEvent("failure", grant or "?", claimed, None, None, source, str(e)))
        raise TokenRefused(e.status, e.error, str(e)) from None
    except scopes.ScopeError as e:
        _fire(node, AuthEvent("failure", grant or "?", claimed, None, None, source, str(e)))
        raise TokenRefused(400, "invalid_scope", str(e)) from None
    ttl = svc.config.token_ttl
    tok = node.tokens.issue(acct.role, acct.name, org=acct.org, region=acct.region, person=acct.person,
                            practitioner=acct.practitioner, ttl=ttl, scope=granted,
                            client_id=acct.name if acct.kind == "client" else None)
    _fire(node, AuthEvent("success", method, acct.name, acct.role, acct.org, source))
    return {"access_token": tok, "token_type": "Bearer", "expires_in": ttl, "scope": granted}


@router.post("/auth/token", summary="OAuth2 token endpoint (client credentials, password)",
             openapi_extra={"x-phip-access": "public"})
async def token(request: Request) -> JSONResponse:
    node = request.app.state.node
    svc = node.ext["security"]
    form = await request.form()
    f = {k: str(v) for k, v in form.items()}
    source = request.client.host if request.client else None
    audiences = [str(request.url), str(request.url).split("?")[0], svc.token_url(request), node.tokens.issuer]
    try:
        body = await exchange(node, f, _basic(request), source, audiences)
    except TokenRefused as e:
        return _error(e.status, e.error, e.description)
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _authenticate(conn: Any, f: dict[str, str], basic: tuple[str, str] | None, config: Any,
                  audiences: list[str]) -> tuple[accounts.Account, str]:
    grant = f.get("grant_type")
    if grant == "password":
        if not f.get("username") or not f.get("password"):
            raise AuthError("the password grant needs username and password", "invalid_request")
        return accounts.login(conn, f["username"], f["password"], max_failures=config.lockout_failures,
                              lock_minutes=config.lockout_minutes), "password"
    if grant == "client_credentials":
        if f.get("client_assertion_type") or f.get("client_assertion"):
            if f.get("client_assertion_type") != accounts.ASSERTION_TYPE or not f.get("client_assertion"):
                raise AuthError(f"client_assertion_type must be {accounts.ASSERTION_TYPE}", "invalid_request")
            return accounts.client_assertion(conn, f["client_assertion"], audiences,
                                             f.get("client_id")), "client_assertion"
        cid, secret = basic if basic else (f.get("client_id"), f.get("client_secret"))
        if not cid or not secret:
            raise AuthError("client_credentials needs client_id and client_secret (or an assertion)",
                            "invalid_client", 401)
        return accounts.client_secret(conn, cid, secret), "client_secret"
    raise AuthError(f"grant_type {grant!r} is not supported (client_credentials, password)", "unsupported_grant_type")


def _fire(node: Any, event: AuthEvent) -> None:
    node.store.hooks.fire(Point.AUTHENTICATE, event)


@router.get("/.well-known/jwks.json", summary="The node's public signing keys (JWKS)",
            openapi_extra={"x-phip-access": "public"})
def jwks(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.node.tokens.jwks())


@router.get("/.well-known/smart-configuration", summary="SMART on FHIR discovery",
            openapi_extra={"x-phip-access": "public"})
def smart_configuration(request: Request) -> JSONResponse:
    base = str(request.base_url).rstrip("/")
    return JSONResponse({
        "issuer": request.app.state.node.tokens.issuer,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "token_endpoint": f"{base}/auth/token",
        "grant_types_supported": ["client_credentials", "password"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": accounts.ASSERTION_ALGS,
        "scopes_supported": ["system/*.cruds", "user/*.cruds", "patient/*.rs", "system/*.read", "user/*.read",
                             "patient/*.read", "user/*.write", "system/*.write"],
        "capabilities": ["client-confidential-symmetric", "client-confidential-asymmetric", "permission-v1",
                         "permission-v2", "permission-patient", "permission-user"],
    })
