"""schemathesis against the OpenAPI schema drf-spectacular generates: no 500 anywhere in the API.

In process, against the WSGI application, as an admin with an API token (every operation is
allowed, so the requests reach the views); each request runs in a transaction rolled back
afterwards, so writes never pile up. Hypothesis runs derandomized: every CI run sends the same
requests, so a red run is never luck.

Two passes per operation: input that fits the schema, then, where an operation takes an id in
its path or a body, input that does not (a word where an id goes, null where an object goes):
the kind that found the 500s of the security review. For a deeper run (nightly), set
``KLONG_FUZZ_DEPTH`` (multiplies both counts) and ``KLONG_FUZZ_SEED`` (other examples than CI's);
see docs/security.md.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from schemathesis.generation.modes import GenerationMode

from apps.core.tokens import create_token
from tests.hardening.world import build_world

pytestmark = pytest.mark.django_db
DEPTH = int(os.environ.get("KLONG_FUZZ_DEPTH", "1"))
SEED = os.environ.get("KLONG_FUZZ_SEED")
POSITIVE_EXAMPLES = 2 * DEPTH
# Input that does not fit, where an id goes in the path: 2 was the fewest that reached the
# judge-runs 500s of the review on the code before the fix (a word as the id), 3 keeps a margin.
NEGATIVE_PATH_EXAMPLES = 3 * DEPTH
# A body alone: one wrong-typed body (null, a list, a number) each, cheap and broad.
NEGATIVE_BODY_EXAMPLES = 1 * DEPTH
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
            if operation.path in NO_INPUT_PROBES:
                continue
            spec = raw["paths"][operation.path][operation.method.lower()]
            takes_input = bool(spec.get("parameters")) or "requestBody" in spec
            # An operation without parameters or body has one request to try.
            _fuzz(operation, headers, errors, GenerationMode.POSITIVE, POSITIVE_EXAMPLES if takes_input else 1)()
            if examples := _negative_examples(spec):
                _fuzz(operation, headers, errors, GenerationMode.NEGATIVE, examples)()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    assert errors == {}, "\n".join(f"{k}: {v}" for k, v in errors.items())


def _negative_examples(spec: dict) -> int:
    """How many misfitting inputs to send: none where nothing can misfit (free text in the path)."""
    path_types = [p.get("schema", {}).get("type") for p in spec.get("parameters", []) if p["in"] == "path"]
    if any(kind != "string" for kind in path_types):
        return NEGATIVE_PATH_EXAMPLES
    return NEGATIVE_BODY_EXAMPLES if "requestBody" in spec else 0


def _fuzz(operation, headers: dict[str, str], errors: dict[str, str], mode: GenerationMode, examples: int):
    label = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(max_examples=examples, deadline=None, database=None, derandomize=SEED is None,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def call(case) -> None:
        with transaction.atomic():
            response = case.call(headers=headers)
            transaction.set_rollback(True)
        if response.status_code >= 500:
            errors.setdefault(label, f"{response.status_code} ({mode} input) for {case.as_curl_command()[:400]}")

    return seed(int(SEED))(call) if SEED is not None else call
