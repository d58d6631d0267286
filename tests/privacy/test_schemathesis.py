"""Property-based run of every operation in the app's OpenAPI description (schemathesis): whatever
it sends, the node never answers with a server error (5xx).  A short smoke run is in the normal
suite; ``-m slow`` runs more examples per operation."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error


def _fuzz(node: Any, examples: int) -> list[str]:
    from phip.api.app import create_app

    app = create_app(node)
    headers = {"Authorization": f"Bearer {node.tokens.issue('admin', 'fuzz')}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) > 20
    for op in ops:

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        @given(case=op.as_strategy())
        def check(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            check()
        except Exception as e:  # collect them all: one report naming every failing operation
            failures.append(f"{op.method.upper()} {op.path}: {str(e)[:800]}")
    return failures


@pytest.mark.parametrize("backend", ["sqlite"])
def test_no_server_errors_smoke(node: Any) -> None:
    failures = _fuzz(node, 3)
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_server_errors(node: Any) -> None:
    failures = _fuzz(node, 50)
    assert not failures, "\n\n".join(failures)
