"""HTTP hardening: security headers, CORS (off unless configured), per-client rate limits, and
no personal data in logs.  Settings in ``phip.toml``:

```toml
[http]
cors_origins = []                    # e.g. ["https://console.example.org"]; empty: no CORS headers at all
rate_limit = 100.0                   # requests per second per client (token bucket); 0: no limit
rate_burst = 1000                    # bucket size
rate_exempt_roles = ["admin", "node"]
```

A client is its bearer token's subject and role when it has a valid token, else its network
address.  Buckets live in each worker process (``--workers N`` allows N times the rate).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import tomllib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

API_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# the Swagger UI at /docs loads its script and style from a CDN
DOCS_CSP = (b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
            b"https://fastapi.tiangolo.com; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


@dataclass(slots=True)
class HttpSettings:
    cors_origins: list[str] = field(default_factory=list)
    rate_limit: float = 100.0
    rate_burst: int = 1000
    rate_exempt_roles: list[str] = field(default_factory=lambda: ["admin", "node"])


def load_settings(data: Path) -> HttpSettings:
    try:
        raw: dict[str, Any] = tomllib.loads((Path(data) / "phip.toml").read_text()).get("http", {})
    except (OSError, tomllib.TOMLDecodeError):
        raw = {}
    s = HttpSettings()
    if isinstance(raw.get("cors_origins"), list):
        s.cors_origins = [str(o) for o in raw["cors_origins"]]
    s.rate_limit = float(raw.get("rate_limit", s.rate_limit))
    s.rate_burst = int(raw.get("rate_burst", s.rate_burst))
    if isinstance(raw.get("rate_exempt_roles"), list):
        s.rate_exempt_roles = [str(r) for r in raw["rate_exempt_roles"]]
    return s


class SecurityHeaders:
    """Adds the headers above to every response (HSTS over TLS); ``Cache-Control: no-store`` on
    ``/fhir`` responses that set none (personal data must not sit in shared caches)."""

    def __init__(self, app: ASGIApp, node: Any = None) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        docs = path.startswith(("/docs", "/redoc"))
        tls = scope.get("scheme") == "https"
        fhir = path.startswith("/fhir")

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                have = {k.lower() for k, _v in headers}
                for k, v in API_HEADERS:
                    if k not in have:
                        headers.append((k, DOCS_CSP if docs and k == b"content-security-policy" else v))
                if tls:
                    headers.append(HSTS)
                if fhir and b"cache-control" not in have:
                    headers.append((b"cache-control", b"no-store"))
                msg["headers"] = headers
            await send(msg)

        await self.app(scope, receive, with_headers)


class RateLimit:
    """A token bucket per client; over the limit: 429 with ``Retry-After`` and an OperationOutcome."""

    def __init__(self, app: ASGIApp, node: Any) -> None:
        self.app = app
        self.tokens = node.tokens
        s = node.ext["privacy"].http
        self.rate = s.rate_limit
        self.burst = float(s.rate_burst)
        self.exempt = frozenset(s.rate_exempt_roles)
        self.buckets: OrderedDict[str, list[float]] = OrderedDict()
        self.lock = threading.Lock()

    def client_key(self, scope: Scope) -> str | None:
        auth = b""
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                auth = v
                break
        scheme, _, token = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            try:
                p = self.tokens.verify(token.strip())
            except Exception:
                p = None
            if p is not None:
                return None if p.role in self.exempt else f"{p.role}:{p.sub}"
        client = scope.get("client")
        return f"addr:{client[0] if client else '?'}"

    def take(self, key: str) -> float:
        """0 if the request may go, else the seconds until it may."""
        now = time.monotonic()
        with self.lock:
            b = self.buckets.get(key)
            if b is None:
                b = [self.burst, now]
                self.buckets[key] = b
                if len(self.buckets) > 100_000:
                    self.buckets.popitem(last=False)
            else:
                self.buckets.move_to_end(key)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
            if b[0] >= 1:
                b[0] -= 1
                return 0.0
            return (1 - b[0]) / self.rate

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.rate <= 0 or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        key = self.client_key(scope)
        wait = self.take(key) if key is not None else 0.0
        if wait > 0:
            from phip.api.middleware import send_outcome
            from phip.fhir.errors import Issue

            await send_outcome(send, 429, Issue("error", "throttled",
                                                f"Too many requests from this client (limit {self.rate:g}/s); "
                                                f"retry after {wait:.1f} s", None, "PHIP-5429"),
                               {"Retry-After": str(max(1, round(wait)))})
            return
        await self.app(scope, receive, send)


def cors(node: Any) -> Callable[[ASGIApp], ASGIApp] | None:
    origins = node.ext["privacy"].http.cors_origins
    if not origins:
        return None
    from starlette.middleware.cors import CORSMiddleware

    def make(app: ASGIApp, node: Any = None) -> Any:
        return CORSMiddleware(app, allow_origins=origins, allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                              allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Exist",
                                             "If-None-Match", "Prefer"],
                              expose_headers=["ETag", "Location", "Last-Modified", "Content-Location"],
                              max_age=600)

    return make


# -- no personal data in logs ------------------------------------------------------------------------
_PII = [
    (re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)"), r"\1********\2"),  # GB 11643 ID numbers
    (re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)"), r"\1****\2"),  # mainland mobile numbers
]
_installed = False


def redact(text: str) -> str:
    for rx, rep in _PII:
        text = rx.sub(rep, text)
    return text


def install_log_redaction() -> None:
    """Mask ID numbers and phone numbers in every log record of this process (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    old = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        rec = old(*args, **kwargs)
        if rec.args:
            try:
                rec.msg = redact(str(rec.msg) % rec.args)
                rec.args = None
            except (TypeError, ValueError):
                pass
        elif isinstance(rec.msg, str):
            rec.msg = redact(rec.msg)
        return rec

    logging.setLogRecordFactory(factory)
