"""The one source of configuration: environment variables prefixed OPENPIK_."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENPIK_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
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

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", description="auto: float16 on CUDA, float32 on CPU"
    )
    micro_batch_pixels: int = Field(
        default=8 * 512 * 512, ge=0, description="Pixels denoised at once; a task's batch runs in chunks (0: whole)"
    )
    vae_tiling_pixels: int = Field(default=1536 * 1536, ge=0, description="Decode larger images tile by tile")
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
        default=[], description="Main model ids compiled and warmed when a worker starts (empty: the catalog's first)"
    )
    compile_warmup_size: int = Field(default=512, ge=64, multiple_of=8, description="Warm-up image side")
    pipeline_cache_mb: int = Field(default=16000, ge=0, description="Memory budget of loaded main models")
    lora_cache_size: int = Field(default=8, ge=1, description="LoRA adapters kept loaded per main model")
    worker_metrics_port: int = Field(
        default=9808, ge=0, le=65535, description="Worker's Prometheus port (plus its --gpu index); 0: off"
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
