"""The console's session: a cookie that carries the node's own bearer token, nothing more.

The console has no access model of its own.  :class:`ConsoleSession` runs outside the node's
``Authenticate`` middleware (the order is declared in ``phip.api.app``) and, for ``/console``
paths only:

- puts the token of the session cookie in the ``Authorization`` header, so the request is
  authenticated, guarded (``phip.security.guard``) and filtered (the repository's access scope)
  exactly like an API call with that token;
- turns the API's refusals into what a browser can use: a 401 (no session, an expired or forged
  token) into a redirect to the login page (``HX-Redirect`` for an htmx request), a 403
  OperationOutcome into an HTML page that names the rule.

The cookie (``phip_console``) is ``HttpOnly``, ``SameSite=Strict``, ``Path=/console`` and
``Secure`` over TLS; it expires with the token.  Every POST carries a CSRF token: a random value
kept in a second cookie of the same kind and repeated in the form (double submit), and a request
whose ``Origin`` is another site is refused.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

import orjson

from phip.console import assets

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

PREFIX = "/console"
SESSION_COOKIE = "phip_console"
CSRF_COOKIE = "phip_console_csrf"
CSRF_FIELD = "csrf"
LOGIN = f"{PREFIX}/login"
LOGOUT = f"{PREFIX}/logout"
#: the paths a browser reaches without a session (the login form, logout, the static files)
PUBLIC: frozenset[str] = frozenset({LOGIN, LOGOUT, *(f"{PREFIX}/static/{n}" for n in assets.NAMES)})


def is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def cookies(headers: Any) -> dict[str, str]:
    """The request's cookies (the last value of each name wins)."""
    out: dict[str, str] = {}
    for k, v in headers:
        if k == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(v.decode("latin-1"))
            except Exception:  # a malformed cookie header: ignore it
                continue
            out.update({name: m.value for name, m in jar.items()})
    return out


def header(headers: Any, name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def cookie_header(name: str, value: str, *, max_age: int, secure: bool) -> str:
    """A ``Set-Cookie`` value scoped to the console (``max_age`` 0 deletes it)."""
    parts = [f"{name}={value}", f"Path={PREFIX}", f"Max-Age={max(0, int(max_age))}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(cookie_value: str | None, form_value: str | None) -> bool:
    return bool(cookie_value) and bool(form_value) and hmac.compare_digest(str(cookie_value), str(form_value))


def same_origin(scope: Scope) -> bool:
    """Not sent by another site: ``Sec-Fetch-Site`` (when the browser sends it) is not
    ``cross-site``, and ``Origin`` is absent (older browsers) or the node's own origin."""
    if header(scope.get("headers", ()), b"sec-fetch-site") == "cross-site":
        return False
    origin = header(scope.get("headers", ()), b"origin")
    if origin is None:
        return True
    host = header(scope.get("headers", ()), b"host") or ""
    return origin in (f"{scope.get('scheme', 'http')}://{host}", f"http://{host}", f"https://{host}")


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a console path only (never another site)."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value \
            and "\n" not in value and "\r" not in value and not value.startswith((LOGIN, LOGOUT)):
        return value
    return f"{PREFIX}/"


class ConsoleSession:
    def __init__(self, app: ASGIApp, node: Any = None) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not is_console(path):
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", ()))
        session = cookies(headers).get(SESSION_COOKIE)
        if path in PUBLIC:
            await self.app(scope, receive, send)
            return
        if session and header(headers, b"authorization") is None:
            scope = dict(scope)
            scope["headers"] = [*headers, (b"authorization", b"Bearer " + session.encode("latin-1", "replace"))]
        htmx = header(headers, b"hx-request") == "true"
        html = "text/html" in (header(headers, b"accept") or "")
        if not (htmx or html):  # an API client: the API's own answers
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"
        root = scope.get("root_path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        here = path + (f"?{query}" if query else "")
        if htmx:
            cur = header(headers, b"hx-current-url") or ""
            here = cur[cur.find(PREFIX):] if PREFIX in cur else here
        state: dict[str, Any] = {"mode": None, "status": 0, "body": b""}

        async def adapt(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status = msg["status"]
                if status == 401:
                    login = f"{root}{LOGIN}?next={quote(here, safe='')}" + ("&expired=1" if session else "")
                    clear = cookie_header(SESSION_COOKIE, "", max_age=0, secure=secure).encode()
                    if htmx:
                        msg["headers"] = [*msg.get("headers", []), (b"hx-redirect", login.encode()),
                                          (b"set-cookie", clear)]
                    else:
                        state["mode"] = "drop"
                        await send({"type": "http.response.start", "status": 303,
                                    "headers": [(b"location", login.encode()), (b"set-cookie", clear),
                                                (b"content-length", b"0"), (b"cache-control", b"no-store")]})
                        await send({"type": "http.response.body", "body": b""})
                        return
                elif status == 403 and _is_outcome(msg):
                    state["mode"] = "forbidden"
                    state["rule"] = header(msg.get("headers", []), b"x-phip-rule")
                    return
            elif msg["type"] == "http.response.body" and state["mode"] is not None:
                if state["mode"] == "forbidden":
                    state["body"] += msg.get("body", b"")
                    if not msg.get("more_body"):
                        await _forbidden(send, state["body"], state.get("rule"), htmx,
                                         cookies(headers).get(CSRF_COOKIE))
                return
            await send(msg)

        await self.app(scope, receive, adapt)


def _is_outcome(msg: Message) -> bool:
    ctype = header(msg.get("headers", []), b"content-type") or ""
    return "fhir+json" in ctype or "application/json" in ctype


async def _forbidden(send: Any, body: bytes, rule: str | None, htmx: bool, csrf: str | None) -> None:
    from phip.api.context import current_principal
    from phip.console.views import render

    try:
        issues = orjson.loads(body).get("issue", [])
        message = "; ".join(str(i.get("diagnostics") or "") for i in issues if i.get("diagnostics"))
    except (orjson.JSONDecodeError, AttributeError):
        message = ""
    # still inside the request's authentication: the page can say who is signed in (and offer logout)
    page = render("_forbidden.html" if htmx else "forbidden.html", message=message, rule=rule,
                  principal=current_principal.get(), csrf=csrf or "").encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(page)).encode()), (b"cache-control", b"no-store"),
                            *CSP_HEADERS]})
    await send({"type": "http.response.body", "body": page})


#: the console's pages load scripts and styles from the node only (ECharts sets inline styles)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
CSP_HEADERS = [(b"content-security-policy", CSP.encode()), (b"referrer-policy", b"same-origin")]
