"""Malformed input is answered 4xx with an OperationOutcome, never 5xx, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

JSON = {"Content-Type": "application/fhir+json"}
PATCH = {"Content-Type": "application/json-patch+json"}

CASES: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("POST", "/fhir/Patient", b"", JSON),
    ("POST", "/fhir/Patient", b"null", JSON),
    ("POST", "/fhir/Patient", b"[]", JSON),
    ("POST", "/fhir/Patient", b'"text"', JSON),
    ("POST", "/fhir/Patient", b"{\"resourceType\": \"Patient\",", JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "name": "not-a-list"}', JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "birthDate": 19800101}', JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "active": "yes"}', JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "unknownThing": 1}', JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "id": "bad id!"}', JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "name": [{}]}', JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "name": [{"given": [""]}]}', JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]}', JSON),
    ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "text": {"status": "generated", "div": "<p>x"}}',
     JSON),
    ("POST", "/fhir/Patient", b"\xff\xfe\x00garbage", JSON),
    ("POST", "/fhir/Observation", b'{"resourceType": "Observation", "status": "final"}', JSON),
    ("POST", "/fhir/Observation", b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"},'
     b' "valueQuantity": {"value": "5"}}', JSON),
    ("POST", "/fhir/Nope", b'{"resourceType": "Nope"}', JSON),
    ("PUT", "/fhir/Patient/x", b'{"resourceType": "Patient"}', JSON),
    ("PUT", "/fhir/Patient/x", b'{"resourceType": "Patient", "id": "y"}', JSON),
    ("PUT", "/fhir/Patient/x", b'{"resourceType": "Patient", "id": "x"}', {**JSON, "If-Match": "nonsense"}),
    ("PUT", "/fhir/Patient", b'{"resourceType": "Patient"}', JSON),
    ("PATCH", "/fhir/Patient/x", b"[]", JSON),
    ("PATCH", "/fhir/Patient/x", b"{}", PATCH),
    ("DELETE", "/fhir/Patient", b"", {}),
    ("GET", "/fhir/Patient?birthdate=notadate", None, {}),
    ("GET", "/fhir/Patient?birthdate=ge1980-02-30", None, {}),
    ("GET", "/fhir/Observation?value-quantity=abc", None, {}),
    ("GET", "/fhir/Observation?value-quantity=1|2|3|4", None, {}),
    ("GET", "/fhir/Patient?_count=-1", None, {}),
    ("GET", "/fhir/Patient?_count=abc", None, {}),
    ("GET", "/fhir/Patient?_count=100000", None, {}),
    ("GET", "/fhir/Patient?_cursor=%%%", None, {}),
    ("GET", "/fhir/Patient?_cursor=WyJhIl0", None, {}),  # ["a"]: a cursor of the wrong shape
    ("GET", "/fhir/Patient?_sort=birthdate&_cursor=WzFd", None, {}),  # [1]: too few keys
    ("GET", "/fhir/Patient?_sort=nothing", None, {}),
    ("GET", "/fhir/Patient?_summary=maybe", None, {}),
    ("GET", "/fhir/Patient?_total=lots", None, {}),
    ("GET", "/fhir/Patient?_include=Nope:x", None, {}),
    ("GET", "/fhir/Patient?_include=garbage", None, {}),
    ("GET", "/fhir/Patient?gender:nonsense=male", None, {}),
    ("GET", "/fhir/Patient?active:missing=perhaps", None, {}),
    ("GET", "/fhir/Patient?_has:Observation=x", None, {}),
    ("GET", "/fhir/Patient?general-practitioner.name=x", None, {}),
    ("GET", "/fhir/Observation?code-value-quantity=a", None, {}),
    ("GET", "/fhir/Patient/x/_history/abc", None, {}),
    ("GET", "/fhir/$changes?since=-5", None, {}),
    ("GET", "/fhir/$changes?since=abc", None, {}),
    ("GET", "/fhir?_type=Nope", None, {}),
    ("POST", "/fhir", b'{"resourceType": "Bundle", "type": "transaction", "entry": "x"}', JSON),
    ("POST", "/fhir", b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {}}]}', JSON),
    ("POST", "/fhir", b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": '
     b'{"method": "POST", "url": "Patient"}}]}', JSON),
    ("POST", "/fhir/Patient/$validate", b'{"resourceType": "Observation"}', JSON),
    ("POST", "/fhir/Patient/x/$meta-add", b'{"resourceType": "Parameters"}', JSON),
]


@pytest.mark.parametrize("method,url,body,headers", CASES, ids=[f"{c[0]} {c[1]} {i}" for i, c in enumerate(CASES)])
def test_malformed_is_4xx_outcome(api: Any, method: str, url: str, body: bytes | None,
                                  headers: dict[str, str]) -> None:
    before = api.get("/fhir/$changes?since=0").json().get("entry", [])
    r = api.req(method, url, content=body, headers=headers)
    assert 400 <= r.status_code < 500, f"{method} {url}: {r.status_code} {r.text[:500]}"
    if r.status_code != 404 or r.content:
        oo = r.json()
        assert oo["resourceType"] == "OperationOutcome"
        assert oo["issue"][0]["severity"] in ("error", "fatal")
        assert oo["issue"][0]["diagnostics"]
    after = api.get("/fhir/$changes?since=0").json().get("entry", [])
    assert after == before  # nothing changed
