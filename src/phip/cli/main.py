"""The ``phip`` command (Typer + Rich): a node's whole life from the shell.

``phip init``, ``serve``, ``token``, ``import``, ``export`` are a contract that
scripts and tests rely on (see README).  Capabilities add their own sub-commands
(``phip synth``…) by registering here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from phip.node.config import NodeError

app = typer.Typer(
    name="phip",
    help="phip — regional population health information platform (区域全民健康信息平台).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)
DataOpt = typer.Option(..., "--data", help="The node's data folder.")


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _open(data: Path, *, pool_size: int = 8):  # type: ignore[no-untyped-def]
    from phip.node.node import Node

    try:
        return Node.open(data, pool_size=pool_size)
    except NodeError as e:
        _fail(str(e))


@app.command()
def init(
    data: Path = DataOpt,
    db: str | None = typer.Option(None, "--db", help="Database URL (default: a SQLite file inside DATA), "
                                  "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    level: str = typer.Option("county", "--level", help="county | prefecture | province | national"),
    region: str = typer.Option("510000", "--region", help="GB/T 2260 code of the node's region"),
    name: str | None = typer.Option(None, "--name", help="The node's name"),
) -> None:
    """Create a node: configuration, signing key, database."""
    from phip.node.node import init_node

    try:
        node = init_node(data, db=db, level=level, region=region, name=name)
    except NodeError as e:
        _fail(str(e))
        return
    except Exception as e:  # a database that cannot be reached, a folder that cannot be written
        _fail(f"could not create the node: {e}")
        return
    console.print(f"[green]created node[/] {node.config.name} ({node.config.level}, region {node.config.region}) "
                  f"in {data}")
    node.close()


@app.command()
def serve(
    data: Path = DataOpt,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    workers: int = typer.Option(1, "--workers", help="Worker processes"),
    log_level: str = typer.Option("warning", "--log-level"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate (chain): serve HTTPS"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert"),
) -> None:
    """Serve FHIR R4 at /fhir, /healthz and the OpenAPI docs at /docs (HTTPS with --tls-cert/--tls-key)."""
    import os

    import uvicorn

    if (tls_cert is None) != (tls_key is None):
        _fail("--tls-cert and --tls-key go together")
    for p in (tls_cert, tls_key):
        if p is not None and not p.is_file():
            _fail(f"{p} does not exist")
    _open(data).close()  # fail early, with a clear message, on a bad node folder; migrate once
    os.environ["PHIP_DATA"] = str(Path(data).resolve())
    scheme = "https" if tls_cert else "http"
    console.print(f"phip serving [bold]{scheme}://{host}:{port}/fhir[/] (docs: {scheme}://{host}:{port}/docs)")
    if workers > 1:
        # uvicorn's HTTP, phip's listener and supervisor (connections shared evenly: phip.api.serving),
        # in a fresh process: this one has loaded the node (~100 MB) that only the workers need
        import sys

        args = ["--host", host, "--port", str(port), "--workers", str(workers), "--log-level", log_level]
        if tls_cert and tls_key:
            args += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "phip.api.serving", *args])
    uvicorn.run("phip.api.server:app", host=host, port=port, log_level=log_level, access_log=False, factory=False,
                ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None)


@app.command()
def token(
    data: Path = DataOpt,
    role: str = typer.Option(..., "--role", help="admin | clinician | public-health | family-doctor | insurer | "
                             "manager | resident | auditor | node"),
    sub: str = typer.Option("cli", "--sub", help="Who the token is for"),
    org: str | None = typer.Option(None, "--org", help="Organization/ID"),
    region: str | None = typer.Option(None, "--region", help="GB/T 2260 code"),
    person: str | None = typer.Option(None, "--person", help="Person/ID (residents: whose record it is)"),
    ttl: int = typer.Option(3600, "--ttl", help="Lifetime in seconds"),
    practitioner: str | None = typer.Option(None, "--practitioner", help="Practitioner/ID (family doctors)"),
    scope: str | None = typer.Option(None, "--scope", help="SMART scopes, e.g. 'user/*.rs' (default: the role's "
                                     "rights, unrestricted by scopes)"),
) -> None:
    """Print a signed bearer token (JWT) the node accepts.

    Residents need --person Person/ID; clinicians, family doctors and insurers --org Organization/ID;
    public-health staff --region."""
    from phip.node.config import NodeConfig
    from phip.security import keys
    from phip.security.tokens import TokenError, TokenService

    try:
        cfg = NodeConfig.load(data)
        svc = TokenService(keys.load_all(data), issuer=f"urn:phip:node:{cfg.region}:{cfg.name}")
        for label, value, prefix in (("--org", org, "Organization/"), ("--person", person, "Person/"),
                                     ("--practitioner", practitioner, "Practitioner/")):
            if value and not value.startswith(prefix):
                _fail(f"{label} must look like {prefix}ID, not {value!r}")
        if role == "resident" and not person:
            _fail("a resident's token needs --person Person/ID")
        if role in ("clinician", "family-doctor", "insurer") and not org:
            _fail(f"a {role}'s token needs --org Organization/ID")
        if role == "public-health" and not region:
            _fail("a public-health token needs --region (GB/T 2260 code)")
        if scope is not None:
            from phip.security.scopes import ScopeError, compile_scopes

            try:
                compile_scopes(tuple(scope.split()))
            except ScopeError as e:
                _fail(str(e))
        print(svc.issue(role, sub, org=org, region=region, person=person, ttl=ttl, practitioner=practitioner,
                        scope=scope))
    except (NodeError, TokenError) as e:
        _fail(str(e))


@app.command("import")
def import_(
    data: Path = DataOpt,
    paths: list[Path] = typer.Argument(..., help="NDJSON or Bundle JSON files, or folders of them"),
) -> None:
    """Load NDJSON and Bundle files (resumable; reports every rejected line)."""
    from phip.importer.console import import_files
    from phip.importer.loader import collect

    node = _open(data)
    try:
        files = collect(paths)
    except FileNotFoundError as e:
        _fail(str(e))
        return
    rep = import_files(node.store, files, console)
    table = Table(title="import")
    table.add_column("type")
    table.add_column("loaded", justify="right")
    for t, n in sorted(rep.by_type.items()):
        table.add_row(t, str(n))
    console.print(table)
    console.print(f"files {rep.files}; loaded {rep.loaded}; updated {rep.updated}; unchanged {rep.unchanged}; "
                  f"already done {rep.skipped_done}; rejected {len(rep.rejected)}")
    for r in rep.rejected:
        print(f"REJECTED {r.file}:{r.line}: {r.reason}")
    node.close()
    if rep.rejected:
        raise typer.Exit(2)


@app.command()
def export(
    data: Path = DataOpt,
    out: Path = typer.Option(..., "--out", help="Folder for the NDJSON files"),
    type_: str | None = typer.Option(None, "--type", help="Comma-separated resource types"),
    since: str | None = typer.Option(None, "--since", help="Only resources changed since this instant"),
    deidentify: str | None = typer.Option(None, "--deidentify", help="De-identify with PROFILE (built in: "
                                          "research, statistics; or a JSON file): see docs/privacy.md"),
) -> None:
    """Write NDJSON, one file per resource type (de-identified with --deidentify)."""
    from phip.bulk.export import export as run_export
    from phip.bulk.export import parse_since, parse_types
    from phip.fhir.errors import FhirError

    node = _open(data)
    try:
        types = parse_types(type_)
        since_us = parse_since(since)
    except FhirError as e:
        _fail(e.issues[0].diagnostics)
        return
    audit = node.ext.get("audit")
    if audit is not None:  # an export of personal data is on the audit trail
        audit.event("export", query=f"phip export --out {out} --type {type_ or '*'} --since {since or '-'}"
                    + (f" --deidentify {deidentify}" if deidentify else ""), detail="command line")
    if deidentify:
        from phip.privacy.cli import export_deidentified

        try:
            export_deidentified(node, out, deidentify, types, since_us)
        finally:
            node.close()
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}"),
                  console=console) as progress:
        task = progress.add_task("export", total=None)
        counts = run_export(node.store, out, types=types, since_us=since_us,
                            progress=lambda t, n: progress.update(task, description=f"export {t}", completed=n))
    for t, n in counts.items():
        console.print(f"{t}: {n} → {out / (t + '.ndjson')}")
    node.close()


def _register_capabilities() -> None:
    """Sub-commands that capabilities contribute."""
    from phip.synth.cli import synth

    app.command("synth", help="Generate a synthetic Chinese region as FHIR NDJSON, with its ground truth.")(synth)
    from phip import capabilities

    for cap in capabilities.load():
        if cap.cli is not None:
            for name, group in cap.cli().items():
                app.add_typer(group, name=name)


_register_capabilities()


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


@app.command()
def demo(
    data: Path = typer.Option(Path("demo-data"), "--data", help="Folder of the demo node"),
    persons: int = typer.Option(20000, "--persons", help="Residents in the synthetic region"),
    years: int = typer.Option(1, "--years", help="Years of care history to generate"),
    seed: int = typer.Option(1, "--seed"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    no_serve: bool = typer.Option(False, "--no-serve", help="Prepare the node and exit"),
) -> None:
    """Create a demo node with a synthetic region, import it, and serve it."""
    import os

    import uvicorn

    from phip.demo import banner, prepare

    node = prepare(data, persons, seed, console, years=years)
    banner(node, host, port, console)
    node.close()
    if no_serve:
        return
    os.environ["PHIP_DATA"] = str(Path(data).resolve())
    uvicorn.run("phip.api.server:app", host=host, port=port, log_level="warning", access_log=False)
