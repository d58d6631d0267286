"""``phip serve --workers N``: N processes on one listening socket, sharing its connections evenly.

With one socket shared by several asyncio processes, every process is woken by a new connection and
the first to run accepts every connection that is waiting.  A few clients that keep their
connections open (a hospital's interface engine, a benchmark) then often all land on one process,
which works alone on one core while the others idle: measured with 2 workers and 4 clients, 0 of 8
tries gave 2 and 2 connections, 3 of 8 gave 4 and 0.

Here each worker counts its open connections in a slot of shared memory, and takes a waiting
connection only while it holds no more than every other serving worker; a worker with more looks
again after :data:`RECHECK_S`, and takes it anyway after :data:`MAX_DEFER_S` (a worker busy with a
long synchronous request cannot keep a client waiting longer than that).  The HTTP side is
uvicorn's own; this module only replaces its listener and its process supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import signal
import socket
import time
from typing import Any

import uvicorn

log = logging.getLogger("uvicorn.error")

RECHECK_S = 0.002  #: a worker with more connections looks again at a waiting one after this
MAX_DEFER_S = 0.05  #: ... and takes it after this, whoever else could
NOT_SERVING = -1  #: a slot's value while its worker starts, restarts or is gone


class Balance:
    """One slot of open connections per worker, in memory shared by the workers' processes."""

    def __init__(self, workers: int, ctx: Any = None) -> None:
        ctx = ctx or multiprocessing.get_context("spawn")
        self.counts: Any = ctx.RawArray("q", workers)
        for i in range(workers):
            self.counts[i] = NOT_SERVING

    def my_turn(self, me: int) -> bool:
        """Whether worker ``me`` holds no more connections than any other serving worker."""
        counts = self.counts
        mine = counts[me]
        return all(c < 0 or c >= mine for i, c in enumerate(counts) if i != me)

    def add(self, me: int, n: int) -> None:
        self.counts[me] += n  # only worker ``me`` writes its slot, from its event loop's thread


class _Acceptor:
    """Accepts connections on a listening socket for one worker, when :class:`Balance` gives it
    its turn, and hands them to uvicorn's HTTP protocol (stands in for an ``asyncio.Server``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Any, ssl: Any,
                 balance: Balance, me: int) -> None:
        self.loop, self.sock, self.factory, self.ssl = loop, sock, factory, ssl
        self.balance, self.me = balance, me
        self.fd = sock.fileno()
        self.deferred_since: float | None = None
        self.closed = False
        self.tasks: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        balance.counts[me] = 0
        loop.add_reader(self.fd, self._ready)

    def _ready(self) -> None:
        if not self.balance.my_turn(self.me):
            now = time.monotonic()
            if self.deferred_since is None:
                self.deferred_since = now
            if now - self.deferred_since < MAX_DEFER_S:
                self.loop.remove_reader(self.fd)
                self.loop.call_later(RECHECK_S, self._look_again)
                return
        self.deferred_since = None
        try:
            conn, _addr = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it
        except OSError as e:  # out of file descriptors, …: wait, as asyncio's own server does
            log.error("accepting a connection failed: %s", e)
            self.loop.remove_reader(self.fd)
            self.loop.call_later(1.0, self._look_again)
            return
        conn.setblocking(False)
        self.balance.add(self.me, 1)
        task = self.loop.create_task(self._connect(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn, ssl=self.ssl)
        except Exception as e:  # a failed TLS handshake: the protocol never saw the connection
            self.balance.add(self.me, -1)
            conn.close()
            log.debug("connection not set up: %s", e)

    def _look_again(self) -> None:
        if self.closed:
            return
        if not select.select([self.fd], [], [], 0)[0]:
            self.deferred_since = None  # another worker took what was waiting
        self.loop.add_reader(self.fd, self._ready)

    # -- what uvicorn's shutdown calls on its servers ------------------------------------------------
    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            self.balance.counts[self.me] = NOT_SERVING

    async def wait_closed(self) -> None:
        for t in list(self.tasks):
            await asyncio.gather(t, return_exceptions=True)


def _counted(protocol_class: Any, balance: Balance, me: int) -> Any:
    """uvicorn's HTTP protocol class, telling ``balance`` when a connection ends."""

    def connection_lost(self: Any, exc: Exception | None) -> None:
        balance.add(me, -1)
        protocol_class.connection_lost(self, exc)

    return type(f"Counted{protocol_class.__name__}", (protocol_class,), {"connection_lost": connection_lost})


class BalancedServer(uvicorn.Server):
    """uvicorn's server, listening through an :class:`_Acceptor` instead of ``loop.create_server``."""

    def __init__(self, config: uvicorn.Config, balance: Balance, me: int) -> None:
        super().__init__(config)
        self.balance, self.me = balance, me

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if not sockets:
            await super().startup(sockets)
            return
        await super().startup([])  # the application's start-up and uvicorn's state, no listener yet
        if self.should_exit:
            return
        config = self.config
        proto = _counted(config.http_protocol_class, self.balance, self.me)
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            return proto(config=config, server_state=self.server_state, app_state=self.lifespan.state)

        acceptors: Any = [_Acceptor(loop, s, factory, config.ssl, self.balance, self.me) for s in sockets]
        self.servers = acceptors  # (uvicorn's shutdown calls close() and wait_closed() on them)


def _worker(config: uvicorn.Config, sock: socket.socket, balance: Balance, me: int) -> None:
    config.configure_logging()
    BalancedServer(config, balance, me).run(sockets=[sock])


def run(config: uvicorn.Config, workers: int) -> None:
    """Serve ``config`` with ``workers`` processes until SIGINT or SIGTERM; a worker that dies is
    started again."""
    ctx = multiprocessing.get_context("spawn")
    sock = config.bind_socket()
    sock.listen(config.backlog)  # (asyncio's create_server would; the acceptors do not)
    balance = Balance(workers, ctx)
    stop = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def start(i: int) -> Any:
        balance.counts[i] = NOT_SERVING
        p = ctx.Process(target=_worker, args=(config, sock, balance, i), name=f"phip-worker-{i}")
        p.start()
        log.info("started worker process [%d]", p.pid)
        return p

    procs = [start(i) for i in range(workers)]
    try:
        while not stop:
            for i, p in enumerate(procs):
                if not p.is_alive() and not stop:
                    log.warning("worker process [%s] ended (exit code %s): starting another", p.pid, p.exitcode)
                    procs[i] = start(i)
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + (config.timeout_graceful_shutdown or 30) + 5
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        sock.close()
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> None:
    """``python -m phip.api.serving``: what ``phip serve --workers N`` runs in its own process once it
    has checked the node (``$PHIP_DATA``), so that the supervisor holds none of the node's memory."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m phip.api.serving")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    a = ap.parse_args(argv)
    run(uvicorn.Config("phip.api.server:app", host=a.host, port=a.port, workers=a.workers, log_level=a.log_level,
                       access_log=False, ssl_certfile=a.tls_cert, ssl_keyfile=a.tls_key), a.workers)


__all__ = ["MAX_DEFER_S", "RECHECK_S", "Balance", "BalancedServer", "main", "run"]

if __name__ == "__main__":
    main()
