"""Property tests of the REST API against its own OpenAPI schema (schemathesis):
generated requests, valid and invalid, to every endpoint; no answer is a server
error, and every answer matches what the schema says. Bounded: a few examples per
endpoint, so CI runs it every time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from pgveil.api.app import create_app
from pgveil.api.settings import ApiSettings

TOKEN = "schema-token"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data_dir: Path = tmp_path_factory.mktemp("api")
    # One attempt per webhook, quick: generated webhook URLs lead nowhere.
    app = create_app(ApiSettings(data_dir=data_dir, token=TOKEN, webhook_attempts=1, webhook_timeout=2, cancel_grace=5))
    with TestClient(app):  # runs the lifespan: the store and the runner the endpoints use
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_endpoint_keeps_its_schema(api_schema: Any) -> None:
    # Hypothesis drives each operation's strategy here rather than through
    # schemathesis' pytest plugin, which does not run on this pytest. Derandomized:
    # CI runs the same examples every time, so a failure is reproducible, not luck.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        def keeps_its_schema(case: Any) -> None:
            # A well-formed request may still be refused (a database that cannot be
            # reached, a dump that does not exist): acceptance is the endpoint tests' to check.
            case.call_and_validate(
                headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=[positive_data_acceptance]
            )

        keeps_its_schema()
