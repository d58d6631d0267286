"""``phip user add``, ``phip client add``, ``phip security …`` (key rotation, label catch-up)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
user_app = typer.Typer(help="Console users (password login at POST /auth/token).", no_args_is_help=True)
client_app = typer.Typer(help="OAuth2 clients of institutions and systems (client credentials).",
                         no_args_is_help=True)
security_app = typer.Typer(help="Signing keys and derived security data.", no_args_is_help=True)
DataOpt = typer.Option(..., "--data", help="The node's data folder.")
RoleOpt = typer.Option(..., "--role", help="admin | clinician | public-health | family-doctor | insurer | manager | "
                       "resident | auditor | node")


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


def _open(data: Path):  # type: ignore[no-untyped-def]
    from phip.node.config import NodeError
    from phip.node.node import Node

    try:
        return Node.open(data)
    except NodeError as e:
        _fail(str(e))


@user_app.command("add")
def user_add(
    username: str = typer.Argument(..., help="Login name"),
    data: Path = DataOpt,
    role: str = RoleOpt,
    org: str | None = typer.Option(None, "--org", help="Organization/ID (clinicians, family doctors, insurers)"),
    region: str | None = typer.Option(None, "--region", help="GB/T 2260 code (public-health staff)"),
    person: str | None = typer.Option(None, "--person", help="Person/ID (residents)"),
    practitioner: str | None = typer.Option(None, "--practitioner", help="Practitioner/ID"),
    scope: str | None = typer.Option(None, "--scope", help="SMART scopes the user may get (default: any)"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input"),
) -> None:
    """Add a console user; the password is asked for (or read from stdin), stored as an argon2 hash."""
    from phip.security.accounts import AccountError, add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            _fail("the passwords differ")
    node = _open(data)
    try:
        with node.store.engine.begin() as conn:
            add_user(conn, username, password, role, org=org, region=region, person=person,
                     practitioner=practitioner, scope=scope)
    except AccountError as e:
        _fail(str(e))
    finally:
        node.close()
    console.print(f"[green]added user[/] {username} ({role})")


@client_app.command("add")
def client_add(
    client_id: str = typer.Argument(..., help="Client id"),
    data: Path = DataOpt,
    role: str = RoleOpt,
    org: str | None = typer.Option(None, "--org", help="Organization/ID of the institution"),
    region: str | None = typer.Option(None, "--region", help="GB/T 2260 code"),
    practitioner: str | None = typer.Option(None, "--practitioner", help="Practitioner/ID"),
    scope: str | None = typer.Option(None, "--scope", help="SMART scopes the client may get, e.g. 'system/*.rs'"),
    jwks: Path | None = typer.Option(None, "--jwks", help="The client's public keys (JWKS JSON or a PEM public key) "
                                     "for signed assertions (RFC 7523); then no secret is made"),
    secret: bool = typer.Option(False, "--secret", help="Also make a secret when --jwks is given"),
) -> None:
    """Register a client.  Without --jwks a secret is generated and printed once on stdout."""
    from phip.security.accounts import AccountError, add_client

    keys = jwks.read_text() if jwks else None
    node = _open(data)
    try:
        with node.store.engine.begin() as conn:
            value = add_client(conn, client_id, role, secret=secret or keys is None, jwks=keys, org=org,
                               region=region, practitioner=practitioner, scope=scope)
    except AccountError as e:
        _fail(str(e))
        return
    finally:
        node.close()
    console.print(f"[green]added client[/] {client_id} ({role})")
    if value:
        console.print("client secret (shown once, keep it safe):")
        print(value)


@security_app.command("rotate-key")
def rotate_key(data: Path = DataOpt) -> None:
    """Make a new signing key; new tokens use it, the old keys still verify until removed."""
    from phip.security import keys

    key = keys.generate(data)
    console.print(f"[green]new signing key[/] {key.kid}; restart `phip serve` to sign with it. Old keys stay valid "
                  "for verification until their files are removed from keys/.")


@security_app.command("relabel")
def relabel(data: Path = DataOpt) -> None:
    """Apply the security-label rules to stored resources and rebuild regions and consent rules."""
    node = _open(data)
    svc = node.ext["security"]
    svc.after_import(node.store, {"Patient": 1, "Consent": 1})
    node.close()
    console.print("[green]labels and derived security data are up to date[/]")
