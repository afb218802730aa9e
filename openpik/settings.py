"""The one source of configuration: environment variables prefixed OPENPIK_."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENPIK_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="host:port of each Redis Sentinel, comma-separated; empty: OPENPIK_REDIS_URL is the Redis "
        "(with Sentinels, that URL gives only the database number and password; openpik/redis_connection.py)",
    )
    redis_master: str = Field(default="mymaster", description="The name the Sentinels monitor the master under")
    redis_wait_replicas: int = Field(
        default=0, ge=0, description="Replicas that must hold a task before its TaskUID is returned (WAIT); 0: off"
    )
    redis_wait_timeout_ms: int = Field(
        default=500, ge=1, le=4000, description="How long a submission waits for those replicas before answering 150"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    catalog: Path = Path(__file__).resolve().parent.parent / "configs" / "catalog.yaml"
    keys_file: Path | None = None
    key_store: Literal["file", "redis"] = Field(default="file", description="Where API keys live: keys_file or Redis")
    require_timestamp: bool = Field(default=False, description="Reject requests without a signed Timestamp")
    timestamp_window_s: int = Field(default=300, ge=1, description="Allowed clock skew of a signed Timestamp")
    results_dir: Path = Path("var/results")
    result_store: Literal["file", "s3"] = Field(default="file", description="file: results_dir; s3: the bucket")
    s3_bucket: str = "openpik-results"
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    result_ttl_s: int = Field(default=24 * 3600, ge=60)
    result_sweep_interval_s: int = Field(default=60, ge=1, description="How often expired results are deleted")
    strict_fields: bool = Field(default=False, description="Unknown request fields are refused (230), not ignored")
    idempotency_window_s: int = Field(
        default=600, ge=0, description="A request_uuid repeated with identical parameters within this is a retry"
    )
    max_body_bytes: int = Field(default=32 * 2**20, ge=1024, description="Request body cap (HTTP 413 above)")
    max_json_depth: int = Field(default=32, ge=4, le=256, description="Deepest JSON nesting accepted")
    max_image_pixels: int = Field(default=4096 * 4096, ge=64 * 64, description="Pixel cap of each client image")
    max_queue_depth: int = Field(default=10000, ge=0, description="Tasks waiting before new ones are shed")
    max_queued_per_key: int = Field(default=200, ge=0, description="Tasks one key may have waiting")
    rate_limit_generate_per_s: float = Field(
        default=0,
        ge=0,
        allow_inf_nan=False,
        description="Generate requests per second per key, on average (180 above); 0 = off",
    )
    rate_limit_generate_burst: int = Field(default=5, ge=1, description="Generate requests one key may send at once")
    rate_limit_query_per_s: float = Field(
        default=0,
        ge=0,
        allow_inf_nan=False,
        description="Query and catalog requests per second per key (180 above); 0 = off",
    )
    rate_limit_query_burst: int = Field(default=20, ge=1, description="Query requests one key may send at once")
    engine: Literal["diffusers", "stub"] = Field(
        default="diffusers", description="stub: instant solid images, for load-testing the stack without a GPU"
    )
    max_task_cost: int = Field(
        default=0, ge=0, description="Cap on Width x Height x Steps x BatchSize per task; 0 = off (as PICPIK)"
    )

    soft_time_limit_s: int = Field(default=600, ge=1, description="A task past this ends with a TimeLimitError")
    hard_time_limit_s: int = Field(default=660, ge=1, description="The worker child is killed past this")
    max_attempts: int = Field(default=3, ge=1, description="Lost workers a task survives before it ends as Error")
    progress_interval_s: float = Field(default=0.25, ge=0, description="Least time between progress writes")
    visibility_timeout_s: int = Field(
        default=900, ge=1, description="Redis redelivers an unacknowledged task after this; keep above the hard limit"
    )
    callback_retry_s: int = Field(
        default=3600, ge=0, description="A webhook is retried until this long after its task ended, then failed"
    )
    callback_timeout_s: float = Field(default=10, gt=0, le=120, description="Each webhook attempt's time limit")
    callback_backoff_s: float = Field(
        default=2, gt=0, description="Wait before a webhook's first retry; doubles per attempt, with jitter"
    )
    callback_backoff_max_s: float = Field(
        default=300, gt=0, description="Longest wait between webhook attempts (and under half the visibility timeout)"
    )

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", description="auto: float16 on CUDA, float32 on CPU"
    )
    micro_batch_pixels: int = Field(
        default=8 * 512 * 512, ge=0, description="Pixels denoised at once; a task's batch runs in chunks (0: whole)"
    )
    vae_tiling_pixels: int = Field(default=1536 * 1536, ge=0, description="Decode larger images tile by tile")
    batch_max: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Tasks one diffusers call may serve together (worker/batching.py); 1: off, one task at a "
        "time in a prefork child as before; above 1: that many task threads in the worker process",
    )
    batch_wait_ms: int = Field(
        default=50, ge=0, le=10000, description="How long the oldest waiting task waits for others to batch with"
    )
    keep_freed_memory: bool = Field(
        default=True, description="glibc malloc reuses freed blocks instead of returning them (worker/allocator.py)"
    )
    compile: bool = Field(default=False, description="torch.compile the UNet and ControlNets (worker/compiled.py)")
    compile_backend: str = Field(default="inductor", description="torch.compile backend")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    compile_lora_rank: int = Field(
        default=64, ge=1, description="Compiled LoRA slot's rank: the most a request's LoRAs may add up to"
    )
    compile_warmup_models: list[int] = Field(
        default=[],
        description="Main model ids compiled and warmed at worker start (empty: the catalog's first of each family)",
    )
    compile_warmup_size: int = Field(default=512, ge=64, multiple_of=8, description="Warm-up image side")
    model_cache_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Bytes of main-model weights a worker keeps loaded, least recently used evicted first "
        "(default: 3/4 of the GPU's memory, or half the RAM on CPU)",
    )
    lora_cache_size: int = Field(default=8, ge=1, description="LoRA adapters kept loaded per main model")
    prompt_weighting: bool = Field(
        default=True,
        description="A1111's (word:1.2) syntax and prompts over 77 tokens, through compel (worker/prompts.py); "
        "off: prompts go to diffusers as plain text, as before",
    )
    worker_metrics_port: int = Field(
        default=9808, ge=0, le=65535, description="Worker's Prometheus port (plus its --gpu index); 0: off"
    )
    numba_cache_dir: Path = Field(
        default=Path("var/numba-cache"),
        description="Where background removal's matting (pymatting, compiled by numba) keeps its compiled code: "
        "the first worker compiles it once (~45 s), later starts read it back (~1 s)",
    )
    affinity_routing: bool = Field(
        default=True,
        description="Model-affinity routing (openpik/affinity.py): a task goes to an idle worker that holds its "
        "model, else to its group's queue; set on gateways and workers alike",
    )
    affinity_depth_limit: int = Field(
        default=1, ge=1, description="Tasks a worker may have running or waiting in its own queue to be sent another"
    )
    affinity_heartbeat_s: float = Field(
        default=0.5, gt=0, le=10, description="How often workers write their heartbeats and gateways read them"
    )
    affinity_heartbeat_ttl_s: float = Field(
        default=3, gt=0, le=60, description="A worker whose heartbeat is older than this is gone: no task is sent to it"
    )

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """OPENPIK_REDIS_SENTINELS=host1:26379,host2:26379 (an empty value: no Sentinels)."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


@lru_cache
def get_settings() -> Settings:
    return Settings()
