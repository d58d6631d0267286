"""The token endpoint (password with lockout, client secret, JWT assertion), SMART scopes,
external OIDC tokens, and refusals."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.conftest import Api
from tests.security.conftest import World, ids

from phip.core.hooks import Point

TOKEN = "/auth/token"


def _rsa() -> tuple[Any, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": uuid.uuid4().hex[:8], "use": "sig", "alg": "RS256"})
    return key, {"keys": [jwk]}


def _add_user(world: World, name: str, password: str, role: str, **kw: Any) -> None:
    from phip.security.accounts import add_user

    with world.node.store.engine.begin() as conn:
        add_user(conn, name, password, role, **kw)


def _add_client(world: World, cid: str, role: str, **kw: Any) -> str | None:
    from phip.security.accounts import add_client

    with world.node.store.engine.begin() as conn:
        return add_client(conn, cid, role, **kw)


def test_password_login_and_lockout(world: World) -> None:
    events: list[Any] = []
    world.node.store.hooks.register(Point.AUTHENTICATE, events.append)
    _add_user(world, "zhang", "correct horse battery", "clinician", org="Organization/hospA")
    c = world.client
    r = c.post(TOKEN, data={"grant_type": "password", "username": "zhang", "password": "correct horse battery"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA" and header["kid"] == world.node.tokens.keys[0].kid
    Api(c, body["access_token"]).get("/fhir/Patient/pA", expect=200)
    Api(c, body["access_token"]).get("/fhir/Patient/pB", expect=403)
    assert events[-1].outcome == "success" and events[-1].who == "zhang"
    for _ in range(4):
        r = c.post(TOKEN, data={"grant_type": "password", "username": "zhang", "password": "wrong"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = c.post(TOKEN, data={"grant_type": "password", "username": "zhang", "password": "wrong"})
    assert "locked" in r.json()["error_description"]
    r = c.post(TOKEN, data={"grant_type": "password", "username": "zhang", "password": "correct horse battery"})
    assert r.status_code == 400 and "locked" in r.json()["error_description"]
    assert events[-1].outcome == "failure" and events[-1].who == "zhang"
    r = c.post(TOKEN, data={"grant_type": "password", "username": "nobody", "password": "x" * 12})
    assert r.status_code == 400
    r = c.post(TOKEN, data={"grant_type": "implicit"})
    assert r.json()["error"] == "unsupported_grant_type"


def test_client_credentials_with_secret(world: World) -> None:
    secret = _add_client(world, "his-hospA", "clinician", org="Organization/hospA", scope="system/*.cruds")
    assert secret
    c = world.client
    r = c.post(TOKEN, data={"grant_type": "client_credentials", "client_id": "his-hospA", "client_secret": secret})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/*.cruds"
    Api(c, r.json()["access_token"]).get("/fhir/Observation/oA", expect=200)
    r = c.post(TOKEN, data={"grant_type": "client_credentials"}, auth=("his-hospA", secret))
    assert r.status_code == 200
    r = c.post(TOKEN, data={"grant_type": "client_credentials", "client_id": "his-hospA", "client_secret": "nope"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = c.post(TOKEN, data={"grant_type": "client_credentials", "client_id": "his-hospA", "client_secret": secret,
                            "scope": "system/Observation.rs"})
    assert r.json()["scope"] == "system/Observation.rs"


def test_client_credentials_with_signed_assertion(world: World) -> None:
    key, jwks = _rsa()
    _add_client(world, "cdc-system", "public-health", region="510105", jwks=json.dumps(jwks), secret=False,
                scope="system/*.rs")
    c = world.client

    def assertion(k: Any = key, aud: str = "http://testserver/auth/token", jti: str | None = None) -> str:
        now = int(time.time())
        return jwt.encode({"iss": "cdc-system", "sub": "cdc-system", "aud": aud, "exp": now + 120, "iat": now,
                           "jti": jti or uuid.uuid4().hex}, k, algorithm="RS256",
                          headers={"kid": jwks["keys"][0]["kid"]})

    form = {"grant_type": "client_credentials", "scope": "system/Patient.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    a = assertion()
    r = c.post(TOKEN, data={**form, "client_assertion": a})
    assert r.status_code == 200, r.text
    tok = r.json()["access_token"]
    assert "pB" in ids(Api(c, tok).search("Patient?_count=100"))
    r = Api(c, tok).get("/fhir/Observation/oB", expect=403)
    assert r.headers["x-phip-rule"] == "scope"
    # replayed, signed by another key, or for another audience
    assert c.post(TOKEN, data={**form, "client_assertion": a}).status_code == 401
    other, _ = _rsa()
    assert c.post(TOKEN, data={**form, "client_assertion": assertion(other)}).status_code == 401
    assert c.post(TOKEN, data={**form, "client_assertion": assertion(aud="https://elsewhere/token")}).status_code == 401
    # a scope the client may not have
    r = c.post(TOKEN, data={**form, "scope": "system/*.cruds", "client_assertion": assertion()})
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


def test_smart_scopes(world: World) -> None:
    tokens = world.node.tokens

    def api(scope: str, **kw: Any) -> Api:
        return Api(world.client, tokens.issue("clinician", "app", org="Organization/hospA", scope=scope, **kw))

    ro = api("user/*.read")
    ro.get("/fhir/Observation/oA", expect=200)
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/pA"}}
    assert ro.post("/fhir/Observation", body, expect=403).headers["x-phip-rule"] == "scope"
    v2 = api("user/Observation.cru user/Patient.r")
    v2.post("/fhir/Observation", body, expect=201)
    v2.get("/fhir/Patient/pA", expect=200)
    assert v2.get("/fhir/Patient", expect=403).headers["x-phip-rule"] == "scope"  # no 's'
    v2.delete("/fhir/Observation/oA", expect=403)
    # the system search is limited to the types the scopes grant
    only = api("user/Observation.rs")
    got = only.search("?_type=Patient,Observation")
    assert {e["resource"]["resourceType"] for e in got.get("entry", [])} == {"Observation"}
    # patient/ scopes: only the patient in context
    pt = api("patient/*.rs", patient="Patient/pA2")
    assert ids(pt.search("Observation")) == {"oA2"}
    pt.get("/fhir/Observation/oA", expect=403)
    none = api("patient/*.rs")  # no patient in context
    assert ids(none.search("Observation")) == set()


def test_unauthenticated_and_bad_tokens(world: World) -> None:
    c = world.client
    r = c.get("/fhir/Patient/pA")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert c.get("/fhir/Patient/pA", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    expired = world.node.tokens.issue("admin", "x", ttl=-120)
    assert c.get("/fhir/Patient/pA", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    foreign, _ = _rsa()
    forged = jwt.encode({"sub": "x", "role": "admin", "exp": int(time.time()) + 60}, foreign, algorithm="RS256")
    assert c.get("/fhir/Patient/pA", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    for path in ("/fhir/metadata", "/healthz", "/.well-known/jwks.json", "/.well-known/smart-configuration"):
        assert c.get(path).status_code == 200, path
    jwks = c.get("/.well-known/jwks.json").json()
    assert jwks["keys"][0]["kid"] == world.node.tokens.keys[0].kid


def test_key_rotation_keeps_old_tokens_valid(world: World) -> None:
    from phip.node.node import Node
    from phip.security import keys

    old = world.node.tokens.issue("admin", "x")
    os_time = time.time()
    keys.generate(world.node.data)
    import os

    newest = sorted((world.node.data / "keys").glob("signing-*.pem"), key=lambda p: p.stat().st_mtime_ns)[-1]
    os.utime(newest, (os_time + 10, os_time + 10))
    node2 = Node.open(world.node.data, migrate=False)
    try:
        assert node2.tokens.keys[0].kid != world.node.tokens.keys[0].kid
        node2.tokens.verify(old)
        new = node2.tokens.issue("admin", "y")
        assert jwt.get_unverified_header(new)["kid"] == node2.tokens.keys[0].kid
    finally:
        node2.close()


@pytest.fixture
def oidc_node(world: World, tmp_path: Any) -> Any:
    key, jwks = _rsa()
    (tmp_path / "idp.json").write_text(json.dumps(jwks))
    cfg = world.node.data / "phip.toml"
    cfg.write_text(cfg.read_text() + f"""
