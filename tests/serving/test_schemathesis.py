"""Property-based API testing: schemathesis generates requests from the service's own OpenAPI
schema (valid and invalid ones) and sends them to a real ``basira serve``; no request may end
in a server error (5xx)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from tests.serving.conftest import RunningService, Tenant, free_port, service_env

# STOW-RS bodies have no JSON Schema to generate from: send arbitrary bytes as the body.
schemathesis.openapi.media_type("multipart/related", st.binary(max_size=4096))


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, service_release: Path
) -> Iterator[tuple[RunningService, Tenant]]:
    data_dir = tmp_path_factory.mktemp("schemathesis")
    http_port = free_port()
    service = RunningService(
        f"http://127.0.0.1:{http_port}",
        http_port,
        0,
        service_env(data_dir, service_release, 0, BASIRA_RATE_LIMIT_PER_MINUTE="100000"),
        data_dir,
    )
    service.start()
    try:
        yield service, service.create_tenant("Schemathesis")
    finally:
        service.stop()


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_built_from_the_schema_gets_a_server_error(
    served: tuple[RunningService, Tenant], mode: GenerationMode
) -> None:
    """Every operation, with valid (positive) and schema-violating (negative) requests.

    schemathesis' own pytest plugin does not run under pytest 9, so its strategies are driven
    by hypothesis here directly.
    """
    service, tenant = served
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7

    for operation in operations:
        takes_input = any(
            len(parameters)
            for parameters in (operation.path_parameters, operation.query, operation.body)
        )
        if mode is GenerationMode.NEGATIVE and not takes_input:
            continue  # nothing in the request can violate the schema

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case: Case) -> None:
            case.call_and_validate(
                base_url=service.base_url,
                headers=tenant.headers,
                checks=[not_a_server_error],
                timeout=60,
            )

        no_server_error()
