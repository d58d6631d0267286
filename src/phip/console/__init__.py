"""The node's web console (``/console``): login, an overview, the data-quality scorecard.

Jinja2 pages with htmx and Apache ECharts (fetched once from the npm registry, see
:mod:`phip.console.assets`).  Not a capability: every node serves it, and it has no access model
of its own — a session is the node's bearer token in a cookie (:mod:`phip.console.session`),
and each request is authenticated, guarded and filtered like an API call.  See docs/console.md.

``phip.api.app.create_app`` mounts :data:`router` and puts :class:`ConsoleSession` outside the
node's ``Authenticate`` middleware.
"""

from __future__ import annotations

from phip.console.session import PUBLIC, ConsoleSession
from phip.console.views import router

__all__ = ["PUBLIC", "ConsoleSession", "router"]