[security.oidc]
issuer = "https://idp.example.gov.cn/realms/health"
jwks_file = "{tmp_path / 'idp.json'}"
audience = "phip"
[security.oidc.claims]
role = "phip_role"
org = "organization"
""")
    from phip.node.node import Node

    node2 = Node.open(world.node.data, migrate=False)
    yield node2, key, jwks
    node2.close()


def test_external_oidc_tokens(world: World, oidc_node: Any) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient
    from phip.api.app import create_app

    node2, key, jwks = oidc_node
    now = int(time.time())
    claims = {"iss": "https://idp.example.gov.cn/realms/health", "sub": "u-1", "aud": "phip", "exp": now + 300,
              "phip_role": "clinician", "organization": "Organization/hospA"}
    tok = jwt.encode(claims, key, algorithm="RS256", headers={"kid": jwks["keys"][0]["kid"]})
    with TestClient(create_app(node2)) as c:
        api = Api(c, tok)
        api.get("/fhir/Patient/pA", expect=200)
        api.get("/fhir/Patient/pB", expect=403)
        bad = jwt.encode({**claims, "aud": "other"}, key, algorithm="RS256", headers={"kid": jwks["keys"][0]["kid"]})
        Api(c, bad).get("/fhir/Patient/pA", expect=401)
