"""Concurrent writers: no lost update, and a change feed that never skips a commit."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from phip.fhir.errors import FhirError


def _obs(i: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": f"c{i}"},
            "valueInteger": i}


def test_if_match_conflicts_never_lose_updates(repo: Any) -> None:
    repo.update("Observation", "o1", {**_obs(0), "id": "o1"})
    wins: list[int] = []
    conflicts: list[int] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        for _ in range(15):
            while True:
                cur = repo.read("Observation", "o1")
                doc = cur.resource()
                doc["valueInteger"] = doc["valueInteger"] + 1
                try:
                    repo.update("Observation", "o1", doc, if_match=f'W/"{cur.version}"')
                    with lock:
                        wins.append(k)
                    break
                except FhirError as e:
                    assert e.status in (409, 412)
                    with lock:
                        conflicts.append(k)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = repo.read("Observation", "o1")
    assert final.resource()["valueInteger"] == 60  # every increment counted once
    assert final.version == 61


def test_change_feed_complete_under_concurrent_writers(store: Any) -> None:
    n_writers, per_writer = 4, 40
    seen: list[int] = []
    kinds: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        repo = store.repository()
        try:
            for i in range(per_writer):
                if i % 5 == 0:
                    with repo.transaction():  # multi-resource transactions too
                        repo.create("Observation", _obs(k * 1000 + i))
                        repo.create("Observation", _obs(k * 1000 + i + 500))
                else:
                    repo.create("Observation", _obs(k * 1000 + i))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        repo = store.repository()
        since = 0
        while True:
            done = stop.is_set()
            rows, nxt = repo.changes(since, 7)
            for seq, row in rows:
                seen.append(seq)
                kinds.append(row.type)
            since = nxt
            if done and not rows:
                return

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_writers)]
    rd = threading.Thread(target=reader)
    rd.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    rd.join(timeout=60)
    assert not errors
    expected = n_writers * (per_writer + per_writer // 5)
    # the writers' Observations, plus what capabilities write in the same transactions (data-quality Tasks)
    assert kinds.count("Observation") == expected
    assert seen == sorted(seen)  # in order, each once
    assert len(set(seen)) == len(seen)
    # every committed sequence number was delivered: read everything again in one go
    all_rows, _ = store.repository().changes(0, 10_000)
    assert [s for s, _ in all_rows] == seen


@pytest.mark.parametrize("n", [30])
def test_concurrent_plain_updates_each_make_a_version(repo: Any, n: int) -> None:
    repo.update("Observation", "o2", {**_obs(0), "id": "o2"})

    def writer(k: int) -> None:
        r = repo.store.repository()
        for i in range(n // 3):
            r.update("Observation", "o2", {**_obs(k * 100 + i + 1), "id": "o2"})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows, _ = repo.history("Observation", "o2", count=100)
    assert sorted(r.version for r in rows) == list(range(1, n + 2))
