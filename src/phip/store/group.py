"""Group commit for SQLite: concurrent writes of one process share one database transaction.

SQLite has one writer at a time, and each commit writes every page the transaction changed to
the write-ahead log.  The search value indexes take most of a transaction Bundle's pages, and
bundles written together share many of them (the leaf pages of common codes, statuses, today's
dates): 588 pages a bundle on its own, 430 a bundle for four in one transaction (measured on a
100k-resource node).  So when writes of this process queue behind the one in progress, the first
of them (the leader) opens the transaction and each in turn runs in it inside a savepoint of its
own; the last one commits for all, and none returns before that commit:

- a member that fails is rolled back to its savepoint and gets its own error; the others go on;
- a member whose write succeeded gets the commit's error if the commit fails (nothing of it was
  acknowledged);
- if SQLite rolled the whole transaction back under a member (it does on some errors), every
  member of the group gets an error;
- the change feed's sequence numbers are taken in order inside the one transaction, and become
  visible together at its commit.

A group takes at most :data:`MAX_MEMBERS` writes, and a member hands over only to a write that is
already waiting when it is done, so a lone write commits at once as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import Connection

#: the most writes one group transaction takes
MAX_MEMBERS = 8


class GroupAborted(RuntimeError):
    """The group's transaction was rolled back or its commit failed: this write was not stored."""


class _Group:
    __slots__ = ("alive", "conn", "done", "error", "free", "members", "savepoints", "trans", "waiting")

    def __init__(self) -> None:
        #: writes waiting to join this group, and whether its connection waits for the next of them
        #: (per group: a write that waited for a group now committed must not count for the next one)
        self.waiting = 0
        self.free = False
        self.conn: Connection | None = None
        self.trans: Any = None
        self.members = 1
        self.done = False
        self.error: BaseException | None = None
        self.alive = True
        self.savepoints = 0


class GroupCommit:
    """The group transactions of one store (one process).  ``lock``: the writers' lock (held by the
    group from its leader's start to its commit); ``connect``: a connection to write with (its
    ``begin()`` starts ``BEGIN IMMEDIATE``)."""

    def __init__(self, lock: AbstractContextManager[Any], connect: Callable[[], Connection],
                 max_members: int = MAX_MEMBERS) -> None:
        self._lock = lock
        self._connect = connect
        self._max = max_members
        self._cond = threading.Condition()
        self._group: _Group | None = None
        #: committed groups and the writes they held (for tests and monitoring)
        self.stats = {"groups": 0, "writes": 0, "largest": 0}

    @contextmanager
    def member(self) -> Iterator[Connection]:
        """One write's part of a group transaction: the connection to write with, inside a savepoint
        of its own.  Returns once the group has committed (or raises)."""
        g = self._enter()
        assert g.conn is not None
        conn = g.conn
        # the first member needs no savepoint (its failure rolls back the transaction, which holds
        # nothing else yet): a savepoint makes SQLite keep a copy of every page it changes
        name = f"phip_w{g.savepoints}" if g.savepoints else None
        g.savepoints += 1
        failed: BaseException | None = None
        if name is not None:
            try:
                conn.exec_driver_sql(f"SAVEPOINT {name}")
            except BaseException as e:
                g.alive = False
                failed = e
        if failed is None:
            try:
                yield conn
            except BaseException as e:
                failed = e
                self._rollback_to(g, name)
            else:
                if name is not None:
                    try:
                        conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
                    except BaseException as e:
                        failed = e
                        self._rollback_to(g, name)
        self._leave(g, failed)

    def _rollback_to(self, g: _Group, name: str | None) -> None:
        assert g.conn is not None
        if name is None:  # the first member: the transaction ends with it, rolled back
            g.alive = False
            return
        dbapi = g.conn.connection.dbapi_connection
        try:
            if dbapi is not None and dbapi.in_transaction:
                g.conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
                g.conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
            else:  # SQLite rolled the whole transaction back: the group's earlier writes are gone too
                g.alive = False
        except BaseException:
            g.alive = False

    def _enter(self) -> _Group:
        with self._cond:
            g = self._group
            if g is not None and g.members < self._max and g.alive:
                g.waiting += 1
                try:
                    while self._group is g and not g.free:
                        self._cond.wait()
                finally:
                    g.waiting -= 1
                if self._group is g and g.free and g.members < self._max and g.alive:
                    g.free = False
                    g.members += 1
                    return g
            while self._group is not None:
                self._cond.wait()
            g = self._group = _Group()
        try:  # the leader: the writers' lock, a connection, BEGIN IMMEDIATE
            self._lock.__enter__()
            try:
                g.conn = self._connect()
                g.trans = g.conn.begin()
            except BaseException:
                if g.conn is not None:
                    g.conn.close()
                self._lock.__exit__(None, None, None)
                raise
        except BaseException:
            with self._cond:
                self._group = None
                self._cond.notify_all()
            raise
        return g

    def _leave(self, g: _Group, failed: BaseException | None) -> None:
        with self._cond:
            if g.alive and g.waiting > 0 and g.members < self._max:
                g.free = True  # the next waiting write runs in this transaction
                self._cond.notify_all()
                while not g.done:
                    self._cond.wait()
                if failed is not None:
                    raise failed
                if g.error is not None:
                    raise GroupAborted(f"the write was not stored: {g.error}") from g.error
                return
        # the last member: commit for the group (or end a transaction SQLite already rolled back)
        error: BaseException | None = None
        assert g.conn is not None
        try:
            if g.alive:
                g.trans.commit()
                self.stats["groups"] += 1
                self.stats["writes"] += g.members
                self.stats["largest"] = max(self.stats["largest"], g.members)
            else:
                error = GroupAborted("SQLite rolled the group's transaction back")
                g.trans.rollback()
        except BaseException as e:
            error = error or e
            # SQLite keeps the transaction open when COMMIT fails (e.g. a deferred constraint): end it
            # before the connection goes back to the pool
            with contextlib.suppress(BaseException):
                if g.trans.is_active:
                    g.trans.rollback()
            with contextlib.suppress(BaseException):
                dbapi = g.conn.connection.dbapi_connection
                if dbapi is not None and dbapi.in_transaction:
                    dbapi.rollback()
        finally:
            try:
                g.conn.close()
            finally:
                self._lock.__exit__(None, None, None)
                with self._cond:
                    g.error = error
                    g.done = True
                    self._group = None
                    self._cond.notify_all()
        if failed is not None:
            raise failed
        if error is not None:
            raise GroupAborted(f"the write was not stored: {error}") from error
