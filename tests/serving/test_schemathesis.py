"""Property-based API testing: schemathesis generates requests from the service's own OpenAPI
schema (valid and invalid ones) and sends them to a real ``basira serve`` with every check
schemathesis has, not only "no server error": schema-valid data is accepted, invalid data
refused, every response conforms to its documented status, headers, content type and schema,
authentication is not ignored, and a 405 names every allowed method."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, positive_data_acceptance

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
def test_every_request_built_from_the_schema_passes_every_check(
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
        def passes_every_check(case: Case) -> None:
            assume(not _universal_match_in_disguise(case, mode))
            case.call_and_validate(
                base_url=service.base_url,
                headers=tenant.headers,
                excluded_checks=_excluded(case.operation.method, case.operation.path),
                timeout=60,
            )

        passes_every_check()


#: Operations whose body is DICOM: the schema can say "binary" but not "a CT instance", so
#: schema-valid random bytes are rightly refused (422, 409). What they refuse and why is tested
#: with real files in test_upload_errors.py and test_dicomweb.py; every other check still runs.
DICOM_BODIES = {
    ("POST", "/v1/studies"),
    ("POST", "/dicomweb/studies"),
    ("POST", "/dicomweb/studies/{study_uid}"),
}


def _excluded(method: str, path: str) -> list[CheckFunction]:
    return [positive_data_acceptance] if (method.upper(), path) in DICOM_BODIES else []


def _universal_match_in_disguise(case: Case, mode: GenerationMode) -> bool:
    """A negative QIDO case whose StudyInstanceUID values (``null``, say) go on the wire as an
    empty ``StudyInstanceUID=``: DICOM's universal match, which the server rightly answers as
    valid, so schemathesis would report a schema violation the request no longer carries."""
    values = (case.query or {}).get("StudyInstanceUID")
    if mode is not GenerationMode.NEGATIVE or values is None:
        return False
    values = values if isinstance(values, list) else [values]
    return all(value is None or str(value).strip() == "" for value in values)
