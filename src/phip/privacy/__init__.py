"""Protection of stored data and privacy-preserving use (issue 5): encryption at rest with blind
indexes, de-identified export, small-cell-suppressed aggregate statistics.  See docs/privacy.md.

(Role-based masking is the security capability's.)
"""

from __future__ import annotations

from typing import Any

from phip.core.capability import Capability


class Privacy:
    """``node.ext["privacy"]``: settings and the codec (None when encryption at rest is off)."""

    def __init__(self, node: Any) -> None:
        from phip.privacy import hardening, settings

        self.node = node
        self.settings = settings.load(node.data)
        self.http = hardening.load_settings(node.data)
        self.codec: Any = None
        if self.settings.encrypt_at_rest:
            self.codec = make_codec(node.data, self.settings.sealed_types)

    def reload_keys(self) -> None:
        """After ``phip keys rotate`` made a new data key: seal with it from now on."""
        if self.codec is not None:
            self.codec = make_codec(self.node.data, self.settings.sealed_types)
            attach(self.node.store, self.codec)


def attach(store: Any, codec: Any) -> None:
    """Seal on write and open on read in ``store`` (None: store and read plaintext again); the codec
    also goes on the engine's dialect, so any select of ``resources.content`` comes back opened."""
    store.codec = codec
    store.engine.dialect.phip_codec = codec


def make_codec(data: Any, types: list[str]) -> Any:
    from phip.privacy import keystore
    from phip.privacy.codec import Codec

    dkeys = keystore.load(data, "data") or [keystore.generate(data, "data")]
    return Codec(dkeys, keystore.current(data, "blind"), types)


def _install(node: Any) -> None:
    svc = Privacy(node)
    node.ext["privacy"] = svc
    if svc.codec is not None:
        attach(node.store, svc.codec)


def _on_init(node: Any) -> None:
    from phip.privacy import keystore, settings

    settings.write_defaults(node.data, encrypt=True)
    keystore.current(node.data, "data")
    keystore.current(node.data, "blind")
    _install(node)  # the node made by `phip init` seals from its first write


def _routers() -> list[Any]:
    from phip.privacy.stats import router

    return [router]


def _middleware() -> list[Any]:
    """Outermost last: CORS (answers pre-flights before authentication), rate limit, headers."""
    from phip.privacy import hardening

    hardening.install_log_redaction()
    return [hardening.SecurityHeaders, hardening.RateLimit, _Cors]


class _Cors:
    """Starlette's CORS middleware with this node's origins; nothing at all when none are set."""

    def __init__(self, app: Any, node: Any) -> None:
        from phip.privacy import hardening

        make = hardening.cors(node)
        self.app = make(app) if make is not None else app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _cli() -> dict[str, Any]:
    from phip.privacy.cli import keys_app

    return {"keys": keys_app}


CAPABILITY = Capability(
    name="privacy",
    summary="Encryption at rest with blind indexes, de-identified export, suppressed aggregate statistics",
    install=_install,
    on_init=_on_init,
    routers=_routers,
    cli=_cli,
    extras={"middleware": _middleware},
)
