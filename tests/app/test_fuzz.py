"""Schemathesis against the app's own OpenAPI schema, on SQLite and PostgreSQL: no 5xx and no schema violations,
admin with and without key.

Driven through Hypothesis directly (schemathesis' pytest plugin does not run under this pytest version). The same
examples every run, so a red run is a regression, not a new draw; ``AMG_FUZZ_EXPLORE=N`` draws N fresh examples per
operation instead, to hunt for new failures (each one found becomes a test of its own, as in tests/app/test_abuse.py)."""
import os

import pytest

schemathesis = pytest.importorskip('schemathesis')
from hypothesis import HealthCheck, given, settings  # noqa: E402

from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from tests.app.conftest import API_KEY, make_client  # noqa: E402
from tests.conftest import database_url_for  # noqa: E402

EXPLORE = int(os.environ.get('AMG_FUZZ_EXPLORE', '0'))
BACKGROUND_WORK = {('POST', '/v1/admin/jobs'), ('POST', '/v1/admin/models/{model_id}/activate')}


@pytest.mark.slow
@pytest.mark.parametrize('db', ['sqlite', 'postgresql'])
def test_api_never_fails_and_follows_its_schema(request, db, tmp_path, tmp_path_factory, service_model):
    url = database_url_for(request, db, tmp_path_factory)  # PostgreSQL: 32-bit ids, strict JSON, string lengths
    with make_client(tmp_path, service_model, max_upload_bytes=200_000, database_url=url) as client:
        schema = schemathesis.openapi.from_asgi('/openapi.json', client.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        checked = []
        for operation in operations:
            if (operation.method.upper(), operation.path) in BACKGROUND_WORK:
                continue  # starts jobs / model switches: covered by tests/app/test_jobs.py
            for headers in ({}, {'X-API-Key': API_KEY}):
                @given(case=operation.as_strategy())
                @settings(max_examples=EXPLORE or 15, derandomize=not EXPLORE, deadline=None,
                          suppress_health_check=list(HealthCheck), database=None)
                def fuzz(case):
                    # every other check runs (no 5xx, documented status codes, content types and bodies); "schema-
                    # valid request rejected" is left out: a schema cannot say "these bytes must decode as an
                    # image", so random schema-valid bytes are rightly refused with a 400
                    case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
                fuzz()
            checked.append(f'{operation.method.upper()} {operation.path}')
        assert 'POST /v1/search' in checked and 'POST /v1/gallery' in checked
        assert client.get('/readyz').status_code == 200  # still serving, index consistent
