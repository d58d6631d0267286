"""``phip serve --workers N``: the workers share the connections of a few keep-alive clients evenly,
serve them, and stop together."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from phip.api.serving import Balance


def test_a_worker_takes_a_connection_only_while_it_holds_no_more_than_the_others() -> None:
    b = Balance(3)
    b.counts[0], b.counts[1], b.counts[2] = 2, 1, -1  # worker 2 is not serving (starting, gone)
    assert not b.my_turn(0)
    assert b.my_turn(1)
    b.add(1, 1)
    assert b.my_turn(0) and b.my_turn(1)  # a tie: either may take it
    b.add(0, 1)
    assert not b.my_turn(0) and b.my_turn(1)
    assert Balance(1).my_turn(0)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in (d / "cmdline").read_bytes():
                out.append(int(d.name))  # (not multiprocessing's resource tracker)
    return out


def _established(port: int) -> set[int]:
    """Socket inodes of the server's side of established TCP connections on ``port``."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "01":
            out.add(int(f[9]))
    return out


def _holders(workers: list[int], port: int) -> Counter[int]:
    conns = _established(port)
    held: Counter[int] = Counter()
    for w in workers:
        for fd in Path(f"/proc/{w}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in conns:
                held[w] += 1
    return held


def _get(s: socket.socket) -> bytes:
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(4096)
        assert chunk, "the server closed the connection"
        data += chunk
    return data


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the connections from Linux /proc")
@pytest.mark.parametrize("backend", ["sqlite"])
def test_workers_share_the_connections_of_a_few_clients(node: Any, tmp_path: Path) -> None:
    node.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    phip = str(Path(sys.executable).parent / "phip")
    err = tmp_path / "serve.log"
    with err.open("wb") as f:
        proc = subprocess.Popen([phip, "serve", "--data", str(node.data), "--port", str(port), "--workers", "2"],
                                stdout=f, stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        deadline = time.time() + 90
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    assert b" 200 " in _get(c)
                workers = _children(proc.pid)
                if len(workers) == 2:
                    break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError(f"phip serve did not start: {err.read_text()[-2000:]}")
            time.sleep(0.3)

        def share(clients: int) -> list[int]:
            conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(clients)]
            try:
                for c in conns:
                    assert b" 200 " in _get(c)
                return sorted(_holders(workers, port).values())
            finally:
                for c in conns:
                    c.close()
                time.sleep(0.3)  # the workers see the clients go

        # both workers serving (a worker that is still starting takes no connection)
        while share(2) != [1, 1]:
            assert time.time() < deadline, "the second worker never took a connection"
        for clients in (4, 6, 4, 2):
            # a worker held up for more than MAX_DEFER_S (a loaded test machine) lets the other take
            # the connection: one more try then
            got = [share(clients) for _ in range(2)]
            assert [clients // 2] * 2 in got, (clients, got)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        finally:
            for w in [proc.pid, *_children(proc.pid), *workers]:
                with contextlib.suppress(OSError):
                    os.kill(w, signal.SIGKILL)
    assert proc.returncode == 0, err.read_text()[-2000:]
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]
