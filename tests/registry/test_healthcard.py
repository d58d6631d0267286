"""Electronic health code (电子健康码): issue, verify, render, revoke."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from phip.registry.healthcard import luhn_ok
from tests.registry.builders import id_number, patient, registry_org
from tests.registry.test_population import ensure_person


def _setup(api: Any) -> tuple[str, str]:
    api.put("/fhir/Organization/wjj-a", registry_org("wjj-a", "510104") | {"id": "wjj-a"}, expect=201)
    idn = id_number("510104", "1988-03-04", 117)
    p = api.create(patient("陈晓红", "female", "1988-03-04", "510104", "wjj-a", idn=idn))
    return p["id"], ensure_person(api, p["id"])


def _params(body: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for p in body["parameter"]:
        out[p["name"]] = next(v for k, v in p.items() if k != "name")
    return out


def _institution(api: Any, node: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.tokens.issue('clinician', 'desk-1', org='Organization/h1')}"}


def test_issue_verify_and_no_personal_data(api: Any, node: Any) -> None:
    pid, person = _setup(api)
    r = api.post(f"/fhir/Person/{person}/$health-card", expect=201)
    card = _params(r.json())
    number = card["cardNumber"]["value"]
    assert len(number) == 20 and luhn_ok(number) and number.startswith("510104")
    token = card["qr"]
    # the payload carries no personal data: only issuer, use, card number, times, jti
    claims = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert set(claims) == {"iss", "use", "hc", "iat", "exp", "jti"}
    raw = orjson.dumps(claims).decode()
    patient_doc = api.get(f"/fhir/Patient/{pid}").json()
    for secret in ("陈晓红", patient_doc["identifier"][0]["value"], "1988", pid, person):
        assert secret not in raw and secret not in token
    # one card per resident: a second call re-uses the number with a fresh payload
    again = _params(api.post(f"/fhir/Person/{person}/$health-card", expect=200).json())
    assert again["cardNumber"]["value"] == number and again["qr"] != token
    # an institution scans it
    r = api.post("/health-card/verify", {"token": token}, headers=_institution(api, node), expect=200)
    assert r.json()["resourceType"] == "Person" and r.json()["id"] == person
    assert r.headers["X-Health-Card"] == number
    # a QR payload is not an API token, and an API token is not a QR payload
    assert api.c.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    bearer = node.tokens.issue("admin", "x")
    r = api.post("/health-card/verify", {"token": bearer}, headers=_institution(api, node), expect=422)
    assert "PHIP-4672" in r.text


def test_verify_needs_an_institution(api: Any, node: Any) -> None:
    _pid, person = _setup(api)
    token = _params(api.post(f"/fhir/Person/{person}/$health-card", expect=201).json())["qr"]
    assert api.c.post("/health-card/verify", json={"token": token}).status_code == 401
    resident = node.tokens.issue("resident", "r", person=f"Person/{person}")
    r = api.c.post("/health-card/verify", json={"token": token}, headers={"Authorization": f"Bearer {resident}"})
    assert r.status_code == 403
    # a resident can get their own card, not someone else's
    h = {"Authorization": f"Bearer {resident}"}
    assert api.c.post(f"/fhir/Person/{person}/$health-card", headers=h).status_code == 200
    assert api.c.post("/fhir/Person/other/$health-card", headers=h).status_code == 403


def test_tampered_expired_and_foreign_payloads_fail(api: Any, node: Any, tmp_path: Any) -> None:
    _pid, person = _setup(api)
    h = _institution(api, node)
    token = _params(api.post(f"/fhir/Person/{person}/$health-card?ttl=30", expect=201).json())["qr"]
    head, body, sig = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(body + "=="))
    claims["hc"] = "51010400000000000000"
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).decode().rstrip("=")
    r = api.post("/health-card/verify", {"token": f"{head}.{forged}.{sig}"}, headers=h, expect=422)
    assert "PHIP-4672" in r.text
    api.post("/health-card/verify", {"token": "garbage"}, headers=h, expect=422)
    api.post("/health-card/verify", {}, headers=h, expect=400)
    # expired
    import jwt

    number = _params(api.post(f"/fhir/Person/{person}/$health-card").json())["cardNumber"]

    key = node.tokens.keys[0]
    now = int(time.time())
    old = jwt.encode({"iss": node.tokens.issuer, "use": "health-card", "hc": number["value"], "iat": now - 700,
                      "exp": now - 100}, key.private, algorithm="EdDSA", headers={"kid": key.kid})
    r = api.post("/health-card/verify", {"token": old}, headers=h, expect=422)
    assert "expired" in r.text and "PHIP-4673" in r.text
    # signed by another node's key
    from phip.security import keys
    from phip.security.tokens import TokenService

    other = TokenService([keys.generate(tmp_path / "other")], issuer=node.tokens.issuer)
    from phip.registry.healthcard import HealthCards

    foreign, _ = HealthCards(node.store, other, "510104").sign(number["value"], 600)
    r = api.post("/health-card/verify", {"token": foreign}, headers=h, expect=422)
    assert "not signed by this node" in r.text
    api.post(f"/fhir/Person/{person}/$health-card?ttl=5", expect=400)


def test_revocation(api: Any, node: Any) -> None:
    _pid, person = _setup(api)
    h = _institution(api, node)
    card = _params(api.post(f"/fhir/Person/{person}/$health-card", expect=201).json())
    number, token = card["cardNumber"]["value"], card["qr"]
    # an institution may not revoke; an admin may
    assert api.c.post("/health-card/revoke", json={"cardNumber": number}, headers=h).status_code == 403
    r = api.post("/health-card/revoke", {"cardNumber": number, "reason": "lost"}, expect=200).json()
    assert r["changed"] is True
    r = api.post("/health-card/verify", {"token": token}, headers=h, expect=410)
    msg = r.json()["issue"][0]["diagnostics"]
    assert "revoked" in msg and "lost" in msg and "PHIP-4674" in r.text
    assert api.post("/health-card/revoke", {"cardNumber": number}, expect=200).json()["changed"] is False
    api.post("/health-card/revoke", {"cardNumber": "0000"}, expect=404)
    # a new card is issued after revocation, with a new number
    new = _params(api.post(f"/fhir/Person/{person}/$health-card", expect=201).json())
    assert new["cardNumber"]["value"] != number
    api.post("/health-card/verify", {"token": new["qr"]}, headers=h, expect=200)
    cards = api.get(f"/fhir/Person/{person}/$health-cards", expect=200).json()["cards"]
    assert [c["status"] for c in cards] == ["revoked", "active"]


def test_death_revokes_the_card_and_blocks_issue(api: Any, node: Any) -> None:
    pid, person = _setup(api)
    h = _institution(api, node)
    token = _params(api.post(f"/fhir/Person/{person}/$health-card", expect=201).json())["qr"]
    out = api.post(f"/fhir/Patient/{pid}/$register-death",
                   {"resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": "2025-03-01"}]},
                   expect=200).json()
    assert any(p["name"] == "revokedCard" for p in out["parameter"])
    r = api.post("/health-card/verify", {"token": token}, headers=h, expect=410)
    assert "deceased" in r.text
    api.post(f"/fhir/Person/{person}/$health-card", expect=409)


def test_rendering(api: Any) -> None:
    _pid, person = _setup(api)
    r = api.post(f"/fhir/Person/{person}/$health-card?format=svg", expect=200)
    assert r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content
    r = api.post(f"/fhir/Person/{person}/$health-card?format=png")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    token = _params(api.post(f"/fhir/Person/{person}/$health-card").json())["qr"]
    r = api.get(f"/health-card/qr?token={token}&format=png", expect=200)
    assert r.content[:4] == b"\x89PNG"
    api.get(f"/health-card/qr?token={token}&format=gif", expect=400)
    api.get(f"/health-card/qr?token={'x' * 3000}&format=svg", expect=400)
    api.post(f"/fhir/Person/{person}/$health-card?format=gif", expect=400)
    api.post("/fhir/Person/nobody/$health-card", expect=404)
