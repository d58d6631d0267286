"""The seam through which the repository asks "may the caller do this?" (deny by default).

The store holds an optional :class:`AccessPolicy` (installed by the security capability).
Each :class:`phip.store.repository.Repository` asks it, when made, for the
:class:`AccessScope` of the current caller: ``None`` means full access (the node itself,
the CLI, an administrator), anything else is consulted by every read, search, include,
history, change-feed, export and write the repository performs.  The core only knows
this protocol; the rules live in :mod:`phip.security.access`.

:func:`as_system` marks work the node does on its own behalf inside a request (hooks that
index, match or audit what a caller wrote): it runs with full access, while
``phip.api.context.current_principal`` still says who caused it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

#: set while the node works on its own behalf (hooks): repositories made then have full access
system_access: ContextVar[bool] = ContextVar("system_access", default=False)


@contextmanager
def as_system() -> Iterator[None]:
    token = system_access.set(True)
    try:
        yield
    finally:
        system_access.reset(token)


#: set while the node does work of its own that no caller's write asked for in itself: a transaction's
#: before-commit functions (counters, the checks gathered over the transaction, the Tasks they open).
#: Writes made then are the node's, as writes made by a hook of a caller's write are (not audited as
#: the caller's)
node_work: ContextVar[bool] = ContextVar("node_work", default=False)


@contextmanager
def as_node_work() -> Iterator[None]:
    """The node's own work (:data:`node_work`), with full access (:func:`as_system`)."""
    token, system = node_work.set(True), system_access.set(True)
    try:
        yield
    finally:
        system_access.reset(system)
        node_work.reset(token)


class AccessScope(Protocol):
    """What one caller may see and do.  Every method raises ``FhirError(403)`` naming the rule
    that denied, or returns normally."""

    def where(self, r: Any, types: Sequence[str] | None, action: str) -> list[Any]:
        """SQL conditions on the ``resources`` alias ``r`` restricting a search, include or
        history of ``types`` (None: every type) to what the caller may see (action ``s`` or ``r``)."""

    def check_row(self, conn: Any, row: Any, action: str) -> None:
        """May the caller ``action`` (r: read, u: update, d: delete) this stored row?"""

    def check_write(self, conn: Any, rtype: str, resource: dict[str, Any] | None, method: str,
                    current: Any) -> None:
        """May the caller write ``resource`` (``current``: the stored row it replaces, or None)?"""

    def check_operation(self, name: str, rtype: str | None = None) -> None:
        """Whole-node operations: ``changes``, ``export``, ``validate``, ``history-system``…"""

    def view(self, row: Any) -> Any:
        """The row as the caller will see it (masked where the caller's role has no need)."""

    def unmask(self, rtype: str, resource: dict[str, Any], current: Any) -> dict[str, Any]:
        """A resource written back after a masked read: masked values restored from ``current``."""


class AccessPolicy(Protocol):
    def scope(self) -> AccessScope | None:
        """The current caller's scope (None: full access)."""
