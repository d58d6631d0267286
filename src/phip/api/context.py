"""Per-request context in ``contextvars`` (never process globals): who is calling."""

from __future__ import annotations

from contextvars import ContextVar

from phip.security.tokens import Principal

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
