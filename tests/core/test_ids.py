"""Server-assigned ids are RFC 9562 version 7 UUIDs: valid FHIR ids, unique, in the order made."""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

import pytest

from phip.core import ids
from phip.core.ids import uuid7

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def test_version_variant_and_text_form() -> None:
    text = uuid7()
    u = uuid.UUID(text)
    assert str(u) == text and FHIR_ID.match(text)
    assert u.version == 7
    assert u.variant == uuid.RFC_4122


def test_starts_with_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    ms = uuid.UUID(uuid7()).int >> 80
    after = time.time_ns() // 1_000_000
    assert before <= ms <= after


def test_ids_made_one_after_another_sort_in_that_order_and_never_repeat() -> None:
    made = [uuid7() for _ in range(20_000)]  # many within one millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_a_clock_that_steps_back_does_not_break_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    first = uuid7()
    real = time.time_ns
    monkeypatch.setattr(ids.time, "time_ns", lambda: real() - 5_000_000_000)  # 5 s back
    second = uuid7()
    assert second > first


def test_threads_get_distinct_ids() -> None:
    out: list[list[str]] = [[] for _ in range(4)]

    def make(i: int) -> None:
        out[i].extend(uuid7() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [x for xs in out for x in xs]
    assert len(set(every)) == len(every)
    assert all(xs == sorted(xs) for xs in out)


def test_created_resources_and_bundle_entries_get_version_7_ids(repo: Any) -> None:
    from phip.api import bundles

    made = [repo.create("Organization", {"resourceType": "Organization", "name": f"机构{i}"}).row.id for i in range(3)]
    assert [uuid.UUID(x).version for x in made] == [7, 7, 7]
    assert made == sorted(made)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {"resourceType": "Organization", "name": f"院{i}"},
         "request": {"method": "POST", "url": "Organization"}} for i in range(3)]}
    out = bundles.process(repo, bundle, "http://x/fhir", lambda *_a: {}, raw=False)
    ids_ = [e["response"]["location"].split("/")[1] for e in out["entry"]]
    assert [uuid.UUID(x).version for x in ids_] == [7, 7, 7]
    assert ids_ == sorted(ids_) and ids_[0] > made[-1]
