"""Shared fixtures: every store/API test runs on SQLite and on PostgreSQL.

PostgreSQL is the production backend; it is expected at ``$PHIP_TEST_PG`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``).  Each test session (each
xdist worker) gets its own database, emptied between tests.  Without a server the
PostgreSQL cases are skipped — except under ``CI=true``, where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from phip.capabilities import load_tables
from phip.store import schema as S

load_tables()  # every capability's tables are on S.metadata (emptied between tests, compared with migrations)

# Test nodes start without the shipped code tables (phip init loads ~54 terminology resources, 0.3 s on
# PostgreSQL, for each of hundreds of nodes); the terminology tests load them where they need them.
os.environ.setdefault("PHIP_TERMINOLOGY_ON_INIT", "0")

PG_ADMIN = os.environ.get("PHIP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def _pg_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _pg_available() -> str | None:
    try:
        eng = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as e:  # pragma: no cover - depends on the machine
        return str(e)


@pytest.fixture(scope="session")
def pg_url(worker_id: str) -> Iterator[str]:
    err = _pg_available()
    if err is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but is not reachable: {err}")
        pytest.skip(f"PostgreSQL not reachable: {err}")
    with _pg_database(f"phip_test_{worker_id}") as url:
        yield url


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    inp = getattr(request.config, "workerinput", None)
    return str(inp["workerid"]) if inp else "main"


_migrated: set[str] = set()


def _empty(url: str) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as c:
        names = ", ".join(t.name for t in S.metadata.sorted_tables)
        c.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))
    eng.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with no schema at all (for migration tests), on each backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
        return
    request.getfixturevalue("pg_url")  # (skips, or fails under CI=true, without PostgreSQL)
    with _pg_database("phip_empty") as url:
        yield url


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/phip.db"
    url: str = request.getfixturevalue("pg_url")
    if url in _migrated:
        _empty(url)
    else:
        _migrated.add(url)
        from phip.store.db import make_engine, migrate

        eng, _ = make_engine(url)
        migrate(eng)
        _empty(url)
        eng.dispose()
    return url


@pytest.fixture
def node(db_url: str, tmp_path: Path) -> Iterator[Any]:
    from phip.node.node import init_node

    n = init_node(tmp_path / "node", db=db_url, region="510104", name="test")
    yield n
    n.close()


@pytest.fixture
def store(node: Any) -> Any:
    return node.store


@pytest.fixture
def repo(store: Any) -> Any:
    return store.repository()


class Api:
    """A TestClient with the admin token set, and helpers that assert status codes."""

    def __init__(self, client: Any, token: str) -> None:
        self.c = client
        self.h = {"Authorization": f"Bearer {token}"}

    def req(self, method: str, url: str, *, json: Any = None, headers: dict[str, str] | None = None,
            content: bytes | None = None, expect: int | None = None) -> Any:
        h = dict(self.h)
        h.update(headers or {})
        r = self.c.request(method, url, json=json, headers=h, content=content)
        if expect is not None:
            assert r.status_code == expect, f"{method} {url} -> {r.status_code}: {r.text[:2000]}"
        return r

    def get(self, url: str, **kw: Any) -> Any:
        return self.req("GET", url, **kw)

    def post(self, url: str, json: Any = None, **kw: Any) -> Any:
        return self.req("POST", url, json=json, **kw)

    def put(self, url: str, json: Any = None, **kw: Any) -> Any:
        return self.req("PUT", url, json=json, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.req("DELETE", url, **kw)

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = self.post(f"/fhir/{resource['resourceType']}", resource, expect=201)
        return r.json()  # type: ignore[no-any-return]

    def search(self, query: str, expect: int = 200) -> dict[str, Any]:
        return self.get(f"/fhir/{query}", expect=expect).json()  # type: ignore[no-any-return]

    def ids(self, query: str) -> list[str]:
        b = self.search(query)
        return [e["resource"]["id"] for e in b.get("entry", []) if e.get("search", {}).get("mode") == "match"]


@pytest.fixture
def api(node: Any) -> Iterator[Api]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient

    from phip.api.app import create_app

    with TestClient(create_app(node)) as client:
        yield Api(client, node.tokens.issue("admin", "test-admin"))
