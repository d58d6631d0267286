"""One catalogue of hook points (after HAPI's ``Pointcut``).

Capabilities that must see every write or read — the master patient index, audit,
consent, data quality — register a function for a named point instead of being
called from routes.  The repository fires the points; the order of registration
is the order of calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Point(StrEnum):
    #: before a resource is stored: ``fn(tx, resource_type, resource: dict, method)`` may
    #: change the resource or raise FhirError; issues it returns are warnings in the response
    BEFORE_WRITE = "before_write"
    #: after a resource is stored in the open transaction: ``fn(tx, event: WriteEvent)``
    AFTER_WRITE = "after_write"
    #: once at the end of a ``phip import`` run, after its last commit:
    #: ``fn(store, loaded: dict[str, int])`` (resource type → count); for hooks registered with
    #: ``on_import=False``, which do their work for imported data here, in a batch
    AFTER_IMPORT = "after_import"
    #: once in a ``phip import`` run, after its last batch commit and before ``AFTER_IMPORT`` and
    #: the rebuild of the search value indexes (when a large load deferred them):
    #: ``fn(store, loaded: dict[str, int])``; for bulk writes that need no search (they are cheaper
    #: before the indexes are built).  Not fired when the run failed; ``AFTER_IMPORT`` must not
    #: rely on it having run
    IMPORT_LOADED = "import_loaded"
    #: after the repository has read resources for a caller: ``fn(interaction, rows: list[Row])``;
    #: interaction is ``read``, ``vread``, ``search-type`` (the matches and includes of one page),
    #: ``history`` or ``operation`` (``$everything``); used by audit
    AFTER_READ = "after_read"
    #: inside each ``phip import`` batch transaction, after its new resources are stored:
    #: ``fn(tx, items: list[ImportedItem])``; each item carries the sender's own
    #: ``meta.lastUpdated`` (when the source says it uploaded it), which the node overwrites
    IMPORT_BATCH = "import_batch"
    #: in the ``phip import`` worker process, for each valid new resource: ``fn(resource) -> Any``;
    #: the result reaches IMPORT_BATCH as ``item.prepared[fn.name]`` when no BEFORE_WRITE hook
    #: changed the resource (else the consumer computes it itself).  ``fn`` must be picklable (it
    #: travels to the worker) and pure: work moved off the importer's writing thread
    IMPORT_PREPARE = "import_prepare"
    #: before the write lock, for a resource about to be written with its id (a transaction Bundle's
    #: entries, references rewritten): ``fn(resource_type, id, resource: dict) -> Any``, registered
    #: with :meth:`Hooks.register_prepare` under a name; the result reaches AFTER_WRITE as
    #: ``event.prepared[name]`` when no BEFORE_WRITE hook changed the resource (else ``prepared`` is
    #: None and the consumer computes it itself, as for any other write).  ``fn`` must not read the
    #: database nor change the resource: pure work moved out of the write transaction
    PREPARE_WRITE = "prepare_write"
    #: after each authentication attempt (``POST /auth/token``, a bearer token refused):
    #: ``fn(event: AuthEvent)``; used by audit (logins and failed authentication)
    AUTHENTICATE = "authenticate"
    #: ``$validate`` of a resource (not stored): ``fn(resource_type, resource, profile: str | None)``
    #: returns more issues, e.g. the checks of a named profile (``?profile=``); used by terminology
    VALIDATE = "validate"


@dataclass(slots=True)
class WriteEvent:
    resource_type: str
    id: str
    version: int
    method: str  # POST | PUT | PATCH | DELETE
    resource: dict[str, Any] | None
    #: PREPARE_WRITE results by name, computed before the transaction for this very resource (None:
    #: not prepared; compute in the hook)
    prepared: dict[str, Any] | None = None


@dataclass(slots=True)
class AuthEvent:
    outcome: str  # success | failure
    method: str  # password | client_secret | client_assertion | bearer
    who: str | None  # username or client id (as claimed, on failure)
    role: str | None
    org: str | None
    source: str | None  # the caller's network address
    reason: str | None = None  # why it failed


@dataclass(slots=True)
class ImportedItem:
    rid: int  # the row id in ``resources``
    resource_type: str
    id: str
    resource: dict[str, Any]  # as stored (the node's meta.versionId/lastUpdated)
    sent: str | None  # the sender's meta.lastUpdated, if it had one
    prepared: dict[str, Any] | None = None  # IMPORT_PREPARE results by name (None: compute here)


class Hooks:
    """Registered functions per point.  ``on_import=False`` leaves a function out of the
    per-resource calls made by ``phip import`` (it catches up at ``AFTER_IMPORT``)."""

    def __init__(self) -> None:
        self._fns: dict[Point, list[tuple[Callable[..., Any], bool]]] = {p: [] for p in Point}
        self._prepare: list[tuple[str, Callable[[str, str, dict[str, Any]], Any]]] = []

    def register(self, point: Point, fn: Callable[..., Any], *, on_import: bool = True, first: bool = False) -> None:
        """``first``: call ``fn`` before the functions registered so far (audit brackets the others)."""
        if first:
            self._fns[point].insert(0, (fn, on_import))
        else:
            self._fns[point].append((fn, on_import))

    def register_prepare(self, name: str, fn: Callable[[str, str, dict[str, Any]], Any]) -> None:
        """A PREPARE_WRITE function; its result is ``event.prepared[name]`` at AFTER_WRITE."""
        self._prepare.append((name, fn))

    def prepare(self, rtype: str, rid: str, resource: dict[str, Any]) -> dict[str, Any] | None:
        """The PREPARE_WRITE results for a resource (None when no function is registered).  A function
        that raises leaves its name out: the hook then computes (and raises) inside the write."""
        return self.prepare_many([(rtype, rid, resource)])[0]

    def prepare_many(self, items: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any] | None]:
        """:meth:`prepare` for several resources (a transaction Bundle's entries): each function runs
        over all of them in turn, rather than all functions for each (the same results; a function's
        code and data stay warm in the processor's caches from one resource to the next)."""
        if not self._prepare:
            return [None] * len(items)
        out: list[dict[str, Any] | None] = [{} for _ in items]
        for name, fn in self._prepare:
            for i, (rtype, rid, resource) in enumerate(items):
                try:
                    out[i][name] = fn(rtype, rid, resource)  # type: ignore[index]
                except Exception:  # reported by the write itself, at its place
                    continue
        return out

    def fire(self, point: Point, *args: Any, importing: bool = False) -> list[Any]:
        return [fn(*args) for fn, on_import in self._fns[point] if on_import or not importing]

    def has(self, point: Point, *, importing: bool = False) -> bool:
        return any(on_import or not importing for _fn, on_import in self._fns[point])
