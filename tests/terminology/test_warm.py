"""A server worker loads the code tables before it takes requests (``Node.warm``), so that the
first write with a code to check does not load them while it holds the database's write lock."""

from __future__ import annotations

from typing import Any

import pytest

from phip.terminology import content as C


def test_warm_loads_the_code_tables_before_the_first_write(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    node = loaded
    svc = node.ext["terminology"]
    svc.refresh_seconds = 3600.0  # (no periodic re-check may count as a load in this test)
    calls: list[bool] = []
    refresh = svc.refresh

    def counted(*, force: bool = False) -> None:
        calls.append(force)
        refresh(force=force)

    monkeypatch.setattr(svc, "refresh", counted)
    node.warm()
    assert calls == [False]
    icd = svc.codesystem(C.ICD10_CN)
    assert icd is not None and "J18.9" in icd.concepts  # the WHO ICD-10 tree is in the cache
    calls.clear()
    repo = node.store.repository()
    pid = repo.create("Patient", {"resourceType": "Patient", "gender": "male", "birthDate": "1980-01-01"}).row.id
    repo.create("Condition", {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": C.ICD10_CN, "code": "J18.9"}]}})
    assert calls == []  # the write's code checks found the tables loaded
