"""``phip user add``, ``phip client add``, ``phip token`` for residents and clinicians, key rotation."""

from __future__ import annotations

from pathlib import Path

import jwt
from typer.testing import CliRunner

from phip.cli.main import app

runner = CliRunner()


def _init(tmp_path: Path) -> Path:
    data = tmp_path / "node"
    r = runner.invoke(app, ["init", "--data", str(data), "--region", "510104"])
    assert r.exit_code == 0, r.output
    return data


def test_token_user_client_commands(tmp_path: Path) -> None:
    data = _init(tmp_path)
    r = runner.invoke(app, ["token", "--data", str(data), "--role", "resident", "--person", "Person/p1"])
    assert r.exit_code == 0, r.output
    claims = jwt.decode(r.stdout.strip(), options={"verify_signature": False})
    assert claims["role"] == "resident" and claims["person"] == "Person/p1"
    r = runner.invoke(app, ["token", "--data", str(data), "--role", "resident"])
    assert r.exit_code != 0 and "--person" in r.output
    r = runner.invoke(app, ["token", "--data", str(data), "--role", "clinician", "--org", "Organization/h1",
                            "--scope", "user/*.rs"])
    assert r.exit_code == 0, r.output
    assert jwt.decode(r.stdout.strip(), options={"verify_signature": False})["scope"] == "user/*.rs"
    r = runner.invoke(app, ["token", "--data", str(data), "--role", "clinician"])
    assert r.exit_code != 0 and "--org" in r.output
    r = runner.invoke(app, ["token", "--data", str(data), "--role", "clinician", "--org", "Organization/h1",
                            "--scope", "user/Observation.bogus"])
    assert r.exit_code != 0

    r = runner.invoke(app, ["user", "add", "li", "--data", str(data), "--role", "clinician", "--org",
                            "Organization/h1", "--password-stdin"], input="a long enough password\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["user", "add", "li", "--data", str(data), "--role", "clinician", "--org",
                            "Organization/h1", "--password-stdin"], input="a long enough password\n")
    assert r.exit_code != 0 and "already exists" in r.output
    r = runner.invoke(app, ["user", "add", "wang", "--data", str(data), "--role", "clinician", "--password-stdin"],
                      input="a long enough password\n")
    assert r.exit_code != 0 and "--org" in r.output
    r = runner.invoke(app, ["user", "add", "short", "--data", str(data), "--role", "admin", "--password-stdin"],
                      input="short\n")
    assert r.exit_code != 0

    r = runner.invoke(app, ["client", "add", "his-1", "--data", str(data), "--role", "clinician", "--org",
                            "Organization/h1", "--scope", "system/*.cruds"])
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip()
    assert len(secret) >= 40
    r = runner.invoke(app, ["client", "add", "bad", "--data", str(data), "--role", "node", "--jwks",
                            str(tmp_path / "missing.json")])
    assert r.exit_code != 0
    (tmp_path / "bad.json").write_text('{"keys": [{"kty": "nope"}]}')
    r = runner.invoke(app, ["client", "add", "bad", "--data", str(data), "--role", "node", "--jwks",
                            str(tmp_path / "bad.json")])
    assert r.exit_code != 0 and "JWKS" in r.output

    before = len(list((data / "keys").glob("signing-*.pem")))
    r = runner.invoke(app, ["security", "rotate-key", "--data", str(data)])
    assert r.exit_code == 0, r.output
    assert len(list((data / "keys").glob("signing-*.pem"))) == before + 1
