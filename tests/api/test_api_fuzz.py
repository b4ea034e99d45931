"""Schema-driven fuzzing: Schemathesis generates requests from the served OpenAPI document; none may 500."""

from __future__ import annotations

import schemathesis
from _api_fixtures import LiveAPI
from hypothesis import HealthCheck, given, settings


def test_no_server_errors(live_api: LiveAPI) -> None:
    """For every operation in the served OpenAPI document, generated requests never get a 5xx answer."""
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    checked: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=live_api.url)
            assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text[:300])

        fuzz()
        checked.append(operation.label)
    assert len(checked) == len(operations)
