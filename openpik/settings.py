"""The one source of configuration: environment variables prefixed OPENPIK_."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENPIK_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    catalog: Path = Path(__file__).resolve().parent.parent / "configs" / "catalog.yaml"
    keys_file: Path | None = None
    results_dir: Path = Path("var/results")
    public_url: str = "http://127.0.0.1:8000"
    result_ttl_s: int = Field(default=24 * 3600, ge=60)

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    pipeline_cache_mb: int = Field(default=16000, ge=0, description="Memory budget of loaded main models")
    lora_cache_size: int = Field(default=8, ge=1, description="LoRA adapters kept loaded per main model")


@lru_cache
def get_settings() -> Settings:
    return Settings()
