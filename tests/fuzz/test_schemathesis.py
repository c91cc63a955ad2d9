"""Property-based tests over the OpenAPI schema: no request, valid or not, gets a 5xx or a response that
breaks the schema.

The app runs in-process on SQLite and the in-memory broker, with authentication off; its lifespan (started by
schemathesis on the first request) creates the data dir. Inference operations are left out: they would load
the default model, which is neither what these tests are about nor fast.
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

INFERENCE_PATHS = r"^/v1/(chat/)?completions$"
MAX_EXAMPLES = 25
DATA_DIR = Path(tempfile.gettempdir()) / f"diablo-fuzz-{secrets.token_hex(6)}"

# Loaded when the module is collected (schemathesis parametrizes one test per operation); creating the app
# touches nothing on disk.
SETTINGS = Settings(
    data_dir=DATA_DIR, broker_url="memory://", auth="off", sweep_interval_s=0, max_upload_bytes=64 * 1024
)
app = create_app(SETTINGS)
schema = schemathesis.openapi.from_dict(app.openapi()).exclude(path_regex=INFERENCE_PATHS)
schema.app = app


@pytest.fixture(scope="module", autouse=True)
def _stop_app() -> Iterator[None]:
    yield
    shutdown_lifespans()
    dispose_engines()
    shutil.rmtree(DATA_DIR, ignore_errors=True)


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
