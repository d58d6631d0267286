"""Master patient index (issue 4): one master ``Person`` per resident, Fellegi–Sunter matching
with versioned JSON rules, review queue, ``$match``, IHE PIXm, ``$merge``/``$unmerge``, Splink
training and batch rebuild.  See docs/empi.md.
"""

from __future__ import annotations

from typing import Any

from phip.core.capability import Capability


def _install(node: Any) -> None:
    from phip.empi.service import install

    install(node)


def _routers() -> list[Any]:
    from phip.empi.api import router

    return [router]


def _cli() -> dict[str, Any]:
    from phip.empi.cli import app

    return {"empi": app}


def _tables() -> None:
    import phip.empi.tables  # noqa: F401


CAPABILITY = Capability(
    name="empi",
    summary="Master patient index: one Person per resident, matching, review, $match, PIXm, merge",
    install=_install,
    routers=_routers,
    cli=_cli,
    tables=_tables,
)
