"""Property-based tests over the OpenAPI schema: no request, valid or not, gets a 5xx or a response that
breaks the schema.

The app runs in-process on SQLite and the in-memory broker, with authentication off; its lifespan (started by
schemathesis on the first request) creates the data dir. The inference routes serve the tiny test model
(``tests/api/tiny_serving``) with a small ``max_tokens_limit``, so fuzzing them is fast and reaches the engine
whenever a generated body names ``default`` (the served model) or ``tiny``.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.main import create_app
from registry.db import dispose_engines
from registry.settings import Settings
from tests.api.tiny_serving import TINY_MODEL, build_tiny_serving, link_tiny_model

MAX_EXAMPLES = 25
DATA_DIR = Path(tempfile.gettempdir()) / f"diablo-fuzz-{secrets.token_hex(6)}"

# Loaded when the module is collected (schemathesis parametrizes one test per operation); creating the app
# touches nothing on disk.
SETTINGS = Settings(
    data_dir=DATA_DIR,
    broker_url="memory://",
    auth="off",
    sweep_interval_s=0,
    max_upload_bytes=64 * 1024,
    default_model=TINY_MODEL,
    device="cpu",
    max_tokens_limit=8,
)
app = create_app(SETTINGS)
schema = schemathesis.openapi.from_dict(app.openapi())
schema.app = app


@pytest.fixture(scope="module", autouse=True)
def _stop_app() -> Iterator[None]:
    link_tiny_model(SETTINGS, build_tiny_serving(DATA_DIR.with_name(DATA_DIR.name + "-tiny")))
    yield
    shutdown_lifespans()
    dispose_engines()
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    shutil.rmtree(DATA_DIR.with_name(DATA_DIR.name + "-tiny"), ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])


def test_the_fuzzed_inference_routes_reached_the_engine() -> None:
    # Runs after the fuzzing above (file order): some generated bodies got past validation to generation.
    metric = "diablo_inference_latency_seconds_count"
    for route in ("/v1/chat/completions", "/v1/completions"):
        answered = app.state.metrics.registry.get_sample_value(metric, {"route": route, "status": "200"})
        assert answered, f"no fuzzed request to {route} was answered 200"
