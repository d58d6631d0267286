"""Hardening: security headers, CORS off by default and configurable, per-client rate limits,
ID and phone numbers masked in logs, HTTPS with `phip serve --tls-cert/--tls-key`."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def test_security_headers_and_no_cors_by_default(api: Any) -> None:
    r = api.get("/fhir/Patient", expect=200)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    r = api.c.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = api.c.options("/fhir/Patient", headers={"Origin": "https://evil.example",
                                                "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
    assert "cdn.jsdelivr.net" in api.c.get("/docs").headers["content-security-policy"]


def _app(node: Any, extra: str) -> Any:
    from fastapi.testclient import TestClient

    from phip.api.app import create_app
    from phip.privacy import Privacy

    (node.data / "phip.toml").write_text((node.data / "phip.toml").read_text() + extra)
    node.ext["privacy"] = Privacy(node)
    return TestClient(create_app(node))


def test_cors_when_configured(node: Any) -> None:
    with _app(node, '\n[http]\ncors_origins = ["https://console.example.org"]\n') as c:
        r = c.options("/fhir/Patient", headers={"Origin": "https://console.example.org",
                                                "Access-Control-Request-Method": "GET",
                                                "Access-Control-Request-Headers": "Authorization"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://console.example.org"
        r = c.options("/fhir/Patient", headers={"Origin": "https://evil.example",
                                                "Access-Control-Request-Method": "GET"})
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


def test_rate_limit_per_client(node: Any) -> None:
    with _app(node, "\n[http]\nrate_limit = 0.01\nrate_burst = 3\n") as c:
        a = {"Authorization": f"Bearer {node.tokens.issue('clinician', 'dr-a', org='Organization/h')}"}
        b = {"Authorization": f"Bearer {node.tokens.issue('clinician', 'dr-b', org='Organization/h')}"}
        adm = {"Authorization": f"Bearer {node.tokens.issue('admin', 'root')}"}
        codes = [c.get("/fhir/metadata", headers=a).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = c.get("/fhir/metadata", headers=a)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "PHIP-5429"
        assert c.get("/fhir/metadata", headers=b).status_code == 200  # another client has its own bucket
        assert all(c.get("/fhir/metadata", headers=adm).status_code == 200 for _ in range(6))  # exempt role


def test_logs_mask_id_and_phone_numbers(caplog: pytest.LogCaptureFixture) -> None:
    from phip.privacy.hardening import install_log_redaction

    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("phip.test").info("lookup %s by %s", "51010419800102001X", "13800001234")
    assert "51010419800102001X" not in caplog.text and "13800001234" not in caplog.text
    assert "510104********001X" in caplog.text and "138****1234" in caplog.text


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    c, k = folder / "cert.pem", folder / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


@pytest.mark.parametrize("backend", ["sqlite"])
def test_serve_over_tls(node: Any, tmp_path: Path) -> None:
    import httpx

    node.close()
    cert, key = _self_signed(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    phip = str(Path(sys.executable).parent / "phip")
    proc = subprocess.Popen([phip, "serve", "--data", str(node.data),
                             "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)],
                            env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    proc.kill()
                    err = proc.communicate()[1].decode()[-2000:]
                    raise AssertionError(f"phip serve did not start: {err}") from None
                time.sleep(0.3)
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
