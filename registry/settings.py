"""Service settings, read from ``DIABLO_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from diablo_core.models.quantization_names import Quantization
from diablo_core.precision.names import INFERENCE_DTYPES, check_precision

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Configuration shared by the API, the workers and the CLI.

    URLs left unset are derived from ``data_dir``, so a bare install keeps everything (database, broker,
    uploaded files, adapters) under one folder and needs no server.
    """

    model_config = SettingsConfigDict(env_prefix="DIABLO_", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str = ""
    broker_url: str = ""
    # None: task results are not stored by Celery; the registry holds every outcome.
    result_backend: str | None = None
    # The Celery queue that jobs are sent to and workers consume (tests use a unique one per run).
    queue_name: str = Field(default="diablo", min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    default_model: str = "default"
    device: str = "auto"
    max_upload_bytes: int = Field(default=512 * MIB, gt=0)
    # Per-file limits: examples are counted at upload, tokens by the worker (it has the tokenizer).
    max_examples_per_file: int = Field(default=100_000, gt=0)
    # Dataset shape, checked line by line at upload and by the worker (bounds parser and tokenizer work).
    # Deepest nesting of arrays and objects in one line; a chat example nests 3 deep.
    max_json_depth: int = Field(default=32, ge=3, le=256)
    # Most messages in one chat example.
    max_turns_per_example: int = Field(default=512, gt=0)
    max_tokens_per_file: int = Field(default=50_000_000, gt=0)
    # Jobs a project may have validating, queued or running at once; one more is answered 429.
    max_concurrent_jobs_per_project: int = Field(default=4, gt=0)
    # Limits that keep one project from costing the service unbounded work or space (issue 10).
    # JSON request bodies (every route but uploads, which max_upload_bytes bounds); larger ones get 413.
    max_request_body_bytes: int = Field(default=1 * MIB, gt=0)
    # The most optimizer steps a job may take (max_steps, or epochs x batches); more is a 400.
    max_steps_limit: int = Field(default=100_000, gt=0)
    # Bytes of uploaded files plus adapters a project may keep; 0 turns the quota off.
    storage_quota_bytes_per_project: int = Field(default=20 * 1024 * MIB, ge=0)
    # Seconds an Idempotency-Key is remembered; an older key is treated as new and purged.
    idempotency_ttl_s: int = Field(default=86_400, gt=0)
    # /metrics needs an API key: "auto" follows auth, "on" always, "off" never (a private scrape network).
    metrics_auth: Literal["auto", "on", "off"] = "auto"
    checkpoint_every: int = Field(default=50, ge=0)
    # Devices (ranks) per training job (worker/rank_group.py); None: all GPUs of a CUDA worker, 1 on CPU.
    devices_per_job: int | None = Field(default=None, ge=1)
    # "on": every /v1 request needs an API key of a project. "off" is for local use only: every request
    # then belongs to the project "default".
    auth: Literal["on", "off"] = "on"
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    # A running job whose heartbeat is older than this may be claimed by another worker.
    heartbeat_timeout_s: float = Field(default=120.0, gt=0)
    # Touched by a worker process every heartbeat interval, busy or idle; the container healthcheck reads
    # its age (``python -m worker.liveness``): a solo-pool worker cannot answer `celery inspect ping` mid-job.
    worker_alive_file: Path = Path("/tmp/diablo-worker-alive")
    # How often the API looks for jobs whose worker died or whose queue message was lost (0: never).
    sweep_interval_s: float = Field(default=30.0, ge=0)
    # API and worker logs: one JSON object per line ("json") or plain lines for people ("text").
    log_format: Literal["json", "text"] = "json"
    # Inference: False makes a control-plane-only API that answers inference routes with 503.
    inference_enabled: bool = True
    # Load the served model (default_model) when the API starts instead of on the first request.
    preload_model: bool = False
    max_tokens_limit: int = Field(default=2048, ge=1)
    # Rate limits of the inference routes, per API key (per project with auth off) and API process; 0: off.
    rate_limit_requests_per_minute: int = Field(default=0, ge=0)
    # Tokens counted per request: its prompt plus its max_tokens budget.
    rate_limit_tokens_per_minute: int = Field(default=0, ge=0)
    inference_max_batch: int = Field(default=8, ge=1)
    # Inference admission (one tenant never starves another); answers beyond a bound are 429s.
    # Requests waiting for a batch row, all projects together.
    inference_max_waiting: int = Field(default=256, ge=1)
    # Requests of one project waiting for a row.
    inference_max_waiting_per_project: int = Field(default=64, ge=1)
    # Batch rows one project may hold at once (0: no cap beyond inference_max_batch).
    inference_max_rows_per_project: int = Field(default=0, ge=0)
    # Prompt tokens prefilled per engine step, so running rows keep decoding during a long prompt.
    inference_prefill_chunk_tokens: int = Field(default=256, ge=1)
    # Serve the base with its linear layers quantized (bitsandbytes NF4 or int8; unset: full precision),
    # the choices of diablo_core.models.quantization_names. Adapters trained on another
    # quantization of the same base are refused unless the mismatch is allowed (docs/quantization.md).
    inference_quantization: Quantization | None = None
    inference_allow_quantization_mismatch: bool = False
    adapter_cache_count: int = Field(default=16, ge=1)
    adapter_cache_bytes: int = Field(default=512 * MIB, gt=0)
    # A fine-tuned model merged into the weights at start: only it is served, with zero overhead.
    merged_adapter: str | None = None
    # Weights of the served model (adapters are applied in the same dtype): "auto" is bf16 where the device
    # computes it natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX), else fp32; or "fp32", "bf16".
    inference_dtype: str = "auto"
    # torch intra-op threads of each API and worker process (0: torch's default, one per core). Processes
    # sharing a host should split its cores: oversubscribed threads slow inference down many times.
    torch_threads: int = Field(default=0, ge=0)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("inference_dtype")
    @classmethod
    def _known_inference_dtype(cls, value: str) -> str:
        return check_precision(value.strip().lower(), "inference_dtype", INFERENCE_DTYPES)

    @model_validator(mode="after")
    def _derive_urls(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'registry.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"heartbeat_timeout_s ({self.heartbeat_timeout_s}) must exceed "
                f"heartbeat_interval_s ({self.heartbeat_interval_s})"
            )
        return self

    @property
    def files_dir(self) -> Path:
        """Where uploaded files are stored."""
        return self.data_dir / "files"

    @property
    def adapters_dir(self) -> Path:
        """Where trained adapters and checkpoints are stored."""
        return self.data_dir / "adapters"

    def as_environment(self, *names: str) -> dict[str, str]:
        """The settings ``names`` as the variables a child process reads them from: ``DIABLO_<NAME>``."""
        prefix = self.model_config["env_prefix"]
        return {f"{prefix}{name.upper()}": str(getattr(self, name)) for name in names}


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()
