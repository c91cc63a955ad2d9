"""The API error for each inference engine failure: the client's mistakes are 4xx, a full queue is 429."""

from __future__ import annotations

import logging
import math

from api.errors import RATE_LIMIT, SERVER_ERROR, APIError, not_found
from diablo_core.errors import AdapterError
from diablo_core.serving.errors import ContextLengthError, EngineBusyError, EngineClosedError

logger = logging.getLogger("api.inference")
# Engine AdapterError codes that are the client's to fix (400); the rest mean a bad artifact (500).
_CLIENT_ADAPTER_CODES = {"adapter_base_mismatch", "adapter_not_served"}


def api_error(error: Exception, model: str, prompt_param: str = "messages") -> Exception:
    """The API error for an engine failure (other exceptions are returned unchanged, answered as 500).

    ``prompt_param`` names the request's prompt field (``messages`` or ``prompt``) for a too-long prompt.
    """
    if isinstance(error, APIError):
        return error
    if isinstance(error, EngineClosedError):
        return APIError(503, "The inference engine is shutting down; retry", SERVER_ERROR, "engine_closed")
    if isinstance(error, ContextLengthError):
        return APIError(400, error.message, code=error.code, param=prompt_param)
    if isinstance(error, EngineBusyError):
        return busy(error)
    if not isinstance(error, AdapterError):
        return error
    return _adapter_error(error, model)


def busy(error: EngineBusyError) -> APIError:
    """429 with the engine's code and a ``Retry-After`` of whole seconds (at least 1)."""
    retry_after = max(1, math.ceil(error.retry_after_s))
    message = f"{error.message}; retry in {retry_after} s"
    return APIError(429, message, RATE_LIMIT, error.code, headers={"Retry-After": str(retry_after)})


def _adapter_error(error: AdapterError, model: str) -> APIError:
    if error.code == "adapter_not_found":
        return not_found("model", model, code="model_not_found", param="model")
    if error.code in _CLIENT_ADAPTER_CODES:
        return APIError(400, f"Model '{model}': {error.message}", code=error.code, param="model")
    logger.error("adapter of model %s is unusable (%s): %s", model, error.code, error.message)
    message = f"The stored adapter of model '{model}' is unusable ({error.code}): {error.message}"
    code = "adapter_corrupted" if error.code == "adapter_checksum_mismatch" else "adapter_invalid"
    return APIError(500, message, SERVER_ERROR, code)
