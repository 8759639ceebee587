"""schemathesis against the OpenAPI schema drf-spectacular generates: no 500 anywhere in the API.

In process, against the WSGI application, as an admin with an API token (every operation is
allowed, so the requests reach the views). A few examples per operation keep it bounded; each
request runs in a transaction rolled back afterwards, so writes never pile up.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings

from apps.core.tokens import create_token
from tests.hardening.world import build_world

pytestmark = pytest.mark.django_db
EXAMPLES_PER_OPERATION = 2
# Probes that take no input and wait up to a second for a worker's ping on every call; the
# access matrix requests them (tests/hardening/test_access_matrix.py).
NO_INPUT_PROBES = {"/healthz", "/api/workers/"}


def test_no_api_operation_answers_a_server_error(personas, settings):
    settings.KLONG_MAX_UPLOAD_BYTES = 64 * 1024
    build_world("fuzz", personas["admin"])
    _token, key = create_token(personas["admin"], "fuzz")
    raw = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = get_wsgi_application()
    headers = {"Authorization": f"Token {key}"}
    errors: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50  # the whole API, not a stub

    # As Django's test client does: a finished request must not close the test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        for operation in operations:
            if operation.path not in NO_INPUT_PROBES:
                _fuzz(operation, headers, errors)()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    assert errors == {}, "\n".join(f"{k}: {v}" for k, v in errors.items())


def _fuzz(operation, headers: dict[str, str], errors: dict[str, str]):
    label = f"{operation.method.upper()} {operation.path}"

    # An operation without parameters or body has one request to try.
    examples = EXAMPLES_PER_OPERATION if any(True for _ in operation.iter_parameters()) or operation.get_request_payload_content_types() else 1

    @given(case=operation.as_strategy())
    @hypothesis_settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def call(case) -> None:
        with transaction.atomic():
            response = case.call(headers=headers)
            transaction.set_rollback(True)
        if response.status_code >= 500:
            errors.setdefault(label, f"{response.status_code} for {case.as_curl_command()[:400]}")

    return call
