"""Population registry, institution and staff registries, electronic health code (issue 4).

- 全员人口: birth registration from a birth-certificate document Bundle, death registration,
  address changes and migration between counties, households (Group), population counts by
  region / sex / age band (:mod:`phip.registry.events`, :mod:`phip.registry.population`).
- 基础资源: write-time checks of Organization, Location, Practitioner, PractitionerRole and Device
  carrying the Chinese conventions (GB 32100, GB/T 2260, licence numbers, code tables as data),
  IHE mCSD hierarchy searches (``:below``), resource statistics (:mod:`phip.registry.validate`,
  :mod:`phip.registry.mcsd`, :mod:`phip.registry.resources`).
- 电子健康码: cards, signed expiring QR payloads without personal data, verification, revocation,
  SVG/PNG rendering (:mod:`phip.registry.healthcard`).

See docs/registry.md.  The package import is light; the machinery loads in the functions below.
"""

from __future__ import annotations

from typing import Any

from phip.core.capability import Capability


def _install(node: Any) -> None:
    from phip.registry.service import install

    install(node)


def _routers() -> list[Any]:
    from phip.registry.api import routers

    return routers()


def _cli() -> dict[str, Any]:
    from phip.registry.cli import app

    return {"registry": app}


def _tables() -> None:
    import phip.registry.schema  # noqa: F401


CAPABILITY = Capability(
    name="registry",
    summary="Population registry, institution and staff registries, electronic health code",
    install=_install,
    routers=_routers,
    cli=_cli,
    tables=_tables,
)
